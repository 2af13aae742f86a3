import { afterAll, afterEach, beforeAll, describe, expect } from "bun:test";
import { testsNeedingAll } from "./support/required.ts";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MongoClient, type Collection } from "mongodb";
import { Registry } from "prom-client";
import { MemoryBroker } from "../src/broker/memory-broker.ts";
import { parseChannel, type Channel } from "../src/channel.ts";
import { parseMongoConfig } from "../src/feeds/feed-config.ts";
import { FeedService } from "../src/feeds/feed-service.ts";
import { ChannelHistory } from "../src/history/channel-history.ts";
import { MemoryHistory } from "../src/history/memory-history.ts";
import { createLogger, type Logger } from "../src/log.ts";
import { Metrics } from "../src/metrics.ts";
import { Namespaces } from "../src/namespaces.ts";
import { Publisher, type Position, type PublishOptions } from "../src/publisher.ts";
import { RedisKeys } from "../src/redis/keys.ts";
import { connectRedis, openRedis, type Redis } from "../src/redis/redis-client.ts";
import { RedisSnapshotMirror } from "../src/feeds/snapshot-mirror.ts";
import { RedisLeases } from "../src/redis/redis-leases.ts";
import { openSqliteStore } from "../src/store/sqlite-store.ts";
import type { FeedPosition, FeedStore } from "../src/store/feed-store.ts";
import type { Store } from "../src/store/store.ts";
import { emulatorTests, feedEnv, waitFor } from "./support/feeds.ts";
import { startEmulator, type Emulator } from "./support/mongo-emulator.ts";
import { redisTests, startRedis, type RedisServer } from "./support/redis.ts";

// Feed leadership across two nodes without a cluster: two FeedServices in this process (each
// with its own Redis connection, Publisher and registry) on one mongo-java-server and one
// redis-server, sharing the feed store (one sqlite file) and the channel history, as nodes share
// Redis's. Each node's Publisher records what it publishes, with the idempotency key.

const emulated = emulatorTests();
const redised = redisTests();
const available = emulated.available && redised.available;
const test = testsNeedingAll(emulated, redised);

let emulator: Emulator;
let redis: RedisServer;
let mongo: MongoClient;
let dir: string;
let store: Store;
const cleanups: (() => Promise<void> | void)[] = [];
let tests = 0;

beforeAll(async () => {
  if (!available) return;
  [emulator, redis] = await Promise.all([startEmulator(), startRedis()]);
  mongo = new MongoClient(emulator.uri());
  dir = mkdtempSync(join(tmpdir(), "sinal-feed-leader-"));
  store = openSqliteStore(join(dir, "sinal.db"));
}, 120_000);

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

