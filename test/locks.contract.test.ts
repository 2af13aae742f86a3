import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Locks } from "../src/locks/locks.ts";
import { MemoryLocks } from "../src/locks/memory-locks.ts";
import { RedisKeys } from "../src/redis/keys.ts";
import type { Redis } from "../src/redis/redis-client.ts";
import { RedisLocks } from "../src/redis/redis-locks.ts";
import { keysUnder, openConnection, redisTests, startRedis, type RedisServer } from "./support/redis.ts";

// The guarantees written on Locks (src/locks/locks.ts), for each implementation; then what only the
// shared (Redis) one can show: two nodes racing, sweeping at once, a Redis that is down.

const redis = redisTests();
let server: RedisServer | undefined;
const opened: Redis[] = [];
let prefixes = 0;

beforeAll(async () => {
  if (redis.available) server = await startRedis();
});
afterAll(async () => {
  for (const connection of opened) connection.disconnect();
  await server?.stop();
});

/** A node's own connection, as connectRedis makes it for sinal. */
function connect(url = server!.url): Promise<Redis> {
  return openConnection(url, opened);
}

interface Subject {
  locks: Locks;
  /** Keys the implementation keeps in Redis; null for memory (its maps are not visible from outside). */
  held: (() => Promise<string[]>) | null;
}

const subjects: Record<string, { test: typeof test; make: () => Promise<Subject> }> = {
  memory: { test, make: async () => ({ locks: new MemoryLocks(), held: null }) },
  redis: {
    test: redis.test,
    make: async () => {
      // A prefix per subject: no subject sees another's keys.
      const prefix = `t${++prefixes}`;
      const connection = await connect();
      return { locks: new RedisLocks(connection, new RedisKeys(prefix)), held: () => keysUnder(connection, prefix) };
    },
  },
};
const TTL = 1_000;
const MAX = 3;

