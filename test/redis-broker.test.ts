import { afterAll, beforeAll, describe, expect } from "bun:test";
import { RedisBroker, type RedisBrokerOptions } from "../src/broker/redis-broker.ts";
import type { PublicationSink } from "../src/broker/broker.ts";
import type { Kept, Position } from "../src/history/history.ts";
import { RedisKeys } from "../src/redis/keys.ts";
import type { Redis } from "../src/redis/redis-client.ts";
import { openConnection, redisTests, startRedis, type RedisServer } from "./support/redis.ts";

// The RedisBroker's ordering over a real redis-server: envelopes are published straight into a
// topic's pub/sub channel, as other nodes would, in the orders and with the losses pub/sub allows;
// the history it repairs from is a map the test fills (what the channel's history keeps).

const { test, available } = redisTests();
const EPOCH = "e1";
const TOPIC = "acme/dept:x";

describe.if(available)("RedisBroker delivers each topic in offset order whatever arrives", () => {
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

  const connect = (subscriber = false) => openConnection(server.url, connections, 500, subscriber);

  /** A broker with a recording hub, serving TOPIC from `start`; `kept` is the channel's history. */
  async function node(options: Partial<RedisBrokerOptions> = {}, start = 0) {
    const keys = new RedisKeys(`t${++n}`);
    const delivered: string[] = [];
    const lost: string[] = [];
    const kept = new Map<number, string>();
    let shared: Position = { epoch: EPOCH, offset: start };
    const broker = new RedisBroker(await connect(), await connect(true), keys, {
      nodeId: "this-node",
      reorderWindowMs: 60,
      maxWaiting: 100,
      maxWaitingBytes: 1 << 20,
      positionCheckMs: 60_000,
      subscribeTimeoutMs: 1000,
      ...options,
    });
    const hub: PublicationSink = {
      deliver: (_topic, frame) => (delivered.push(frame), 1),
      deliverFromPeer: (_topic, frame) => void delivered.push(frame),
    };
    broker.attach(hub);
    broker.recoverWith(
      async (_topic, epoch, after, upTo): Promise<Kept[] | null> => {
        if (epoch !== shared.epoch) return null;
        const out: Kept[] = [];
        for (let o = after + 1; o <= upTo; o++) {
          const frame = kept.get(o);
          if (frame === undefined) break;
          out.push({ offset: o, frame });
        }
        return out.length === 0 || out[0]!.offset !== after + 1 ? null : out;
      },
      async () => shared,
      (topic) => lost.push(topic),
    );
    broker.subscribe(TOPIC);
    await broker.ready(TOPIC);
    broker.seed(TOPIC, { epoch: EPOCH, offset: start });
    const peer = await connect();
    /** Another node's publication at `offset`: kept in history (unless `keep` is false), then sent (unless `send` is false). */
    const publish = async (offset: number, { keep = true, send = true, epoch = EPOCH, size = 0 } = {}) => {
      const frame = `f${offset}${"x".repeat(size)}`;
      if (keep) kept.set(offset, frame);
      if (offset > shared.offset || epoch !== shared.epoch) shared = { epoch, offset };
      if (send) await peer.publish(keys.topicChannel(TOPIC), `other-node\n\n${epoch}\n${offset}\n${frame}`);
    };
    return { broker, delivered, lost, publish, settle: (ms = 30) => Bun.sleep(ms), names: () => delivered.map((f) => f.replace(/x+$/, "")) };
  }

  test("two publications that arrive in the wrong order are delivered in offset order", async () => {
    const { publish, settle, names } = await node();
    await publish(2);
    await publish(1);
    await publish(3);
    await settle();
    expect(names()).toEqual(["f1", "f2", "f3"]);
  });

  test("one that arrives twice, or after its place was filled from history, is delivered once", async () => {
    const { publish, settle, names } = await node();
    await publish(1);
    await publish(1);
    // 2 is made (kept) but its message is late: it is read from history after the window.
    await publish(2, { send: false });
    await publish(3);
    await settle(150);
    await publish(2);
    await settle();
    expect(names()).toEqual(["f1", "f2", "f3"]);
  });

  test("a publication lost on the way is read from history after the reorder window, in its place", async () => {
    const { publish, settle, names, broker } = await node();
    await publish(1);
    await publish(2, { send: false });
    await publish(3);
    await settle(20);
    expect(names()).toEqual(["f1"]);
    await settle(150);
    expect(names()).toEqual(["f1", "f2", "f3"]);
    expect(broker.recovered).toBe(1);
    expect(broker.waitingCount).toBe(0);
  });

  test("a gap the history no longer has is a loss: its subscribers are told (onLost), nothing after it is delivered as if whole", async () => {
    const { publish, settle, names, lost } = await node();
    await publish(1);
    await publish(2, { send: false, keep: false });
    await publish(3);
    await settle(150);
    expect(names()).toEqual(["f1"]);
    expect(lost).toEqual([TOPIC]);
    // From the loss on it goes on from the new position.
    await publish(4);
    await settle();
    expect(names()).toEqual(["f1", "f4"]);
  });

  test("a new epoch is a loss too (Redis lost the channel, or it was reset)", async () => {
    const { publish, settle, lost } = await node();
    await publish(1);
    await publish(1, { epoch: "e2" });
    await settle();
    expect(lost).toEqual([TOPIC]);
  });

  test("past the byte bound a waiting frame is not kept, and the gap is read from history up to the shared position", async () => {
    const { publish, settle, names, broker } = await node({ maxWaitingBytes: 1000, reorderWindowMs: 5_000 });
    await publish(1);
    await publish(2, { send: false });
    await publish(3, { size: 600 });
    // 3 waits (600 bytes); 4 would pass the bound: not kept, the gap is read at once.
    await publish(4, { size: 600 });
    await settle(100);
    expect(names()).toEqual(["f1", "f2", "f3", "f4"]);
    expect(broker.waitingCount).toBe(0);
  });

  test("its own publications are never taken back from Redis: they were delivered when made", async () => {
    const { broker, settle, delivered } = await node();
    expect(broker.publish(TOPIC, "own1", undefined, { epoch: EPOCH, offset: 1 })).toBe(1);
    await settle(50);
    expect(delivered).toEqual(["own1"]);
  });

  test("after Redis restarts, the node subscribes again and its position check reads what it missed", async () => {
    const { publish, settle, names } = await node({ positionCheckMs: 100 });
    await publish(1);
    await settle();
    await server.kill();
    await server.start();
    // Redis is back empty; publications made meanwhile (kept in history) never came by pub/sub.
    await Bun.sleep(300);
    await publish(2, { send: false });
    await publish(3, { send: false });
    await settle(400);
    expect(names()).toEqual(["f1", "f2", "f3"]);
    await publish(4);
    await settle();
    expect(names()).toEqual(["f1", "f2", "f3", "f4"]);
  });
});
