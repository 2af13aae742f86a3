import { describe, expect, test } from "bun:test";
import type { Broker, PublicationSink } from "../src/broker/broker.ts";
import { MemoryBroker } from "../src/broker/memory-broker.ts";
import { Namespaces, parseNamespaces } from "../src/namespaces.ts";
import { parseChannel } from "../src/channel.ts";
import { ChannelHistory } from "../src/history/channel-history.ts";
import { MemoryHistory } from "../src/history/memory-history.ts";
import { Metrics } from "../src/metrics.ts";
import { Publisher } from "../src/publisher.ts";

/**
 * The Broker contract (src/broker/broker.ts), what a publishing node sees, run against every
 * implementation. Only the in-process broker exists so far; the Redis one joins this list when it
 * lands, with the cluster half of the contract (two brokers: a node gets only the topics it
 * subscribed to, through deliverFromPeer, one node's publications in order, never its own echo,
 * and a gap detected from offsets), which one node cannot show.
 */
const implementations: [string, () => Broker][] = [["MemoryBroker", () => new MemoryBroker()]];

/** A node's hub as a broker sees it: records what it was handed and answers a count. */
class RecordingSink implements PublicationSink {
  readonly own: [string, string, string | undefined][] = [];
  readonly fromPeers: [string, string, string | undefined][] = [];
  constructor(private readonly reached: (topic: string) => number = () => 1) {}
  deliver(topic: string, frame: string, exceptClient?: string): number {
    this.own.push([topic, frame, exceptClient]);
    return this.reached(topic);
  }
  deliverFromPeer(topic: string, frame: string, exceptClient?: string): void {
    this.fromPeers.push([topic, frame, exceptClient]);
  }
}

for (const [name, make] of implementations) {
  describe(`${name} keeps the Broker contract`, () => {
    test("hands this node's publication to its hub before publish returns, and returns what the hub reached", () => {
      const broker = make();
      const sink = new RecordingSink((topic) => (topic === "t1/room:1" ? 3 : 0));
      broker.attach(sink);
      broker.subscribe("t1/room:1");
      expect(broker.publish("t1/room:1", "a")).toBe(3);
      expect(sink.own).toEqual([["t1/room:1", "a", undefined]]);
      // A topic nobody serves: no throw, 0.
      expect(broker.publish("t1/room:nobody", "b")).toBe(0);
      expect(sink.own).toHaveLength(2);
      expect(sink.fromPeers).toEqual([]);
    });

    test("keeps each topic's publications in publish order, interleaved with other topics", () => {
      const broker = make();
      const sink = new RecordingSink();
      broker.attach(sink);
      for (const topic of ["t1/room:1", "t1/room:2"]) broker.subscribe(topic);
      for (let i = 1; i <= 100; i++) {
        broker.publish("t1/room:1", `a${i}`);
        broker.publish("t1/room:2", `b${i}`);
      }
      const of = (topic: string) => sink.own.filter(([t]) => t === topic).map(([, frame]) => frame);
      expect(of("t1/room:1")).toEqual(Array.from({ length: 100 }, (_, i) => `a${i + 1}`));
      expect(of("t1/room:2")).toEqual(Array.from({ length: 100 }, (_, i) => `b${i + 1}`));
    });

    test("carries the excepted client id to the hub unchanged", () => {
      const broker = make();
      const sink = new RecordingSink();
      broker.attach(sink);
      broker.publish("t1/room:1", "typing", "client-42");
      expect(sink.own).toEqual([["t1/room:1", "typing", "client-42"]]);
    });

    test("is ready once attached to a hub, and no longer once closed; a closed broker publishes nothing", async () => {
      const broker = make();
      expect(broker.isReady()).toBe(false);
      const sink = new RecordingSink();
      broker.attach(sink);
      expect(broker.isReady()).toBe(true);
      broker.subscribe("t1/room:1");
      broker.unsubscribe("t1/room:1");
      broker.unsubscribe("t1/room:never");
      await broker.close();
      expect(broker.isReady()).toBe(false);
      expect(broker.publish("t1/room:1", "late")).toBe(0);
      expect(sink.own).toEqual([]);
    });

    test("fans a publication out in the same step as the history sequences it, so the hub sees offsets in order", async () => {
      const broker = make();
      const seen: number[] = [];
      const hub: PublicationSink = {
        deliver: (_topic, frame) => (seen.push((JSON.parse(frame) as { offset: number }).offset), 1),
        deliverFromPeer: () => undefined,
      };
      broker.attach(hub);
      const namespaces = new Namespaces(parseNamespaces({}));
      const metrics = new Metrics(10);
      const publisher = new Publisher(new ChannelHistory(new MemoryHistory(), {} as never, namespaces), broker, metrics);
      const channel = parseChannel("t1", "dept:d1", namespaces);
      // Started together, not awaited one by one: offset order still holds on the hub.
      const positions = await Promise.all(Array.from({ length: 20 }, (_, i) => publisher.publish(channel, "e", i)));
      expect(positions.map((p) => p.offset)).toEqual(seen);
      expect(seen).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
      // A memory history sequences synchronously: the hub has the publication before publish settles.
      void publisher.publish(channel, "e", "now");
      expect(seen.at(-1)).toBe(21);
      expect(metrics.tenant("t1")).toMatchObject({ publications: 21, deliveries: 21 });
      await broker.close();
    });
  });
}
