import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { MemoryKeyClaims, type KeyClaims } from "../src/claims/key-claims.ts";
import { RedisKeys } from "../src/redis/keys.ts";
import type { Redis } from "../src/redis/redis-client.ts";
import { RedisKeyClaims } from "../src/redis/redis-key-claims.ts";
import { keysUnder, openConnection, redisTests, startRedis, type RedisServer } from "./support/redis.ts";

// The guarantees written on KeyClaims (src/claims/key-claims.ts), for each implementation; then
// what only the shared (Redis) one can show: two nodes, a node that died, a Redis that is down.

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
  claims: KeyClaims;
  /** Keys held now, wherever the implementation keeps them (every claim released: 0). */
  held(): Promise<number>;
}

const subjects: Record<string, { test: typeof test; make: () => Promise<Subject> }> = {
  memory: {
    test,
    make: async () => {
      const claims = new MemoryKeyClaims();
      return { claims, held: async () => claims.size };
    },
  },
  redis: {
    test: redis.test,
    make: async () => {
      // A prefix per subject: no subject sees another's keys.
      const prefix = `t${++prefixes}`;
      const connection = await connect();
      const claims = new RedisKeyClaims(connection, new RedisKeys(prefix));
      return { claims, held: async () => claims.localSize + (await keysUnder(connection, prefix)).length };
    },
  },
};

for (const [name, { test, make }] of Object.entries(subjects)) {
  describe(`KeyClaims contract: ${name}`, () => {
    test("a held key makes a second acquire wait until it is released", async () => {
      const { claims, held } = await make();
      const order: string[] = [];
      const first = await claims.acquire(["t\u0000k1"], 60_000);
      const second = claims.acquire(["t\u0000k1"], 60_000).then((release) => {
        order.push("second holds");
        return release;
      });
      await Bun.sleep(20);
      order.push("first releases");
      await first();
      await (await second)();
      expect(order).toEqual(["first releases", "second holds"]);
      expect(await held()).toBe(0);
    });

    test("overlapping key sets in any order: each holder has all its keys or none, and every request gets through", async () => {
      const { claims, held } = await make();
      const holding = new Map<string, string>();
      const clashes: string[] = [];
      const request = async (id: string, keys: string[]) => {
        const release = await claims.acquire(keys, 60_000);
        for (const k of keys) {
          if (holding.has(k)) clashes.push(`${id} and ${holding.get(k)} both hold ${k}`);
          holding.set(k, id);
        }
        await Bun.sleep(1);
        for (const k of keys) holding.delete(k);
        await release();
      };
      await Promise.all(Array.from({ length: 60 }, (_, i) => request(`r${i}`, i % 2 === 0 ? ["a", "b", `own${i}`] : ["b", "a"])));
      expect(clashes).toEqual([]);
      expect(await held()).toBe(0);
    });

    test("different keys do not wait for each other", async () => {
      const { claims, held } = await make();
      const a = await claims.acquire(["x"], 60_000);
      const b = await Promise.race([claims.acquire(["y"], 60_000), Bun.sleep(200).then(() => null)]);
      expect(b).not.toBeNull();
      await a();
      await b!();
      expect(await held()).toBe(0);
    });
  });
}

describe.if(redis.available)("KeyClaims in Redis: shared by nodes", () => {
  /** Two nodes of one deployment: two connections, one prefix. */
  const twoNodes = async () => {
    const keys = new RedisKeys(`t${++prefixes}`);
    const [a, b] = await Promise.all([connect(), connect()]);
    return { keys, a: new RedisKeyClaims(a, keys), b: new RedisKeyClaims(b, keys), connections: [a, b] as const };
  };

  test("a key held on one node makes the other node wait until it is released", async () => {
    const { a, b, keys, connections } = await twoNodes();
    const order: string[] = [];
    const first = await a.acquire(["acme\u0000k"], 60_000);
    const second = b.acquire(["acme\u0000k"], 60_000).then((release) => {
      order.push("b holds");
      return release;
    });
    await Bun.sleep(50);
    order.push("a releases");
    await first();
    await (await second)();
    expect(order).toEqual(["a releases", "b holds"]);
    expect((await keysUnder(connections[0], keys.prefix)).length).toBe(0);
  });

  test("requests on two nodes with overlapping keys in any order: never two holders of a key, every request gets through", async () => {
    const { a, b, keys, connections } = await twoNodes();
    const holding = new Map<string, string>();
    const clashes: string[] = [];
    const request = async (id: string, claims: KeyClaims, wanted: string[]) => {
      const release = await claims.acquire(wanted, 60_000);
      for (const k of wanted) {
        if (holding.has(k)) clashes.push(`${id} and ${holding.get(k)} both hold ${k}`);
        holding.set(k, id);
      }
      await Bun.sleep(1);
      for (const k of wanted) holding.delete(k);
      await release();
    };
    const wanted = (i: number) => (i % 2 === 0 ? ["acme\u0000a", "acme\u0000b", `acme\u0000own${i}`] : ["acme\u0000b", "acme\u0000a"]);
    await Promise.all(Array.from({ length: 40 }, (_, i) => request(`r${i}`, i % 4 < 2 ? a : b, wanted(i))));
    expect(clashes).toEqual([]);
    expect(a.localSize + b.localSize).toBe(0);
    expect((await keysUnder(connections[0], keys.prefix)).length).toBe(0);
  });

  test("the claim of a node that died lapses after ttlMs, and the other node then gets the key", async () => {
    const { a, b, connections } = await twoNodes();
    await a.acquire(["acme\u0000k"], 300);
    const started = performance.now();
    // The holder dies: it never releases.
    connections[0].disconnect();
    const release = await b.acquire(["acme\u0000k"], 60_000);
    const waited = performance.now() - started;
    expect(waited).toBeGreaterThanOrEqual(250);
    expect(waited).toBeLessThan(300 + 500);
    await release();
  });

  test("a release after the claim lapsed deletes nothing: the key is the next holder's", async () => {
    const { a, b, keys, connections } = await twoNodes();
    const late = await a.acquire(["acme\u0000k"], 100);
    const next = await b.acquire(["acme\u0000k"], 60_000);
    await late();
    expect(await connections[0].get(keys.tenant("acme", "claim", "k"))).not.toBeNull();
    const third = a.acquire(["acme\u0000k"], 60_000);
    expect(await Promise.race([third, Bun.sleep(150).then(() => "still waiting" as const)])).toBe("still waiting");
    await next();
    await (await third)();
    expect((await keysUnder(connections[0], keys.prefix)).length).toBe(0);
  });

  test("while Redis is down acquire rejects at once instead of waiting, and holds nothing on the node", async () => {
    const down = await startRedis();
    try {
      const claims = new RedisKeyClaims(await connect(down.url), new RedisKeys(`t${++prefixes}`));
      await down.kill();
      const started = performance.now();
      await expect(claims.acquire(["acme\u0000k"], 60_000)).rejects.toThrow();
      expect(performance.now() - started).toBeLessThan(1000);
      expect(claims.localSize).toBe(0);
    } finally {
      await down.stop();
    }
  });
});
