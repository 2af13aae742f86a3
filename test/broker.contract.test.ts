import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Server, ServerWebSocket } from "bun";
import type { Broker } from "../src/broker/broker.ts";
import { MemoryBroker } from "../src/broker/memory-broker.ts";

/**
 * The Broker contract (src/broker/broker.ts), run against every implementation.
 * Only the in-process broker exists so far; the Redis one joins this list when it lands.
 */
const implementations: [string, () => Broker][] = [["MemoryBroker", () => new MemoryBroker()]];

for (const [name, make] of implementations) {
  describe(`${name} keeps the Broker contract`, () => {
    let broker: Broker;
    let server: Server<unknown>;
    const sockets = new Map<string, ServerWebSocket<{ name: string }>>();

    beforeAll(() => {
      broker = make();
      server = Bun.serve<{ name: string }>({
        port: 0,
        hostname: "127.0.0.1",
        fetch(req, srv) {
          const name = new URL(req.url).searchParams.get("name")!;
          return srv.upgrade(req, { data: { name } }) ? undefined : new Response("no", { status: 400 });
        },
        websocket: {
          open: (ws) => void sockets.set(ws.data.name, ws),
          message() {},
        },
      }) as Server<unknown>;
      broker.attach(server);
    });
    afterAll(async () => {
      await broker.close();
      server.stop(true);
    });

    async function client(name: string) {
      const received: string[] = [];
      const ws = new WebSocket(`ws://127.0.0.1:${server.port}/?name=${name}`);
      ws.onmessage = (e) => received.push(String(e.data));
      await new Promise((r) => (ws.onopen = r));
      while (!sockets.has(name)) await Bun.sleep(1);
      return { ws, received, socket: sockets.get(name)! as ServerWebSocket<unknown> };
    }

    test("a divert sends the diverted socket's frames of that topic to the sink, in order; undivert resumes delivery", async () => {
      for (const topic of ["t1/dept:held", "t1/user:held"]) {
        const held = await client(`held-${topic}`);
        const other = await client(`other-${topic}`);
        broker.subscribe(other.socket, topic);
        const sunk: string[] = [];
        broker.divert(held.socket, topic, (f) => sunk.push(f));
        expect(broker.publish(topic, "1")).toBe(2);
        expect(broker.publish(topic, "2", other.socket)).toBe(1);
        broker.undivert(held.socket, topic);
        broker.undivert(held.socket, topic);
        expect(sunk).toEqual(["1", "2"]);
        expect(broker.publish(topic, "3")).toBe(2);
        while (held.received.length < 1 || other.received.length < 2) await Bun.sleep(2);
        // Diverted frames are the sink's to send: the socket itself got only what came after undivert.
        expect(held.received).toEqual(["3"]);
        expect(other.received).toEqual(["1", "3"]);
        expect(broker.channelCount()).toBe(1);
        broker.socketClosed(held.socket, [topic]);
        broker.socketClosed(other.socket, [topic]);
        held.ws.close();
        other.ws.close();
      }
    });

    test("delivers a topic's frames to each subscriber in publish order, and to nobody else", async () => {
      const a = await client("a");
      const b = await client("b");
      const other = await client("other");
      broker.subscribe(a.socket, "t1/room:1");
      broker.subscribe(b.socket, "t1/room:1");
      broker.subscribe(other.socket, "t2/room:1");
      for (let i = 1; i <= 50; i++) expect(broker.publish("t1/room:1", String(i))).toBe(2);
      while (a.received.length < 50 || b.received.length < 50) await Bun.sleep(2);
      const expected = Array.from({ length: 50 }, (_, i) => String(i + 1));
      expect(a.received).toEqual(expected);
      expect(b.received).toEqual(expected);
      expect(other.received).toEqual([]);
      expect(broker.channelCount()).toBe(2);
      for (const c of [a, b, other]) c.ws.close();
    });

    test("a user's own topic delivers, excludes a sender and releases like any other", async () => {
      const a = await client("ua");
      const b = await client("ub");
      broker.subscribe(a.socket, "t1/user:u1");
      broker.subscribe(b.socket, "t1/user:u1");
      expect(broker.publish("t1/user:u1", "x")).toBe(2);
      expect(broker.publish("t1/user:u1", "y", a.socket)).toBe(1);
      expect(broker.publish("t2/user:u1", "other tenant")).toBe(0);
      while (a.received.length < 1 || b.received.length < 2) await Bun.sleep(2);
      expect(a.received).toEqual(["x"]);
      expect(b.received).toEqual(["x", "y"]);
      broker.unsubscribe(b.socket, "t1/user:u1");
      expect(broker.publish("t1/user:u1", "z")).toBe(1);
      broker.socketClosed(a.socket, ["t1/user:u1"]);
      expect(broker.publish("t1/user:u1", "gone")).toBe(0);
      a.ws.close();
      b.ws.close();
    });

    test("publishing to a topic without subscribers returns 0", () => {
      expect(broker.publish("t1/room:nobody", "x")).toBe(0);
    });

    test("unsubscribe stops delivery; closing releases the socket's topics", async () => {
      const c = await client("c");
      broker.subscribe(c.socket, "t1/room:2");
      broker.subscribe(c.socket, "t1/room:3");
      const before = broker.channelCount();
      broker.unsubscribe(c.socket, "t1/room:2");
      expect(broker.publish("t1/room:2", "gone")).toBe(0);
      expect(broker.channelCount()).toBe(before - 1);
      broker.socketClosed(c.socket, ["t1/room:3"]);
      expect(broker.channelCount()).toBe(before - 2);
      c.ws.close();
    });
  });
}
