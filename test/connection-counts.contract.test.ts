import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { MemoryConnectionCounts, type ConnectionCounts } from "../src/claims/connection-counts.ts";
import { RedisKeys } from "../src/redis/keys.ts";
import type { Redis } from "../src/redis/redis-client.ts";
import { RedisConnectionCounts, type RedisConnectionCountsOptions } from "../src/redis/redis-connection-counts.ts";
import { keysUnder, openConnection, redisTests, startRedis, type RedisServer } from "./support/redis.ts";

// The guarantees written on ConnectionCounts (src/claims/connection-counts.ts), for each
// implementation; then what only the shared (Redis) one can show: two nodes racing, a node that
// died, a node that left, a Redis that restarted empty or is down.

const redis = redisTests();
let server: RedisServer | undefined;
const opened: Redis[] = [];
const nodes: RedisConnectionCounts[] = [];
let prefixes = 0;

beforeAll(async () => {
  if (redis.available) server = await startRedis();
});
afterAll(async () => {
  for (const node of nodes) await node.close();
  for (const connection of opened) connection.disconnect();
  await server?.stop();
});

/** A node's own connection, as connectRedis makes it for sinal. */
function connect(url = server!.url, commandTimeoutMs = 1000): Promise<Redis> {
  return openConnection(url, opened, commandTimeoutMs);
}

/** A started node of the deployment under `prefix`. */
function node(connection: Redis, prefix: string, options: RedisConnectionCountsOptions = {}): RedisConnectionCounts {
  const counts = new RedisConnectionCounts(connection, new RedisKeys(prefix), options);
  nodes.push(counts);
  counts.start();
  return counts;
}

interface Subject {
  counts: ConnectionCounts;
  /** Entries held now, wherever the implementation keeps them (every connection released: 0). */
  held(): Promise<number>;
}

const subjects: Record<string, { test: typeof test; make: () => Promise<Subject> }> = {
  memory: {
    test,
    make: async () => {
      const counts = new MemoryConnectionCounts();
      return { counts, held: async () => counts.size };
    },
  },
  redis: {
    test: redis.test,
    make: async () => {
      // A prefix per subject: no subject sees another's keys.
      const prefix = `t${++prefixes}`;
      const connection = await connect();
      const counts = node(connection, prefix);
      return { counts, held: async () => counts.localSize + (await keysUnder(connection, prefix)).length };
    },
  },
};
const LIMITS = { perUser: 3, perTenant: 5 };

for (const [name, { test, make }] of Object.entries(subjects)) {
  describe(`ConnectionCounts contract: ${name}`, () => {
    test("admits up to the user bound, then refuses naming it; a refusal counts nothing", async () => {
      const { counts, held } = await make();
      const verdicts = [];
      for (let i = 0; i < 5; i++) verdicts.push(await counts.admit("acme", "ana", LIMITS));
      expect(verdicts).toEqual([null, null, null, "user", "user"]);
      expect(await counts.count("acme", "ana")).toEqual({ user: 3, tenant: 3 });
    });

    test("the tenant bound holds across users; another tenant is not counted", async () => {
      const { counts, held } = await make();
      const verdicts = [];
      for (const user of ["a", "b", "c", "d", "e", "f"]) verdicts.push(await counts.admit("acme", user, LIMITS));
      expect(verdicts).toEqual([null, null, null, null, null, "tenant"]);
      expect(await counts.admit("globex", "a", LIMITS)).toBeNull();
      expect(await counts.count("globex", "a")).toEqual({ user: 1, tenant: 1 });
    });

    test("racing admits for the last slots never pass the bound", async () => {
      const { counts, held } = await make();
      const verdicts = await Promise.all(Array.from({ length: 20 }, () => counts.admit("acme", "ana", LIMITS)));
      expect(verdicts.filter((v) => v === null)).toHaveLength(3);
      expect(await counts.count("acme", "ana")).toEqual({ user: 3, tenant: 3 });
    });

    test("a release frees the slot; after every release nothing is held", async () => {
      const { counts, held } = await make();
      for (let i = 0; i < 3; i++) await counts.admit("acme", "ana", LIMITS);
      expect(await counts.admit("acme", "ana", LIMITS)).toBe("user");
      await counts.release("acme", "ana");
      expect(await counts.admit("acme", "ana", LIMITS)).toBeNull();
      for (let i = 0; i < 3; i++) await counts.release("acme", "ana");
      expect(await counts.count("acme", "ana")).toEqual({ user: 0, tenant: 0 });
      expect(await held()).toBe(0);
    });
  });
}

