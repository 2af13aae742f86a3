import { afterAll, beforeAll, describe, expect } from "bun:test";
import { RedisBroker } from "../src/broker/redis-broker.ts";
import type { PublicationSink } from "../src/broker/broker.ts";
import { RedisHistory } from "../src/history/redis-history.ts";
import type { Position } from "../src/history/history.ts";
import { RedisKeys } from "../src/redis/keys.ts";
import type { Redis } from "../src/redis/redis-client.ts";
import { openConnection, redisTests, startRedis, type RedisServer } from "./support/redis.ts";

// RedisHistory and RedisBroker of two nodes over a real redis-server, as src/app.ts wires them:
// the append script itself publishes a publication to the other nodes, once, in the broker's
// envelope; a raw subscriber on the topic's pub/sub channel counts what went through Redis.

const { test, available } = redisTests();
const TOPIC = "acme/dept:x";
const KEEP = { size: 10, ttlMs: 60_000 };

describe.if(available)("the Redis history's append script carries a publication to the other nodes", () => {
  let server: RedisServer;
  const connections: Redis[] = [];
  let n = 0;

  beforeAll(async () => {
    server = await startRedis();
  });
  afterAll(async () => {
    for (const c of connections) c.disconnect();
    await server?.stop();
  });

  const connect = (subscriber = false) => openConnection(server.url, connections, 1000, subscriber);

  /** A node's broker and history on `keys`, with a hub recording what reached it; serving TOPIC. */
  async function node(keys: RedisKeys, nodeId: string) {
    const broker = new RedisBroker(await connect(), await connect(true), keys, {
      nodeId,
      reorderWindowMs: 60,
      maxWaiting: 100,
      maxWaitingBytes: 1 << 20,
      positionCheckMs: 60_000,
      subscribeTimeoutMs: 1000,
    });
    const delivered: string[] = [];
    const hub: PublicationSink = {
      deliver: (_topic, frame) => (delivered.push(frame), 1),
      deliverFromPeer: (_topic, frame) => void delivered.push(frame),
    };
    broker.attach(hub);
    const history = new RedisHistory(await connect(), keys, broker, { maxTopicsPerTenant: 100, metaTtlMs: 60_000, idempotencyTtlMs: 60_000, peers: broker });
    broker.recoverWith(
      async () => null,
      (topic) => history.shared(topic),
      () => undefined,
    );
    broker.subscribe(TOPIC);
    await history.position(TOPIC);
    /** An append as the Publisher makes it: fanned out through the broker in `deliver`. */
    const append = (data: string, key?: string) =>
      history.append(
        TOPIC,
        (p: Position) => `{"type":"pub","channel":"dept:x","event":"e","data":"${data}","offset":${p.offset},"epoch":"${p.epoch}","ts":1}`,
        KEEP,
        (p, frame, sent) => void broker.publish(TOPIC, frame, undefined, p, sent),
        key === undefined ? undefined : { tenant: "acme", key },
      );
    return { broker, delivered, append };
  }

  /** Two nodes on one Redis, and a count of the messages on TOPIC's pub/sub channel. */
  async function cluster() {
    const keys = new RedisKeys(`h${++n}`);
    const [a, b] = [await node(keys, "node-a"), await node(keys, "node-b")];
    const raw = await connect(true);
    const messages: string[] = [];
    raw.on("message", (_channel: string, message: string) => void messages.push(message));
    await raw.subscribe(keys.topicChannel(TOPIC));
    return { a, b, messages, settle: () => Bun.sleep(50) };
  }

  const offsets = (frames: string[]) => frames.map((f) => (JSON.parse(f) as { offset: number }).offset);

  test("a publication made on node A reaches node B once, with the offset and epoch A's append answered, through one message in Redis", async () => {
    const { a, b, messages, settle } = await cluster();
    const first = await a.append("one");
    const second = await a.append("two");
    await settle();
    expect([first.position.offset, second.position.offset]).toEqual([1, 2]);
    expect(b.delivered).toEqual([first.frame, second.frame]);
    // A delivered its own once (not again when its message came back from Redis).
    expect(a.delivered).toEqual([first.frame, second.frame]);
    expect(messages).toEqual([`node-a\n\n${first.position.epoch}\n1\n${first.frame}`, `node-a\n\n${second.position.epoch}\n2\n${second.frame}`]);
  });

  test("a repeated idempotency key answers the first position and publishes nothing again, whichever node repeats it", async () => {
    const { a, b, messages, settle } = await cluster();
    const first = await a.append("once", "k1");
    const again = await a.append("once", "k1");
    const elsewhere = await b.append("once", "k1");
    await settle();
    expect(again.position).toEqual(first.position);
    expect(elsewhere.position).toEqual(first.position);
    expect(offsets(a.delivered)).toEqual([1]);
    expect(offsets(b.delivered)).toEqual([1]);
    expect(messages).toHaveLength(1);
    // The next publication takes the next offset: the repeats used none.
    await b.append("next");
    await settle();
    expect(offsets(a.delivered)).toEqual([1, 2]);
    expect(messages).toHaveLength(2);
  });

  test("publications made on both nodes at once reach each node in offset order, each once", async () => {
    const { a, b, messages, settle } = await cluster();
    await Promise.all(Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? a : b).append(`p${i}`)));
    await settle();
    const all = Array.from({ length: 40 }, (_, i) => i + 1);
    expect(offsets(a.delivered)).toEqual(all);
    expect(offsets(b.delivered)).toEqual(all);
    // The script publishes in the step that assigns the offset: they left Redis in offset order.
    expect(messages.map((m) => Number(m.split("\n")[3]))).toEqual(all);
    expect(a.broker.recovered + b.broker.recovered).toBe(0);
  });
});
