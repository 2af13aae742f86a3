import { afterAll, beforeAll, describe, expect, test as bunTest } from "bun:test";
import type { Leases } from "../src/cluster/lease.ts";
import { MemoryLeases } from "../src/cluster/memory-leases.ts";
import { RedisKeys } from "../src/redis/keys.ts";
import { RedisLeases } from "../src/redis/redis-leases.ts";
import { connectRedis, openRedis, type Redis } from "../src/redis/redis-client.ts";
import { redisTests, startRedis, type RedisServer } from "./support/redis.ts";

// The guarantees written on Leases (src/cluster/lease.ts), for each implementation: memory (one
// node) and Redis (a real redis-server for this file; every test on a key prefix of its own).

const redis = redisTests();
let server: RedisServer | null = null;
const opened: Redis[] = [];
let prefixes = 0;
const COMMAND_TIMEOUT_MS = 300;

beforeAll(async () => {
  if (redis.available) server = await startRedis();
});
afterAll(async () => {
  for (const connection of opened) connection.disconnect();
  await server?.stop();
});

interface Subject {
  test: typeof bunTest;
  /** `count` nodes' views of one set of leases, fresh for each call (Redis: one connection each, one new key prefix). */
  nodes(count: number): Promise<Leases[]>;
}

const subjects: Record<string, Subject> = {
  memory: {
    test: bunTest,
    async nodes(count) {
      const leases = new MemoryLeases();
      return Array.from({ length: count }, () => leases);
    },
  },
  redis: {
    test: redis.test,
    async nodes(count) {
      const keys = new RedisKeys(`t${++prefixes}`);
      return Promise.all(Array.from({ length: count }, async () => (await openNode(keys)).leases));
    },
  },
};

async function openNode(keys: RedisKeys): Promise<{ leases: RedisLeases; connection: Redis }> {
  const connection = connectRedis({ url: server!.url, commandTimeoutMs: COMMAND_TIMEOUT_MS, prefix: keys.prefix }, "test");
  opened.push(connection);
  await openRedis(connection, 5000);
  return { leases: new RedisLeases(connection, keys), connection };
}

const TTL = 300;

for (const [name, subject] of Object.entries(subjects)) {
  const test = subject.test;
  describe(`Leases contract: ${name}`, () => {
    test("of nodes racing for a free lease exactly one gets a token, the others null", async () => {
      const nodes = await subject.nodes(6);
      const tokens = await Promise.all(nodes.map((leases, i) => leases.acquire("feed:a", `node${i}`, TTL)));
      expect(tokens.filter((t) => t !== null)).toHaveLength(1);
      expect(tokens.filter((t) => t === null)).toHaveLength(5);
    });

    test("the holder's renewal keeps the lease past its first TTL; a renewal with a stale token or by another holder fails", async () => {
      const [a, b] = await subject.nodes(2);
      const token = (await a!.acquire("feed:a", "node-a", TTL))!;
      expect(token).toBeNumber();
      for (let i = 0; i < 3; i++) {
        await Bun.sleep(TTL / 2);
        expect(await a!.renew("feed:a", "node-a", token, TTL)).toBe(true);
      }
      // 1.5 TTL after the acquire: held only thanks to the renewals.
      expect(await b!.acquire("feed:a", "node-b", TTL)).toBeNull();
      expect(await a!.renew("feed:a", "node-a", token - 1, TTL)).toBe(false);
      expect(await b!.renew("feed:a", "node-b", token, TTL)).toBe(false);
    });

    test("a holder that stops renewing loses the lease after its TTL: another takes it with a higher token, and the stale holder can neither renew nor release", async () => {
      const [a, b] = await subject.nodes(2);
      const first = (await a!.acquire("feed:a", "node-a", TTL))!;
      expect(await b!.acquire("feed:a", "node-b", TTL)).toBeNull();
      await Bun.sleep(TTL + 50);
      const second = (await b!.acquire("feed:a", "node-b", TTL))!;
      expect(second).toBeGreaterThan(first);
      expect(await a!.renew("feed:a", "node-a", first, TTL)).toBe(false);
      expect(await a!.release("feed:a", "node-a", first)).toBe(false);
      expect(await a!.acquire("feed:a", "node-a", TTL)).toBeNull();
      expect(await b!.renew("feed:a", "node-b", second, TTL)).toBe(true);
    });

    test("only the holder, with its token, releases; a released lease is free at once", async () => {
      const [a, b] = await subject.nodes(2);
      const token = (await a!.acquire("feed:a", "node-a", 60_000))!;
      expect(await b!.release("feed:a", "node-b", token)).toBe(false);
      expect(await a!.release("feed:a", "node-a", token + 1)).toBe(false);
      expect(await b!.acquire("feed:a", "node-b", 60_000)).toBeNull();
      expect(await a!.release("feed:a", "node-a", token)).toBe(true);
      expect(await a!.release("feed:a", "node-a", token)).toBe(false);
      expect(await b!.acquire("feed:a", "node-b", 60_000)).toBeGreaterThan(token);
    });

    test("the holder acquiring again starts a new holding with a higher token; its old token is stale", async () => {
      const [a] = await subject.nodes(1);
      const first = (await a!.acquire("feed:a", "node-a", 60_000))!;
      const second = (await a!.acquire("feed:a", "node-a", 60_000))!;
      expect(second).toBeGreaterThan(first);
      expect(await a!.renew("feed:a", "node-a", first, 60_000)).toBe(false);
      expect(await a!.release("feed:a", "node-a", first)).toBe(false);
      expect(await a!.renew("feed:a", "node-a", second, 60_000)).toBe(true);
    });

    test("a token is at least the wall clock in ms at the acquire, and the next holding's is above it even within the same ms", async () => {
      const [a] = await subject.nodes(1);
      const before = Date.now();
      const tokens = [];
      for (let i = 0; i < 5; i++) tokens.push((await a!.acquire("feed:a", "node-a", 60_000))!);
      expect(tokens[0]!).toBeGreaterThanOrEqual(before);
      expect(Number.isSafeInteger(tokens[0]!)).toBe(true);
      for (let i = 1; i < tokens.length; i++) expect(tokens[i]!).toBeGreaterThan(tokens[i - 1]!);
    });

    test("leases of different names are independent", async () => {
      const [a, b] = await subject.nodes(2);
      expect(await a!.acquire("feed:a", "node-a", 60_000)).toBeNumber();
      expect(await b!.acquire("feed:b", "node-b", 60_000)).toBeNumber();
      expect(await b!.acquire("feed:a", "node-b", 60_000)).toBeNull();
    });
  });
}