describe.if(redis.available)("ConnectionCounts in Redis: shared by nodes", () => {
  /** Two nodes of one deployment: two connections, one prefix. */
  const twoNodes = async (options: RedisConnectionCountsOptions = {}) => {
    const prefix = `t${++prefixes}`;
    const [a, b] = await Promise.all([connect(), connect()]);
    return { a: node(a, prefix, { nodeId: "a", ...options }), b: node(b, prefix, { nodeId: "b", ...options }), connections: [a, b] as const, held: async () => (await keysUnder(a, prefix)).length };
  };

  test("each node's connections count on every node: the bounds hold across them", async () => {
    const { a, b, held } = await twoNodes();
    expect(await a.admit("acme", "ana", LIMITS)).toBeNull();
    expect(await b.admit("acme", "ana", LIMITS)).toBeNull();
    expect(await a.admit("acme", "ana", LIMITS)).toBeNull();
    expect(await b.admit("acme", "ana", LIMITS)).toBe("user");
    expect(await b.admit("acme", "bob", LIMITS)).toBeNull();
    expect(await a.admit("acme", "bob", LIMITS)).toBeNull();
    expect(await b.admit("acme", "cy", LIMITS)).toBe("tenant");
    expect(await b.count("acme", "ana")).toEqual({ user: 3, tenant: 5 });
    await a.release("acme", "ana");
    expect(await b.admit("acme", "ana", LIMITS)).toBeNull();
    for (const [n, user] of [[a, "ana"], [b, "ana"], [b, "ana"], [b, "bob"], [a, "bob"]] as const) await n.release("acme", user);
    expect(await a.count("acme", "ana")).toEqual({ user: 0, tenant: 0 });
    expect(a.localSize + b.localSize).toBe(0);
    expect(await held()).toBe(0);
  });

  test("admits racing on two nodes for the last slots never pass either bound", async () => {
    const { a, b } = await twoNodes();
    const forUser = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? a : b).admit("acme", "ana", LIMITS)));
    expect(forUser.filter((v) => v === null)).toHaveLength(LIMITS.perUser);
    const forTenant = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? a : b).admit("acme", `u${i}`, LIMITS)));
    expect(forTenant.filter((v) => v === null)).toHaveLength(LIMITS.perTenant - LIMITS.perUser);
    expect(await a.count("acme", "ana")).toEqual({ user: 3, tenant: 5 });
  });

  test("a node that dies (no close, no heartbeat) stops counting within the TTL; a live node keeps counting", async () => {
    const ttlMs = 400;
    const { a, b, connections } = await twoNodes({ heartbeatMs: 50, ttlMs });
    for (let i = 0; i < 3; i++) await a.admit("acme", "ana", LIMITS);
    // Alive for twice the TTL: its heartbeat keeps its counts.
    await Bun.sleep(2 * ttlMs);
    expect(await b.admit("acme", "ana", LIMITS)).toBe("user");
    // It dies: nothing of it reaches Redis any more.
    connections[0].disconnect();
    const died = performance.now();
    await Bun.sleep(100);
    expect(await b.count("acme", "ana")).toEqual({ user: 3, tenant: 3 });
    await Bun.sleep(ttlMs + 100 - (performance.now() - died));
    expect(await b.count("acme", "ana")).toEqual({ user: 0, tenant: 0 });
    expect(await b.admit("acme", "ana", LIMITS)).toBeNull();
  });

  test("a node that closes takes its counts out at once", async () => {
    const { a, b } = await twoNodes();
    for (let i = 0; i < 3; i++) await a.admit("acme", "ana", LIMITS);
    await a.close();
    expect(await b.count("acme", "ana")).toEqual({ user: 0, tenant: 0 });
  });

  test("after Redis restarted empty, a node writes its counts back: at its next admit, and at its next heartbeat", async () => {
    const restarted = await startRedis();
    try {
      const prefix = `t${++prefixes}`;
      const [ca, cb] = await Promise.all([connect(restarted.url), connect(restarted.url)]);
      const a = node(ca, prefix, { nodeId: "a" });
      const b = node(cb, prefix, { nodeId: "b" });
      for (let i = 0; i < 3; i++) await a.admit("acme", "ana", LIMITS);
      await a.admit("globex", "bob", LIMITS);
      await restarted.kill();
      const ready = Promise.all([ca, cb].map((c) => new Promise<void>((resolve) => c.once("ready", () => resolve()))));
      await restarted.start();
      await ready;
      expect(await b.count("acme", "ana")).toEqual({ user: 0, tenant: 0 });
      expect(await a.admit("acme", "ana", LIMITS)).toBe("user");
      expect(await b.count("acme", "ana")).toEqual({ user: 3, tenant: 3 });
      await a.heartbeat();
      expect(await b.count("globex", "bob")).toEqual({ user: 1, tenant: 1 });
      await a.close();
      await b.close();
    } finally {
      await restarted.stop();
    }
  });

  test("an admit that timed out but was applied later is taken out again at the next heartbeat", async () => {
    const prefix = `t${++prefixes}`;
    const a = node(await connect(server!.url, 200), prefix, { nodeId: "a" });
    const b = node(await connect(), prefix, { nodeId: "b" });
    await a.admit("acme", "ana", LIMITS);
    // Redis holds every command for 400 ms: the admit fails after 200 ms, then Redis runs it.
    await (await connect()).client("PAUSE", "400", "ALL");
    await expect(a.admit("acme", "ana", LIMITS)).rejects.toThrow();
    // Sent after the admit on the same connection, so it runs after it.
    await a.heartbeat();
    expect(await b.count("acme", "ana")).toEqual({ user: 1, tenant: 1 });
  });

  test("while Redis is down every call rejects at once instead of waiting, and a heartbeat fails quietly", async () => {
    const down = await startRedis();
    try {
      const counts = node(await connect(down.url), `t${++prefixes}`);
      await counts.admit("acme", "ana", LIMITS);
      await down.kill();
      const started = performance.now();
      await expect(counts.admit("acme", "ana", LIMITS)).rejects.toThrow();
      await expect(counts.release("acme", "ana")).rejects.toThrow();
      await expect(counts.count("acme", "ana")).rejects.toThrow();
      await counts.heartbeat();
      expect(performance.now() - started).toBeLessThan(1000);
      await counts.close();
    } finally {
      await down.stop();
    }
  });
});