for (const [name, { test, make }] of Object.entries(subjects)) {
  describe(`Locks contract: ${name}`, () => {
    test("of users racing for a free lock exactly one gets it; the others are told who holds it", async () => {
      const { locks } = await make();
      const results = await Promise.all(["ana", "bob", "cy", "dee"].map((user, i) => locks.acquire("acme", "customer:7", user, `c${i}`, 0, TTL, MAX)));
      const winners = results.filter((r) => r.ok);
      expect(winners).toHaveLength(1);
      const holder = (winners[0] as { lock: { user: string } }).lock.user;
      for (const r of results.filter((r) => !r.ok)) expect(r).toMatchObject({ ok: false, lock: { user: holder } });
    });

    test("the holder renews from any of its connections; the lock then goes with the connection that renewed it", async () => {
      const { locks } = await make();
      expect(await locks.acquire("acme", "doc:1", "ana", "tab1", 0, TTL, MAX)).toMatchObject({ ok: true, renewed: false });
      expect(await locks.acquire("acme", "doc:1", "ana", "tab2", 100, TTL, MAX)).toMatchObject({ ok: true, renewed: true, lock: { connection: "tab2", expiresAt: 1100 } });
      expect(await locks.releaseConnection("acme", "tab1")).toEqual([]);
      expect((await locks.releaseConnection("acme", "tab2")).map((l) => l.resource)).toEqual(["doc:1"]);
      expect(await locks.acquire("acme", "doc:1", "bob", "b1", 200, TTL, MAX)).toMatchObject({ ok: true });
    });

    test("a user holds at most maxPerUser locks; a renewal passes at the quota; a release frees a place", async () => {
      const { locks } = await make();
      for (let i = 0; i < MAX; i++) expect((await locks.acquire("acme", `r:${i}`, "ana", "c", 0, TTL, MAX)).ok).toBe(true);
      expect(await locks.acquire("acme", "r:extra", "ana", "c", 0, TTL, MAX)).toEqual({ ok: false, lock: null, quota: MAX });
      expect((await locks.acquire("acme", "r:0", "ana", "c", 10, TTL, MAX)).ok).toBe(true);
      expect(await locks.release("acme", "r:1", "ana")).toMatchObject({ released: { resource: "r:1" }, heldBy: null });
      expect((await locks.acquire("acme", "r:extra", "ana", "c", 20, TTL, MAX)).ok).toBe(true);
    });

    test("release by another user releases nothing and names the holder; an unheld lock releases nothing", async () => {
      const { locks } = await make();
      await locks.acquire("acme", "doc:2", "ana", "c", 0, TTL, MAX);
      expect(await locks.release("acme", "doc:2", "bob")).toMatchObject({ released: null, heldBy: { user: "ana" } });
      expect(await locks.release("acme", "doc:none", "bob")).toEqual({ released: null, heldBy: null });
    });

    test("a lock not renewed for its TTL is free, and expire hands it out once", async () => {
      const { locks } = await make();
      await locks.acquire("acme", "doc:3", "ana", "c", 0, TTL, MAX);
      expect(await locks.expire(TTL - 1)).toEqual([]);
      const [first, second] = await Promise.all([locks.expire(TTL), locks.expire(TTL)]);
      expect([...first!, ...second!].map((e) => `${e.tenant}/${e.lock.resource}`)).toEqual(["acme/doc:3"]);
      expect(await locks.acquire("acme", "doc:3", "bob", "b", TTL + 1, TTL, MAX)).toMatchObject({ ok: true, lock: { user: "bob" } });
    });

    test("a lock past its TTL is free to acquire even before a sweep expired it", async () => {
      const { locks } = await make();
      await locks.acquire("acme", "doc:5", "ana", "c", 0, TTL, MAX);
      expect(await locks.acquire("acme", "doc:5", "bob", "b", TTL - 1, TTL, MAX)).toMatchObject({ ok: false, lock: { user: "ana" } });
      expect(await locks.acquire("acme", "doc:5", "bob", "b", TTL + 1, TTL, MAX)).toMatchObject({ ok: true, lock: { user: "bob" } });
    });

    test("tenants never share locks: the same resource in two tenants is two locks", async () => {
      const { locks } = await make();
      expect((await locks.acquire("acme", "doc:4", "ana", "c1", 0, TTL, MAX)).ok).toBe(true);
      expect((await locks.acquire("globex", "doc:4", "bob", "c2", 0, TTL, MAX)).ok).toBe(true);
      expect(await locks.releaseConnection("acme", "c2")).toEqual([]);
    });

    test("released, closed-with-their-connection and expired locks leave nothing behind", async () => {
      const { locks, held } = await make();
      for (const [resource, connection] of [["doc:a", "c1"], ["doc:b", "c2"], ["doc:c", "c3"]] as const) await locks.acquire("acme", resource, "ana", connection, 0, TTL, MAX);
      await locks.acquire("acme", "doc:b", "ana", "c4", 10, TTL, MAX);
      if (held) expect(await held()).not.toEqual([]);
      await locks.release("acme", "doc:a", "ana");
      expect((await locks.releaseConnection("acme", "c4")).map((l) => l.resource)).toEqual(["doc:b"]);
      expect((await locks.expire(TTL)).map((e) => e.lock.resource)).toEqual(["doc:c"]);
      expect(await locks.expire(10 * TTL)).toEqual([]);
      if (held) expect(await held()).toEqual([]);
    });
  });
}