describe("Leases across restarts", () => {
  bunTest("memory: a restarted process's tokens are above its predecessor's, whose fenced writes would otherwise refuse them", async () => {
    const before = new MemoryLeases();
    const tokens = [];
    for (let i = 0; i < 3; i++) tokens.push((await before.acquire("feed:a", "node-a", 60_000))!);
    // Three tokens in a row may run up to 2 ms ahead of the clock; a process takes longer to restart.
    await Bun.sleep(5);
    const after = new MemoryLeases();
    expect((await after.acquire("feed:a", "node-a", 60_000))!).toBeGreaterThan(tokens.at(-1)!);
  });

  redis.test("Redis: a fencing counter behind the clock (an earlier run's, before memory leases ran) gives the clock; one ahead of it goes on counting", async () => {
    const keys = new RedisKeys(`t${++prefixes}`);
    const { leases, connection } = await openNode(keys);
    await connection.set(keys.cluster("fence", "feed:a"), "5");
    const before = Date.now();
    const first = (await leases.acquire("feed:a", "node-a", 60_000))!;
    expect(first).toBeGreaterThanOrEqual(before);
    const ahead = Date.now() + 3_600_000;
    await connection.set(keys.cluster("fence", "feed:a"), String(ahead));
    expect(await leases.acquire("feed:a", "node-a", 60_000)).toBe(ahead + 1);
    expect(await connection.get(keys.cluster("fence", "feed:a"))).toBe(String(ahead + 1));
  });
});

describe("Leases on Redis: Redis down", () => {
  redis.test("while Redis is down every call rejects within the command timeout; back (empty), the lease is free and the next token is still higher", async () => {
    const { leases: a, connection } = await openNode(new RedisKeys(`t${++prefixes}`));
    const first = (await a!.acquire("feed:a", "node-a", 60_000))!;
    await server!.kill();
    const calls: [string, () => Promise<unknown>][] = [
      ["acquire", () => a!.acquire("feed:a", "node-a", 60_000)],
      ["renew", () => a!.renew("feed:a", "node-a", first, 60_000)],
      ["release", () => a!.release("feed:a", "node-a", first)],
    ];
    for (const [, call] of calls) {
      const started = performance.now();
      await expect(call()).rejects.toThrow();
      expect(performance.now() - started).toBeLessThan(COMMAND_TIMEOUT_MS + 200);
    }

    const back = new Promise<void>((resolve) => connection.once("ready", () => resolve()));
    await server!.start();
    await back;
    // Redis came back without its data (no persistence here): the holding is gone, and the fencing
    // counter starts again from Redis's clock, above every token given before.
    expect(await a!.renew("feed:a", "node-a", first, 60_000)).toBe(false);
    const second = (await a!.acquire("feed:a", "node-b", 60_000))!;
    expect(second).toBeGreaterThan(first);
  });

  redis.test("a silent Redis (accepts, never answers) fails a renewal after the command timeout", async () => {
    const [a] = await subjects.redis!.nodes(1);
    const token = (await a!.acquire("feed:a", "node-a", 60_000))!;
    // CLIENT PAUSE holds every command of every client for the given time: Redis answers nothing.
    const other = connectRedis({ url: server!.url, commandTimeoutMs: 2000, prefix: "x" }, "pauser");
    opened.push(other);
    await openRedis(other, 5000);
    await other.call("CLIENT", "PAUSE", "1000", "ALL");
    const started = performance.now();
    await expect(a!.renew("feed:a", "node-a", token, 60_000)).rejects.toThrow();
    const took = performance.now() - started;
    expect(took).toBeGreaterThanOrEqual(COMMAND_TIMEOUT_MS - 50);
    expect(took).toBeLessThan(COMMAND_TIMEOUT_MS + 300);
    await Bun.sleep(1000 - took + 50);
    expect(await a!.renew("feed:a", "node-a", token, 60_000)).toBe(true);
  });
});
