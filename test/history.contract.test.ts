import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DurableHistory } from "../src/history/durable-history.ts";
import type { DeliveredPositions, HistoryStore, Position, Retention } from "../src/history/history.ts";
import { MemoryHistory } from "../src/history/memory-history.ts";
import { RedisHistory } from "../src/history/redis-history.ts";
import { RedisKeys } from "../src/redis/keys.ts";
import type { Redis } from "../src/redis/redis-client.ts";
import { openPgStore } from "../src/store/pg-store.ts";
import { openSqliteStore } from "../src/store/sqlite-store.ts";
import type { Store } from "../src/store/store.ts";
import { postgresTests, startDatabase } from "./support/postgres.ts";
import { openConnection, redisTests, startRedis, type RedisServer } from "./support/redis.ts";

// One contract, every HistoryStore: the guarantees written on the interface in src/history/history.ts.
// PostgreSQL and Redis run on one throwaway server each (skipped by hand without them, failing under CI=true).

const KEEP: Retention = { size: 100, ttlMs: 3_600_000 };
const NO_DELIVER = () => undefined;
// Written as the Publisher's pubFrame writes a frame, the position as `"offset":N,"epoch":"E"`: the
// Redis history has its script complete the frame there (frameTemplate). The same text as
// JSON.stringify gives for these values.
const frameOf = (topic: string, n: number) => (p: Position) => `{"type":"pub","channel":"${topic}","data":${n},"offset":${p.offset},"epoch":"${p.epoch}"}`;

interface Subject {
  history: HistoryStore;
  /** A second instance over the same storage, as after a restart (null: nothing survives). */
  reopen(): Promise<HistoryStore | null>;
  done(): Promise<void>;
}

const pgTests = postgresTests();
const redis = redisTests();
let redisServer: RedisServer | undefined;
const redisConnections: Redis[] = [];
let redisPrefixes = 0;

if (redis.available) {
  beforeAll(async () => {
    redisServer = await startRedis();
  });
  afterAll(async () => {
    for (const connection of redisConnections) connection.disconnect();
    await redisServer?.stop();
  });
}

/**
 * What a node's RedisBroker answers for a topic it does not serve (no local subscriber): nothing
 * tracked, nothing to wait for, so positions are read from Redis. The contract's appends deliver to
 * the test, not through a broker, so a tracked position would never move: a node serving none of
 * these topics is the node these tests describe.
 */
const UNSERVED: DeliveredPositions = { get: () => undefined, ready: async () => undefined, seed: (_topic, p) => p, reset: (_topic, p) => p };

/** A node's Redis history over the file's redis-server, on a connection of its own, under `keys`. */
async function redisHistory(keys: RedisKeys): Promise<RedisHistory> {
  const connection = await openConnection(redisServer!.url, redisConnections, 2000);
  return new RedisHistory(connection, keys, UNSERVED, { maxTopicsPerTenant: 1000, metaTtlMs: KEEP.ttlMs, idempotencyTtlMs: 60_000 });
}

/** A durable history over a store that can be closed and opened again on the same storage. */
function durable(open: () => Promise<Store>): () => Promise<Subject> {
  return async () => {
    let store = await open();
    const subject: Subject = {
      history: new DurableHistory(store.channelLog, 2, KEEP),
      async reopen() {
        await subject.history.close();
        await store.close();
        store = await open();
        return new DurableHistory(store.channelLog, 2, KEEP);
      },
      done: () => store.close(),
    };
    return subject;
  };
}

const subjects: Record<string, { make: () => Promise<Subject>; test: typeof test }> = {
  memory: { make: async () => ({ history: new MemoryHistory(), reopen: async () => null, done: async () => undefined }), test },
  "durable (sqlite)": {
    make: async () => {
      const dir = mkdtempSync(join(tmpdir(), "sinal-history-"));
      const subject = await durable(async () => openSqliteStore(join(dir, "h.db")))();
      const done = subject.done;
      subject.done = async () => {
        await done();
        rmSync(dir, { recursive: true, force: true });
      };
      return subject;
    },
    test,
  },
  "durable (postgres)": {
    // Each test gets a fresh database on the process's throwaway PostgreSQL, dropped when done.
    make: async () => {
      const database = await startDatabase();
      const subject = await durable(() => openPgStore(database.url))();
      const done = subject.done;
      subject.done = async () => {
        await done();
        await database.stop();
      };
      return subject;
    },
    test: pgTests.test,
  },
  redis: {
    // A key prefix per test on the file's redis-server; a restart is another node's history over
    // the same Redis and prefix: epoch, offsets and publications live in Redis, not in the node.
    make: async () => {
      const keys = new RedisKeys(`history${++redisPrefixes}`);
      return { history: await redisHistory(keys), reopen: () => redisHistory(keys), done: async () => undefined };
    },
    test: redis.test,
  },
};