describe.if(redis.available)("Locks in Redis: shared by nodes", () => {
  /** Two nodes of one deployment: two connections, one prefix. */
  const twoNodes = async () => {
    const prefix = `t${++prefixes}`;
    const [a, b] = await Promise.all([connect(), connect()]);
    return { a: new RedisLocks(a, new RedisKeys(prefix)), b: new RedisLocks(b, new RedisKeys(prefix)), held: () => keysUnder(a, prefix) };
  };

  test("of users racing for a free lock from two nodes exactly one gets it", async () => {
    const { a, b } = await twoNodes();
    const users = Array.from({ length: 10 }, (_, i) => `u${i}`);
    const results = await Promise.all(users.map((user, i) => (i % 2 === 0 ? a : b).acquire("acme", "customer:7", user, `c${i}`, 0, TTL, MAX)));
    expect(results.filter((r) => r.ok)).toHaveLength(1);
  });

  test("a user racing for many locks from two nodes gets exactly maxPerUser", async () => {
    const { a, b } = await twoNodes();
    const results = await Promise.all(Array.from({ length: 12 }, (_, i) => (i % 2 === 0 ? a : b).acquire("acme", `r:${i}`, "ana", `c${i % 2}`, 0, TTL, MAX)));
    expect(results.filter((r) => r.ok)).toHaveLength(MAX);
    expect(results.filter((r) => !r.ok)).toEqual(Array.from({ length: 12 - MAX }, () => ({ ok: false, lock: null, quota: MAX })));
  });

  test("a lock taken on one node is renewed on another; it then goes with the renewing connection", async () => {
    const { a, b } = await twoNodes();
    await a.acquire("acme", "doc:1", "ana", "tab-on-a", 0, TTL, MAX);
    expect(await b.acquire("acme", "doc:1", "ana", "tab-on-b", 100, TTL, MAX)).toMatchObject({ ok: true, renewed: true, lock: { since: 0, expiresAt: 1100 } });
    expect(await a.releaseConnection("acme", "tab-on-a")).toEqual([]);
    expect(await a.expire(TTL)).toEqual([]);
    expect((await a.releaseConnection("acme", "tab-on-b")).map((l) => l.connection)).toEqual(["tab-on-b"]);
  });

  test("two nodes sweeping at once hand each expired lock out exactly once, across tenants", async () => {
    const { a, b, held } = await twoNodes();
    const taken: string[] = [];
    for (const tenant of ["acme", "globex", "initech"]) {
      for (let i = 0; i < 8; i++) {
        await a.acquire(tenant, `doc:${i}`, `user${i % 4}`, "c", i, TTL, MAX);
        taken.push(`${tenant}/doc:${i}`);
      }
    }
    const sweeps = await Promise.all([a.expire(TTL + 7), b.expire(TTL + 7), a.expire(TTL + 7), b.expire(TTL + 7)]);
    const handedOut = sweeps.flat().map((e) => `${e.tenant}/${e.lock.resource}`);
    expect(handedOut.sort()).toEqual(taken.sort());
    expect(await held()).toEqual([]);
  });

  test("a tenant swept before its later locks are due is swept again when they are", async () => {
    const { a, b } = await twoNodes();
    await a.acquire("acme", "doc:early", "ana", "c", 0, TTL, MAX);
    await b.acquire("acme", "doc:late", "bob", "c", 500, TTL, MAX);
    expect((await b.expire(TTL)).map((e) => e.lock.resource)).toEqual(["doc:early"]);
    expect(await a.expire(TTL + 499)).toEqual([]);
    expect((await a.expire(TTL + 500)).map((e) => e.lock.resource)).toEqual(["doc:late"]);
  });

  test("while Redis is down every call rejects at once instead of waiting", async () => {
    const down = await startRedis();
    try {
      const locks = new RedisLocks(await connect(down.url), new RedisKeys(`t${++prefixes}`));
      await down.kill();
      const started = performance.now();
      await expect(locks.acquire("acme", "doc:1", "ana", "c", 0, TTL, MAX)).rejects.toThrow();
      await expect(locks.release("acme", "doc:1", "ana")).rejects.toThrow();
      await expect(locks.releaseConnection("acme", "c")).rejects.toThrow();
      await expect(locks.expire(TTL)).rejects.toThrow();
      expect(performance.now() - started).toBeLessThan(1000);
    } finally {
      await down.stop();
    }
  });
});