afterAll(async () => {
  await store?.close();
  await mongo?.close();
  await Promise.all([emulator?.stop(), redis?.stop()]);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

interface Published {
  seq: number;
  key: string | undefined;
  topic: string;
  data: unknown;
  /** Where it was published (epoch and offset). */
  at: string;
}

/** A real Publisher that also notes each publication it makes, with its idempotency key. */
class RecordingPublisher extends Publisher {
  readonly published: Published[] = [];

  override async publish(channel: Channel, event: string, data: unknown, options: PublishOptions = {}): Promise<Position> {
    const position = await super.publish(channel, event, data, options);
    this.published.push({ seq: (data as { seq: number }).seq, key: options.key?.key, topic: channel.topic, data, at: `${position.epoch}:${position.offset}` });
    return position;
  }
}

interface Node {
  service: FeedService;
  publisher: RecordingPublisher;
  /** The node's own Redis connection, its leases' only way to Redis. */
  connection: Redis;
  seqs(): number[];
}

/** The shared feed store as one node sees it, whose saves can be held (a slow store) and then let through. */
class SlowPositions implements FeedStore {
  /** Saves waiting at the gate now. */
  held = 0;
  /** What each save that went through since the last `hold` answered. */
  readonly results: boolean[] = [];
  private gate: Promise<void> | null = null;
  private open: () => void = () => undefined;

  hold(): void {
    this.results.length = 0;
    this.gate = new Promise((resolve) => (this.open = resolve));
  }

  letThrough(): void {
    this.gate = null;
    this.open();
  }

  get(feed: string): Promise<FeedPosition | null> {
    return store.feeds.get(feed);
  }

  async save(position: FeedPosition): Promise<boolean> {
    if (this.gate !== null) {
      this.held++;
      await this.gate;
      this.held--;
    }
    const saved = await store.feeds.save(position);
    this.results.push(saved);
    return saved;
  }

  clear(feed: string, fence: number): Promise<boolean> {
    return store.feeds.clear(feed, fence);
  }
}

/** A feed on a collection of this test's own, so tests never see each other's changes. */
/** `tenant`: the feed's tenant setting (default: every document in `acme`). */
function setup(tenant: { tenant: string } | { tenant_field: string } = { tenant: "acme" }) {
  const name = `lead${++tests}`;
  const feed = { name, collection: name, channel: "strategy:{roulette_id}", ...tenant, event: "strategy_update" };
  const config = parseMongoConfig(feedEnv(emulator.uri("&serverSelectionTimeoutMS=1000"), [feed]), 300)!;
  const history = new ChannelHistory(new MemoryHistory(), {} as never, Namespaces.builtIn());
  const keys = new RedisKeys(`t${tests}`);
  const collection: Collection = mongo.db("runcash").collection(name);

  /** `positions`: this node's way to the feed store (default: the shared store itself). */
  async function node(id: string, leaseTtlMs: number, commandTimeoutMs = 300, positions: FeedStore = store.feeds, logger: Logger = createLogger("silent")): Promise<Node> {
    const connection = connectRedis({ url: redis.url, commandTimeoutMs, prefix: keys.prefix }, id);
    await openRedis(connection, 5000);
    const broker = new MemoryBroker();
    const publisher = new RecordingPublisher(history, broker, new Metrics(10));
    const service = new FeedService(config, {
      publisher,
      positions,
      registry: new Registry(),
      logger,
      leases: new RedisLeases(connection, keys),
      mirror: new RedisSnapshotMirror(connection, keys),
      nodeId: id,
      leaseTtlMs,
    });
    cleanups.push(async () => {
      await service.stop();
      connection.disconnect();
    });
    return { service, publisher, connection, seqs: () => publisher.published.map((p) => p.seq) };
  }

  let seq = 0;
  /** One at a time, so the stream's order is the order of `seq`. */
  const insert = async (count = 1) => {
    for (let i = 0; i < count; i++) await collection.insertOne({ roulette_id: "r1", seq: ++seq });
  };
  /** Waits until the store holds the resume token of the change `seq` published by `node`, and returns that saved row. */
  const savedAfter = (node: Node, seq: number) => {
    const data = node.publisher.published.find((p) => p.seq === seq)!.key!.slice(`feed:${name}:`.length);
    return waitFor(`the token of change ${seq} saved`, async () => {
      const row = await store.feeds.get(name);
      return row !== null && row.token.includes(`"${data}"`) && row;
    });
  };
  return { name, node, insert, inserted: () => seq, savedAfter, collection };
}

const streaming = (node: Node) => node.service.leading().length === 1 && node.service.notReady().length === 0;
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe("feed leadership", () => {
  test("of two nodes started together one leads and publishes every change once; the other publishes nothing and is not reported by /ready", async () => {
    const { name, node, insert } = setup();
    const [a, b] = await Promise.all([node("node-a", 1000), node("node-b", 1000)]);
    a.service.start();
    b.service.start();
    await waitFor("one node streaming", () => streaming(a) || streaming(b));
    const [leader, follower] = streaming(a) ? [a, b] : [b, a];
    expect(follower.service.leading()).toEqual([]);
    expect(follower.service.notReady()).toEqual([]);

    await insert(20);
    await waitFor("20 publications", () => leader.seqs().length >= 20);
    // Past two renewals: the lease stays where it is, and nothing else gets published.
    await Bun.sleep(800);
    expect(leader.seqs()).toEqual(range(1, 20));
    expect(follower.seqs()).toEqual([]);
    expect(leader.service.leading()).toEqual([name]);
    // Each publication is keyed by its change's _id, under the feed's name.
    const keys = leader.publisher.published.map((p) => p.key!);
    expect(new Set(keys).size).toBe(20);
    for (const key of keys) expect(key).toStartWith(`feed:${name}:`);
    // A subscribe's snapshot: the leader answers from its cache, the follower from the leader's
    // mirror in Redis (written before each publication), the same document.
    const channel = parseChannel("acme", "strategy:r1");
    expect(leader.service.subscribeExtra()(null, channel)).toMatchObject({ snapshot: { roulette_id: "r1", seq: 20 } });
    expect(await follower.service.subscribeExtra()(null, channel)).toMatchObject({ snapshot: { roulette_id: "r1", seq: 20 } });
    // A channel the feed never fed: no snapshot from either.
    expect(await follower.service.subscribeExtra()(null, parseChannel("acme", "strategy:none"))).toEqual({ snapshot: null });
  }, 20_000);

  test("when the leader's renewals stop (its Redis connection gone), it stops publishing and the other node takes over within the TTL and a poll, from the saved token: no change lost, a repeated one under the same key", async () => {
    const TTL = 1000;
    const { node, insert, inserted } = setup();
    const a = await node("node-a", TTL);
    a.service.start();
    await waitFor("a streaming", () => streaming(a));
    const b = await node("node-b", TTL);
    b.service.start();
    await waitFor("b knows it follows", () => b.service.notReady().length === 0);
    expect(b.service.leading()).toEqual([]);
    await insert(10);
    await waitFor("a published 10", () => a.seqs().length >= 10);

    a.connection.disconnect();
    const cut = performance.now();
    // Changes keep coming through the handover.
    let handedOver = false;
    const writer = (async () => {
      while (!handedOver) {
        await insert();
        await Bun.sleep(25);
      }
    })();
    // Its next renewal (within TTL/3) fails at once: a stops publishing then.
    await waitFor("a stops leading", () => a.service.leading().length === 0, TTL);
    const publishedByA = a.seqs().length;
    await waitFor("b streaming", () => streaming(b), 3 * TTL);
    const tookOver = performance.now() - cut;
    handedOver = true;
    await writer;
    await insert(5);
    const total = inserted();
    await waitFor("every change published", () => new Set([...a.seqs(), ...b.seqs()]).size === total, 5000);
    await Bun.sleep(300);

    // The lease expired at most TTL after the cut; b asks every TTL/4.
    expect(tookOver).toBeLessThan(TTL + TTL / 4 + 300);
    expect(a.seqs()).toHaveLength(publishedByA);
    expect(a.seqs()).toEqual(range(1, publishedByA));
    // b resumed from the token a saved: no gap, and it re-published only a's last few changes.
    const fromB = b.seqs();
    const first = fromB[0]!;
    expect(fromB).toEqual(range(first, total));
    const repeated = publishedByA - first + 1;
    expect(repeated).toBeGreaterThanOrEqual(0);
    expect(repeated).toBeLessThanOrEqual(2);
    // A repeated change carries the key a used: a keyed history publishes it once.
    for (const seq of range(first, publishedByA)) {
      const keyOf = (n: Node) => n.publisher.published.find((p) => p.seq === seq)!.key;
      expect(keyOf(b)).toBe(keyOf(a)!);
    }
    const distinctKeys = new Set([...a.publisher.published, ...b.publisher.published].map((p) => p.key));
    expect(distinctKeys.size).toBe(total);
  }, 20_000);

  test("a new leader that resumes from an older token re-publishes the overlap under the keys the old leader used", async () => {
    const TTL = 1000;
    const { node, insert, savedAfter } = setup();
    const a = await node("node-a", TTL);
    a.service.start();
    await waitFor("a streaming", () => streaming(a));
    const b = await node("node-b", TTL);
    b.service.start();
    await waitFor("b knows it follows", () => b.service.notReady().length === 0);
    await insert(5);
    await waitFor("a published 5", () => a.seqs().length >= 5);
    // Saved right after the change was published, not at a timer's next tick or at stop.
    const older = await savedAfter(a, 5);
    await insert(5);
    await waitFor("a published 10", () => a.seqs().length >= 10);
    await savedAfter(a, 10);

    a.connection.disconnect();
    await waitFor("a stops leading", () => a.service.leading().length === 0, TTL);
    // As if a's saves after change 5 had not landed: b will re-read changes 6 to 10.
    await store.feeds.save(older);
    await waitFor("b streaming", () => streaming(b), 3 * TTL);
    await insert(2);
    await waitFor("b published 6 to 12", () => b.seqs().length >= 7);
    await Bun.sleep(300);

    expect(a.seqs()).toEqual(range(1, 10));
    expect(b.seqs()).toEqual(range(6, 12));
    const keyOf = (n: Node, seq: number) => n.publisher.published.find((p) => p.seq === seq)!.key;
    for (const seq of range(6, 10)) expect(keyOf(b, seq)).toBe(keyOf(a, seq)!);
    const distinctKeys = new Set([...a.publisher.published, ...b.publisher.published].map((p) => p.key));
    expect(distinctKeys.size).toBe(12);
  }, 20_000);

  test("an old leader's save that lands after the new leader's is refused by its fence: the position stays the new leader's, and the old leader logs feed_position_fenced", async () => {
    const TTL = 1000;
    const { name, node, insert, savedAfter } = setup();
    const slow = new SlowPositions();
    const logs: { code?: string; msg: string }[] = [];
    const logger = createLogger("warn", { write: (line: string) => void logs.push(JSON.parse(line)) });
    const a = await node("node-a", TTL, 300, slow, logger);
    a.service.start();
    await waitFor("a streaming", () => streaming(a));
    const b = await node("node-b", TTL);
    b.service.start();
    await waitFor("b knows it follows", () => b.service.notReady().length === 0);
    await insert(5);
    await waitFor("a published 5", () => a.seqs().length >= 5);
    const fenceOfA = (await savedAfter(a, 5)).fence;

    // a's next save is slow: it is still on its way when a loses the lease and b takes over.
    slow.hold();
    await insert(3);
    await waitFor("a published 8", () => a.seqs().length >= 8);
    await waitFor("a's save held", () => slow.held > 0);
    a.connection.disconnect();
    await waitFor("a stops leading", () => a.service.leading().length === 0, TTL);
    await waitFor("b streaming", () => streaming(b), 3 * TTL);
    await insert(2);
    await waitFor("b published up to 10", () => b.seqs().includes(10));
    const ofB = await savedAfter(b, 10);
    expect(ofB.fence).toBeGreaterThan(fenceOfA);

    slow.letThrough();
    await waitFor("a's held save answered", () => slow.results.length > 0);
    expect(slow.results).toEqual([false]);
    expect(await store.feeds.get(name)).toEqual(ofB);
    expect(logs.filter((line) => line.code === "feed_position_fenced")).toHaveLength(1);
    // b resumed from the token of change 5, the last one a saved.
    expect(b.seqs()).toEqual(range(6, 10));
  }, 20_000);

  test("a renewal Redis does not answer stops the leader by its own deadline, a third of the TTL before its lease could expire, whatever the command timeout", async () => {
    const TTL = 1500;
    const { node, insert, inserted } = setup();
    // A command timeout longer than the TTL: only the leader's deadline can stop it in time.
    const a = await node("node-a", TTL, 10_000);
    a.service.start();
    await waitFor("a streaming", () => streaming(a));
    await insert(3);
    await waitFor("a published 3", () => a.seqs().length >= 3);

    const pauser = connectRedis({ url: redis.url, commandTimeoutMs: 1000, prefix: "x" }, "pauser");
    cleanups.push(() => pauser.disconnect());
    await openRedis(pauser, 5000);
    // Every client's commands wait this long: Redis answers nothing, the lease's clock runs on.
    await pauser.call("CLIENT", "PAUSE", String(2 * TTL), "ALL");
    const paused = performance.now();
    await waitFor("a stops leading", () => a.service.leading().length === 0, TTL);
    // a's last renewal went out before the pause: its lease lasts until at least TTL after it.
    expect(performance.now() - paused).toBeLessThan((2 * TTL) / 3 + 100);
    await insert(2);
    await Bun.sleep(200);
    expect(a.seqs()).toEqual(range(1, 3));

    // Redis answers again: a takes the lease back (nobody else asked) and resumes where it stopped.
    await waitFor("a streaming again", () => streaming(a), 3 * TTL);
    await waitFor("every change published", () => a.seqs().length >= inserted(), 3000);
    expect(a.seqs()).toEqual(range(1, 5));
  }, 20_000);

  test("a handover keeps the channels' epochs: a document deleted or moved while no node led is deleted from the channel it left, the rest goes on at the next offsets", async () => {
    const TTL = 8000;
    const { node, collection } = setup();
    const a = await node("node-a", TTL);
    a.service.start();
    await waitFor("a streaming", () => streaming(a));
    await collection.insertMany([
      { _id: "d1" as never, roulette_id: "r1", seq: 1 },
      { _id: "d2" as never, roulette_id: "r1", seq: 2 },
      { _id: "d3" as never, roulette_id: "r1", seq: 3 },
    ]);
    await waitFor("a published 3", () => a.publisher.published.length >= 3);
    const last = a.publisher.published.at(-1)!.at.split(":");
    await a.service.stop();

    // While no node leads: d1 deleted, d2 moved to another roulette's channel, d3 changed in place.
    await collection.deleteOne({ _id: "d1" as never });
    await collection.updateOne({ _id: "d2" as never }, { $set: { roulette_id: "r2", seq: 4 } });
    await collection.updateOne({ _id: "d3" as never }, { $set: { seq: 5 } });
    const b = await node("node-b", TTL);
    b.service.start();
    await waitFor("b published the update of d3", () => b.publisher.published.some((p) => p.seq === 5));
    await Bun.sleep(200);
    const onR1 = b.publisher.published.filter((p) => p.topic === "acme/strategy:r1");
    // Same epoch as a's, next offsets: both deletes (the handover's, in either order), then d3's update from the replay.
    const next = (n: number) => `${last[0]}:${Number(last[1]) + n}`;
    expect(onR1.map((p) => p.at)).toEqual([next(1), next(2), next(3)]);
    expect(onR1.slice(0, 2).map((p) => p.data)).toContainAllValues([
      { _id: "d1", deleted: true },
      { _id: "d2", deleted: true },
    ]);
    expect(onR1[2]!.data).toMatchObject({ _id: "d3", seq: 5 });
    expect(b.publisher.published.filter((p) => p.topic === "acme/strategy:r2").map((p) => p.data)).toEqual([expect.objectContaining({ _id: "d2", roulette_id: "r2", seq: 4 })]);
    // The channel's snapshot is d3 as it is now (d1 gone, d2 elsewhere).
    expect(await b.service.subscribeExtra()(null, parseChannel("acme", "strategy:r1"))).toEqual({ snapshot: expect.objectContaining({ _id: "d3", seq: 5 }) });
  }, 20_000);

  test("after a handover, another node's subscribe no longer gets a document deleted while no node led, even the last one of its tenant", async () => {
    const TTL = 8000;
    const { node, collection } = setup({ tenant_field: "tenant" });
    const a = await node("node-a", TTL);
    a.service.start();
    await waitFor("a streaming", () => streaming(a));
    await collection.insertMany([
      { _id: "e1" as never, tenant: "t1", roulette_id: "r9", seq: 1 },
      { _id: "e2" as never, tenant: "t2", roulette_id: "r9", seq: 2 },
    ]);
    await waitFor("a published 2", () => a.publisher.published.length >= 2);
    await a.service.stop();
    // e1 was tenant t1's only document.
    await collection.deleteOne({ _id: "e1" as never });
    const b = await node("node-b", TTL);
    b.service.start();
    await waitFor("b streaming", () => streaming(b));
    await waitFor("b deleted e1", () => b.publisher.published.some((p) => p.topic === "t1/strategy:r9"));
    expect(b.publisher.published.map((p) => [p.topic, p.data])).toEqual([["t1/strategy:r9", { _id: "e1", deleted: true }]]);
    // A follower answers from the leader's mirror: nothing for t1's channel, e2 for t2's.
    const c = await node("node-c", TTL);
    c.service.start();
    await waitFor("c knows it follows", () => c.service.notReady().length === 0 && c.service.leading().length === 0);
    expect(await c.service.subscribeExtra()(null, parseChannel("t1", "strategy:r9"))).toEqual({ snapshot: null });
    expect(await c.service.subscribeExtra()(null, parseChannel("t2", "strategy:r9"))).toEqual({ snapshot: expect.objectContaining({ _id: "e2", seq: 2 }) });
  }, 20_000);

  test("a leader that stops releases the lease: the other node takes over long before the lease could have expired", async () => {
    const TTL = 8000;
    const { node, insert } = setup();
    const a = await node("node-a", TTL);
    a.service.start();
    await waitFor("a streaming", () => streaming(a));
    const b = await node("node-b", TTL);
    b.service.start();
    await waitFor("b knows it follows", () => b.service.notReady().length === 0);
    await insert(3);
    await waitFor("a published 3", () => a.seqs().length >= 3);

    await a.service.stop();
    const stopped = performance.now();
    await waitFor("b streaming", () => streaming(b), TTL);
    // a renewed at most TTL/3 before it stopped: its lease had at least 2/3 TTL left. b asks every TTL/4.
    expect(performance.now() - stopped).toBeLessThan(TTL / 4 + 1000);
    await insert(2);
    await waitFor("b published 2", () => b.seqs().length >= 2);
    // a saved its token at stop: b starts right after a's last change.
    expect(b.seqs()).toEqual([4, 5]);
    expect(a.seqs()).toEqual([1, 2, 3]);
  }, 20_000);
});