async function appendN(h: HistoryStore, topic: string, n: number, retention = KEEP): Promise<Position[]> {
  // All issued before any settles: offsets must follow call order even when commits are batched.
  return (await Promise.all(Array.from({ length: n }, (_, i) => h.append(topic, frameOf(topic, i + 1), retention, NO_DELIVER)))).map((r) => r.position);
}

for (const [name, { make, test }] of Object.entries(subjects)) {
  describe(`HistoryStore contract: ${name}`, () => {
    let subject: Subject;
    afterEach(async () => subject && (await subject.done()));

    test("offsets run 1, 2, 3 ... per topic in call order, under one epoch; topics are independent", async () => {
      subject = await make();
      const h = subject.history;
      const a = await appendN(h, "t/a", 50);
      const b = await appendN(h, "t/b", 3);
      expect(a.map((p) => p.offset)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
      expect(new Set(a.map((p) => p.epoch)).size).toBe(1);
      expect(b.map((p) => p.offset)).toEqual([1, 2, 3]);
      expect(await h.position("t/a")).toEqual({ epoch: a[0]!.epoch, offset: 50 });
      expect((await h.position("t/never")).offset).toBe(0);
    });

    test("deliver runs once per publication, in offset order, before its append settles, across topics and batched commits", async () => {
      subject = await make();
      const h = subject.history;
      const delivered: string[] = [];
      const settledBeforeDelivery: string[] = [];
      const appends = Array.from({ length: 60 }, (_, i) => {
        const topic = i % 3 === 0 ? "t/x" : "t/y";
        const kept = h.append(topic, frameOf(topic, i), KEEP, (p) => delivered.push(`${topic}#${p.offset}`));
        return Promise.resolve(kept).then((r) => {
          if (!delivered.includes(`${topic}#${r.position.offset}`)) settledBeforeDelivery.push(`${topic}#${r.position.offset}`);
        });
      });
      await Promise.all(appends);
      expect(settledBeforeDelivery).toEqual([]);
      for (const topic of ["t/x", "t/y"]) {
        const offsets = delivered.filter((d) => d.startsWith(`${topic}#`)).map((d) => Number(d.split("#")[1]));
        expect(offsets).toEqual(Array.from({ length: offsets.length }, (_, i) => i + 1));
      }
      expect(delivered.length).toBe(60);
    });

    test("recover returns exactly the publications after since, in order", async () => {
      subject = await make();
      const h = subject.history;
      const [first] = await appendN(h, "t/r", 30);
      const r = await h.recover("t/r", { epoch: first!.epoch, offset: 10 }, KEEP, Infinity);
      expect(r.recovered).toBe(true);
      expect(r.position).toEqual({ epoch: first!.epoch, offset: 30 });
      expect(r.publications.map((f) => JSON.parse(f).offset)).toEqual(Array.from({ length: 20 }, (_, i) => i + 11));
      expect(JSON.parse(r.publications[0]!)).toMatchObject({ data: 11, epoch: first!.epoch });
    });

    test("a client that missed nothing recovers with nothing to replay", async () => {
      subject = await make();
      const h = subject.history;
      const [p] = await appendN(h, "t/n", 1);
      expect(await h.recover("t/n", p!, KEEP, Infinity)).toMatchObject({ recovered: true, publications: [], position: p });
    });

    test("another epoch, an offset from the future, and history trimmed by size are refused with their reason", async () => {
      subject = await make();
      const h = subject.history;
      const small: Retention = { size: 5, ttlMs: 3_600_000 };
      const [p] = await appendN(h, "t/s", 20, small);
      expect(await h.recover("t/s", { epoch: "elsewhere", offset: 3 }, small, Infinity)).toMatchObject({ recovered: false, reason: "epoch_changed", publications: [] });
      expect(await h.recover("t/s", { epoch: p!.epoch, offset: 21 }, small, Infinity)).toMatchObject({ recovered: false, reason: "ahead" });
      expect(await h.recover("t/s", { epoch: p!.epoch, offset: 10 }, small, Infinity)).toMatchObject({ recovered: false, reason: "trimmed", historyFrom: 16 });
      const edge = await h.recover("t/s", { epoch: p!.epoch, offset: 15 }, small, Infinity);
      expect(edge.recovered).toBe(true);
      expect(edge.publications.map((f) => JSON.parse(f).offset)).toEqual([16, 17, 18, 19, 20]);
    });

    test("a recovery larger than the byte budget comes in pages of at most that budget, in order, none twice", async () => {
      subject = await make();
      const h = subject.history;
      const [p] = await appendN(h, "t/big", 30);
      const frameBytes = JSON.stringify({ type: "pub", channel: "t/big", data: 10, offset: 10, epoch: p!.epoch }).length;
      const budget = 7 * frameBytes;
      const first = await h.recover("t/big", { epoch: p!.epoch, offset: 2 }, KEEP, budget);
      expect(first).toMatchObject({ recovered: true, through: 9 });
      const got = first.publications.map((f) => JSON.parse(f).offset);
      let after = first.through;
      while (after < 30) {
        const page = (await h.page("t/big", p!.epoch, after, 30, KEEP, budget))!;
        expect(page.reduce((n, k) => n + k.frame.length, 0)).toBeLessThanOrEqual(budget);
        got.push(...page.map((k) => k.offset));
        after = page.at(-1)!.offset;
      }
      expect(got).toEqual(Array.from({ length: 28 }, (_, i) => i + 3));
      // A page of an epoch that is gone is refused.
      expect(await h.page("t/big", "elsewhere", 2, 30, KEEP, budget)).toBeNull();
    });

    test(
      "the retention asked for is what is kept: a recovery or page from before its size is refused, whatever was appended under a larger one",
      async () => {
        subject = await make();
        const h = subject.history;
        const [p] = await appendN(h, "t/shrunk", 30);
        const smaller: Retention = { size: 10, ttlMs: 3_600_000 };
        expect(await h.recover("t/shrunk", { epoch: p!.epoch, offset: 2 }, smaller, Infinity)).toMatchObject({ recovered: false, reason: "trimmed", historyFrom: 21 });
        expect(await h.page("t/shrunk", p!.epoch, 2, 30, smaller, Infinity)).toBeNull();
        expect((await h.page("t/shrunk", p!.epoch, 20, 30, smaller, Infinity))!.map((k) => k.offset)).toEqual(Array.from({ length: 10 }, (_, i) => i + 21));
      },
    );

    test("a since of another epoch, or ahead, is refused with history_from naming the oldest offset kept", async () => {
      subject = await make();
      const h = subject.history;
      const small: Retention = { size: 5, ttlMs: 3_600_000 };
      const [p] = await appendN(h, "t/from", 12, small);
      expect(await h.recover("t/from", { epoch: "elsewhere", offset: 3 }, small, Infinity)).toMatchObject({ recovered: false, reason: "epoch_changed", historyFrom: 8 });
      expect(await h.recover("t/from", { epoch: p!.epoch, offset: 40 }, small, Infinity)).toMatchObject({ recovered: false, reason: "ahead", historyFrom: 8 });
    });

    test("history older than the retention age is trimmed", async () => {
      subject = await make();
      const h = subject.history;
      const short: Retention = { size: 100, ttlMs: 300 };
      const [p] = await appendN(h, "t/age", 3, short);
      await Bun.sleep(600);
      await appendN(h, "t/age", 1, short);
      expect(await h.recover("t/age", { epoch: p!.epoch, offset: 1 }, short, Infinity)).toMatchObject({ recovered: false, reason: "trimmed", historyFrom: 4 });
      expect((await h.recover("t/age", { epoch: p!.epoch, offset: 3 }, short, Infinity)).publications).toHaveLength(1);
    });

    test("a channel without history recovers only when nothing was missed", async () => {
      subject = await make();
      const h = subject.history;
      const off: Retention = { size: 0, ttlMs: 0 };
      const [p] = await appendN(h, "t/off", 2, off);
      expect(await h.recover("t/off", { epoch: p!.epoch, offset: 2 }, off, Infinity)).toMatchObject({ recovered: true });
      expect(await h.recover("t/off", { epoch: p!.epoch, offset: 1 }, off, Infinity)).toMatchObject({ recovered: false, reason: "no_history" });
    });

    test("reset starts a new epoch at offset 0 for that topic only", async () => {
      subject = await make();
      const h = subject.history;
      const [a] = await appendN(h, "t/x", 2);
      const [b] = await appendN(h, "t/y", 1);
      const fresh = await h.reset("t/x");
      expect(fresh.offset).toBe(0);
      expect(fresh.epoch).not.toBe(a!.epoch);
      expect(await h.recover("t/x", { epoch: a!.epoch, offset: 1 }, KEEP, Infinity)).toMatchObject({ recovered: false, reason: "epoch_changed" });
      expect((await appendN(h, "t/x", 1))[0]).toEqual({ epoch: fresh.epoch, offset: 1 });
      expect(await h.position("t/y")).toEqual({ epoch: b!.epoch, offset: 1 });
    });

    test("after a restart: a durable or Redis history keeps epoch, offsets and publications; a memory one starts a new epoch", async () => {
      subject = await make();
      const [p] = await appendN(subject.history, "t/keep", 12);
      const again = await subject.reopen();
      if (again === null) {
        // Nothing of a memory history survives: a fresh instance has another epoch for the topic.
        expect((await new MemoryHistory().position("t/keep")).epoch).not.toBe(p!.epoch);
        return;
      }
      subject.history = again;
      expect(await again.position("t/keep")).toEqual({ epoch: p!.epoch, offset: 12 });
      const r = await again.recover("t/keep", { epoch: p!.epoch, offset: 7 }, KEEP, Infinity);
      expect(r.publications.map((f) => JSON.parse(f).offset)).toEqual([8, 9, 10, 11, 12]);
      expect((await appendN(again, "t/keep", 1))[0]).toEqual({ epoch: p!.epoch, offset: 13 });
    });
  });
}

test("the memory history stays under its byte bound by dropping the oldest publications of any topic first", () => {
  const h = new MemoryHistory({ maxBytes: 10_000 });
  const frame = "x".repeat(100);
  for (let i = 0; i < 200; i++) h.append(i % 2 === 0 ? "t/even" : "t/odd", () => frame, KEEP, NO_DELIVER);
  expect(h.stats().bytes).toBeLessThanOrEqual(10_000);
  expect(h.stats().publications).toBe(100);
  const even = h.recover("t/even", { epoch: h.position("t/even").epoch, offset: 40 }, KEEP, Infinity);
  expect(even).toMatchObject({ recovered: false, reason: "trimmed", historyFrom: 51 });
});

test("the memory history keeps an idle topic's epoch however long it is quiet, and drops what aged out", () => {
  let now = 0;
  const h = new MemoryHistory({ maxBytes: 1 << 20 }, () => now);
  const quiet = h.append("t/quiet", () => "f", KEEP, NO_DELIVER).position;
  now = 5 * 3_600_000;
  h.trim(now);
  // Its publication outlived the 1 h retention; its epoch and offset stay for its subscribers.
  expect(h.stats()).toEqual({ topics: 1, publications: 0, bytes: 0 });
  expect(h.position("t/quiet")).toEqual(quiet);
});

test("the memory history keeps at most MAX_CHANNELS_PER_TENANT channels per tenant, evicting the one used least recently with its epoch", () => {
  const h = new MemoryHistory({ maxTopics: 1000, maxTopicsPerTenant: 10 });
  const first = h.append("a/dept:0", () => "f", KEEP, NO_DELIVER).position;
  const busy = h.append("a/dept:busy", () => "f", KEEP, NO_DELIVER).position;
  const other = h.append("b/dept:0", () => "f", KEEP, NO_DELIVER).position;
  for (let i = 1; i <= 50; i++) {
    h.append(`a/dept:${i}`, () => "f", KEEP, NO_DELIVER);
    // a channel in use is not the least recently used one
    h.position("a/dept:busy");
  }
  expect(h.stats().topics).toBe(11);
  expect(h.evicted).toBe(42);
  // the evicted channel starts again under a new epoch: a client coming back is told so
  expect(h.recover("a/dept:0", first, KEEP, Infinity)).toMatchObject({ recovered: false, reason: "epoch_changed" });
  expect(h.position("a/dept:busy")).toEqual(busy);
  // another tenant's channel was never touched
  expect(h.position("b/dept:0")).toEqual(other);
});

test("the memory history keeps at most MAX_CHANNELS channels of all tenants together", () => {
  const h = new MemoryHistory({ maxTopics: 100, maxTopicsPerTenant: 100 });
  for (let t = 0; t < 10; t++) for (let i = 0; i < 30; i++) h.append(`t${t}/dept:${i}`, () => "f", KEEP, NO_DELIVER);
  expect(h.stats().topics).toBe(100);
  expect(h.stats().publications).toBe(100);
  expect(h.evicted).toBe(200);
});

test("one tenant's volume trims its own in-memory history first: another tenant's stays whole", () => {
  const h = new MemoryHistory({ maxBytes: 1 << 20, maxBytesPerTenant: 10_000 });
  const frame = "x".repeat(100);
  for (let i = 0; i < 50; i++) h.append("quiet/dept:a", () => frame, KEEP, NO_DELIVER);
  for (let i = 0; i < 1000; i++) h.append(`loud/dept:${i % 7}`, () => frame, KEEP, NO_DELIVER);
  expect(h.stats("loud").bytes).toBeLessThanOrEqual(10_000);
  expect(h.stats("quiet")).toMatchObject({ publications: 50, bytes: 5000 });
  const quiet = h.recover("quiet/dept:a", { epoch: h.position("quiet/dept:a").epoch, offset: 0 }, KEEP, Infinity);
  expect(quiet.publications).toHaveLength(50);
});
