import { afterAll, afterEach, beforeAll, describe, expect } from "bun:test";
import { SQL } from "bun";
import { createHash } from "node:crypto";
import journal from "../drizzle/pg/meta/_journal.json" with { type: "json" };
import { createApiKey } from "../src/auth/api-keys.ts";
import { initialEpoch } from "../src/history/history.ts";
import { openPgStore, type PgStoreOptions } from "../src/store/pg-store.ts";
import { PRUNE_BATCH } from "../src/store/prune.ts";
import type { Store } from "../src/store/store.ts";
import { postgresTests, startPostgres, type Postgres } from "./support/postgres.ts";

// The PostgreSQL store against a throwaway server: the cases of test/store.test.ts (api keys,
// idempotency), test/audit.test.ts and test/retention.test.ts (audit), feed positions, and what
// only a shared database adds (two nodes, concurrent writers, statement timeout, pool size).
// Each test gets a fresh, empty database on the one server of this file.

const { test, available } = postgresTests();
let pg: Postgres | undefined;
let admin: SQL | undefined;
let url: string;
let dbCount = 0;
const opened: Store[] = [];

beforeAll(async () => {
  if (!available) return;
  pg = await startPostgres("sinal_admin");
  admin = new SQL(pg.url, { prepare: false, max: 1 });
}, 90_000);

afterAll(async () => {
  await admin?.close();
  await pg?.stop();
});

afterEach(async () => {
  for (const store of opened.splice(0)) await store.close();
});

/** A fresh empty database; sets `url` to it. */
async function freshDatabase(): Promise<string> {
  const name = `sinal_${++dbCount}`;
  await admin!.unsafe(`CREATE DATABASE ${name}`);
  url = pg!.url.replace(/\/sinal_admin$/, `/${name}`);
  return url;
}

/** Opens a store (a node) on the current test's database; closed after the test. */
async function open(opts: PgStoreOptions = {}): Promise<Store> {
  const store = await openPgStore(url, opts);
  opened.push(store);
  return store;
}

/** A plain connection to the test's database, independent of the store's own code. */
async function inspect<T>(fn: (sql: SQL) => Promise<T>): Promise<T> {
  const sql = new SQL(url, { prepare: false, max: 1 });
  try {
    return await fn(sql);
  } finally {
    await sql.close();
  }
}

describe("openPgStore", () => {
  test("builds the schema from the embedded migrations, and a second open applies none again", async () => {
    await freshDatabase();
    const first = await open();
    const { id } = await createApiKey(first, "acme");
    await first.close();
    const second = await open();
    expect(await second.findApiKey(id)).toMatchObject({ id, tenant: "acme", revokedAt: null });
    const tables = await inspect(async (sql) => (await sql`SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'`) as { table_name: string }[]);
    expect(tables.map((t) => t.table_name)).toEqual(expect.arrayContaining(["api_keys", "idempotency", "audit_log", "feed_positions"]));
    const [applied] = await inspect(async (sql) => (await sql`SELECT count(*)::int AS n FROM drizzle.__drizzle_migrations`) as { n: number }[]);
    expect(applied!.n).toBe(journal.entries.length);
  });

  test("several nodes opening one fresh database at once migrate it once, without failing", async () => {
    await freshDatabase();
    const stores = await Promise.all(Array.from({ length: 4 }, () => open()));
    for (const store of stores) expect(await store.ping()).toBe(true);
    const [applied] = await inspect(async (sql) => (await sql`SELECT count(*)::int AS n FROM drizzle.__drizzle_migrations`) as { n: number }[]);
    expect(applied!.n).toBe(journal.entries.length);
  });

  test("answers ping while open and refuses it after close; close twice is harmless", async () => {
    await freshDatabase();
    const store = await open();
    expect(await store.ping()).toBe(true);
    await store.close();
    expect(await store.ping()).toBe(false);
    await store.close();
    await expect(store.listApiKeys("acme")).rejects.toThrow();
  });

  test("after the server ends every connection, the pool reconnects on the next call", async () => {
    await freshDatabase();
    const store = await open();
    // Every connection of this database is ended by the server: the pool reconnects on the next query.
    await admin!.unsafe(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '${url.split("/").pop()}'`);
    expect(await store.ping()).toBe(true);
  });

  test("statementTimeoutMs cancels a longer statement; poolSize caps the connections", async () => {
    await freshDatabase();
    const store = await open({ statementTimeoutMs: 150, poolSize: 2 });
    const db = (store as unknown as { db: { $client: SQL } }).db.$client;
    const [setting] = (await db`SHOW statement_timeout`) as { statement_timeout: string }[];
    expect(setting!.statement_timeout).toBe("150ms");
    const started = Date.now();
    await expect(db`SELECT pg_sleep(2)`).rejects.toMatchObject({ errno: "57014" });
    expect(Date.now() - started).toBeLessThan(1_500);
    await expect(store.audit.list("acme", { before: null, limit: 1, kind: null })).resolves.toEqual([]);
    const pids = await Promise.all(Array.from({ length: 6 }, () => db`SELECT pg_backend_pid() AS pid, pg_sleep(0.05)`));
    expect(new Set(pids.map((r) => (r as { pid: number }[])[0]!.pid)).size).toBeLessThanOrEqual(2);
  });

  test("a whole store: a room, its message and its publication commit together, and a second node reads them", async () => {
    await freshDatabase();
    const store = await open();
    const other = await open();
    const message = { tenant: "acme", room: "r1", sender: "u1", content: "hi", clientMsgId: null, createdAt: 1764000000000 };
    const [committed] = await store.channelLog.commit(
      [{ topic: "acme/room:r1", at: 1764000000000, message, build: (p) => `{"offset":${p.offset}}`, deliver: () => undefined }],
      true,
    );
    expect(committed).toMatchObject({ duplicate: false, position: { offset: 1 }, message: { content: "hi" } });
    expect(await other.chat.listMessages("acme", "r1", null, 10)).toMatchObject([{ content: "hi", sender: "u1" }]);
    expect(await other.channelLog.position("acme/room:r1")).toEqual({ epoch: initialEpoch("acme/room:r1"), offset: 1 });
    await other.close();
  });
});

describe("api keys", () => {
  test("a stored key row holds the SHA-256 of the secret and never the secret itself", async () => {
    await freshDatabase();
    const store = await open();
    const { id, key } = await createApiKey(store, "acme");
    expect(key).toMatch(/^sk_[0-9a-f]{16}_[A-Za-z0-9_-]{20,}$/);
    const secret = key.slice(`sk_${id}_`.length);
    const [row] = await inspect(async (sql) => (await sql`SELECT * FROM api_keys WHERE id = ${id}`) as Record<string, unknown>[]);
    expect(row!.secret_hash).toBe(createHash("sha256").update(secret).digest("hex"));
    for (const value of Object.values(row!)) {
      expect(String(value)).not.toContain(secret);
      expect(String(value)).not.toContain(key);
    }
  });

  test("lists keys by tenant and revokes only an existing key; times come back as numbers", async () => {
    await freshDatabase();
    const store = await open();
    const a = await createApiKey(store, "acme");
    const g = await createApiKey(store, "globex");
    expect((await store.listApiKeys("acme")).map((k) => k.id)).toEqual([a.id]);
    expect((await store.listApiKeys("globex")).map((k) => k.id)).toEqual([g.id]);

    expect(await store.revokeApiKey(a.id, 1234)).toBe(true);
    expect(await store.findApiKey(a.id)).toMatchObject({ id: a.id, revokedAt: 1234 });
    expect(typeof (await store.findApiKey(a.id))!.createdAt).toBe("number");
    expect(await store.findApiKey(g.id)).toMatchObject({ id: g.id, revokedAt: null });
    expect(await store.revokeApiKey("0000000000000000", 1234)).toBe(false);
    expect(await store.findApiKey("0000000000000000")).toBeNull();
  });
});

describe("idempotency", () => {
  test("a second put for the same tenant and key keeps the first answer", async () => {
    await freshDatabase();
    const store = await open();
    expect((await store.getIdempotent("acme", ["k1"])).get("k1") ?? null).toBeNull();
    await store.putIdempotent([{ tenant: "acme", key: "k1", response: '{"offset":1}' }], 1000);
    await store.putIdempotent([{ tenant: "acme", key: "k1", response: '{"offset":2}' }], 2000);
    expect((await store.getIdempotent("acme", ["k1"])).get("k1") ?? null).toBe('{"offset":1}');
  });

  test("the same key twice in one batch keeps the first; a batch of thousands is read back whole", async () => {
    await freshDatabase();
    const store = await open();
    const many = Array.from({ length: 2_500 }, (_, i) => ({ tenant: "acme", key: `k${i}`, response: String(i) }));
    await store.putIdempotent([{ tenant: "acme", key: "dup", response: "first" }, ...many, { tenant: "acme", key: "dup", response: "second" }], 1000);
    const found = await store.getIdempotent("acme", [...many.map((e) => e.key), "dup", "missing"]);
    expect(found.size).toBe(2_501);
    expect(found.get("dup")).toBe("first");
    expect(found.get("k2499")).toBe("2499");
  });

  test("two concurrent puts of one key (two nodes) keep the first answer and never fail", async () => {
    await freshDatabase();
    const [a, b] = await Promise.all([open(), open()]);
    for (let round = 0; round < 20; round++) {
      const key = `k${round}`;
      // Overlapping batches in opposite orders: no deadlock, one answer per key.
      await Promise.all([
        a.putIdempotent([{ tenant: "acme", key, response: "a" }, { tenant: "acme", key: `${key}x`, response: "a" }], 1000),
        b.putIdempotent([{ tenant: "acme", key: `${key}x`, response: "b" }, { tenant: "acme", key, response: "b" }], 1000),
      ]);
      const seenByA = await a.getIdempotent("acme", [key, `${key}x`]);
      const seenByB = await b.getIdempotent("acme", [key, `${key}x`]);
      expect(seenByA).toEqual(seenByB);
      expect(["a", "b"]).toContain(seenByA.get(key)!);
    }
    // A later put of a stored key, from either node, never replaces the first answer.
    const first = (await a.getIdempotent("acme", ["k0"])).get("k0");
    await b.putIdempotent([{ tenant: "acme", key: "k0", response: "late" }], 2000);
    expect((await a.getIdempotent("acme", ["k0"])).get("k0")).toBe(first!);
  });

  test("the same key in two tenants holds two answers", async () => {
    await freshDatabase();
    const store = await open();
    await store.putIdempotent([{ tenant: "acme", key: "k1", response: '{"offset":1}' }], 1000);
    expect((await store.getIdempotent("globex", ["k1"])).get("k1") ?? null).toBeNull();
    await store.putIdempotent([{ tenant: "globex", key: "k1", response: '{"offset":7}' }], 1000);
    expect((await store.getIdempotent("acme", ["k1"])).get("k1") ?? null).toBe('{"offset":1}');
    expect((await store.getIdempotent("globex", ["k1"])).get("k1") ?? null).toBe('{"offset":7}');
  });

  test("pruneIdempotency deletes only answers created before the cut-off", async () => {
    await freshDatabase();
    const store = await open();
    await store.putIdempotent([{ tenant: "acme", key: "old", response: "1" }], 1000);
    await store.putIdempotent([{ tenant: "globex", key: "old", response: "1" }], 1999);
    await store.putIdempotent([{ tenant: "acme", key: "edge", response: "2" }], 2000);
    await store.putIdempotent([{ tenant: "acme", key: "new", response: "3" }], 3000);

    expect(await store.pruneIdempotency(2000)).toBe(2);
    expect((await store.getIdempotent("acme", ["old"])).get("old") ?? null).toBeNull();
    expect((await store.getIdempotent("globex", ["old"])).get("old") ?? null).toBeNull();
    expect((await store.getIdempotent("acme", ["edge"])).get("edge") ?? null).toBe("2");
    expect((await store.getIdempotent("acme", ["new"])).get("new") ?? null).toBe("3");
    expect(await store.pruneIdempotency(2000)).toBe(0);
  });

  test("answers survive a reopen", async () => {
    await freshDatabase();
    const first = await open();
    await first.putIdempotent([{ tenant: "acme", key: "k1", response: '{"offset":1}' }], 1000);
    await first.close();
    expect((await (await open()).getIdempotent("acme", ["k1", "k2"])).get("k1")).toBe('{"offset":1}');
  });
});

describe("audit", () => {
  test("lists newest first per tenant, with before and kind; detail is stored as a jsonb object", async () => {
    await freshDatabase();
    const store = await open();
    await store.audit.append([
      { tenant: "acme", at: 1, kind: "connect", actor: "user:aud", detail: { client: "c1" } },
      { tenant: "acme", at: 2, kind: "subscribe_denied", actor: "user:aud", detail: { client: "c1", channel: "user:other", code: "forbidden" } },
      { tenant: "globex", at: 3, kind: "connect", actor: "user:g", detail: null },
      { tenant: "acme", at: 4, kind: "disconnect", actor: "user:aud", detail: { client: "c1", code: 4000 } },
      { tenant: "acme", at: 5, kind: "rest_publish", actor: "key:k", detail: { count: 2, channels: ["dept:a", "dept:b"] } },
    ]);
    const all = await store.audit.list("acme", { before: null, limit: 10, kind: null });
    expect(all.map((e) => [e.kind, e.actor, e.detail])).toEqual([
      ["rest_publish", "key:k", { count: 2, channels: ["dept:a", "dept:b"] }],
      ["disconnect", "user:aud", { client: "c1", code: 4000 }],
      ["subscribe_denied", "user:aud", { client: "c1", channel: "user:other", code: "forbidden" }],
      ["connect", "user:aud", { client: "c1" }],
    ]);
    expect(all[0]).toEqual({ id: expect.any(Number), tenant: "acme", at: 5, kind: "rest_publish", actor: "key:k", detail: expect.any(Object) });
    expect((await store.audit.list("acme", { before: null, limit: 5, kind: "connect" })).map((e) => e.at)).toEqual([1]);
    expect((await store.audit.list("acme", { before: all[1]!.id, limit: 1, kind: null })).map((e) => e.kind)).toEqual(["subscribe_denied"]);
    expect((await store.audit.list("globex", { before: null, limit: 10, kind: null })).map((e) => e.detail)).toEqual([null]);
    expect(await store.audit.list("initech", { before: null, limit: 10, kind: null })).toEqual([]);
    const kinds = await inspect(async (sql) => (await sql`SELECT jsonb_typeof(detail) AS t FROM audit_log WHERE detail IS NOT NULL`) as { t: string }[]);
    expect(kinds.map((k) => k.t)).toEqual(["object", "object", "object", "object"]);
  });

  test("retention prunes entries older than the cut-off only, in batches past PRUNE_BATCH", async () => {
    await freshDatabase();
    const store = await open();
    const OLD = 1_000;
    const RECENT = Date.now();
    const row = (at: number) => ({ tenant: "acme", at, kind: "connect", actor: "user:a", detail: { at } });
    await store.audit.append([...Array.from({ length: PRUNE_BATCH + 10 }, () => row(OLD)), row(RECENT)]);
    expect(await store.audit.prune(2_000)).toBe(PRUNE_BATCH + 10);
    expect((await store.audit.list("acme", { before: null, limit: 10, kind: null })).map((e) => e.at)).toEqual([RECENT]);
    expect(await store.audit.prune(2_000)).toBe(0);
  }, 30_000);
});

describe("feed positions", () => {
  test("save replaces, get reads, clear forgets", async () => {
    await freshDatabase();
    const store = await open();
    expect(await store.feeds.get("roulettes")).toBeNull();
    await store.feeds.save({ feed: "roulettes", source: "runcash.roulettes", token: '{"_data":"T1"}', updatedAt: 1000 });
    await store.feeds.save({ feed: "strategies", source: "runcash.strategies", token: '{"_data":"S1"}', updatedAt: 1000 });
    await store.feeds.save({ feed: "roulettes", source: "runcash.other", token: '{"_data":"T2"}', updatedAt: 2000 });
    expect(await store.feeds.get("roulettes")).toEqual({ feed: "roulettes", source: "runcash.other", token: '{"_data":"T2"}', updatedAt: 2000 });
    await store.feeds.clear("roulettes");
    expect(await store.feeds.get("roulettes")).toBeNull();
    expect((await store.feeds.get("strategies"))?.token).toBe('{"_data":"S1"}');
    await store.feeds.clear("nothing");
  });
});

describe("two nodes on one database", () => {
  test("two store instances see each other's writes", async () => {
    await freshDatabase();
    const [a, b] = await Promise.all([open(), open()]);
    const { id } = await createApiKey(a, "acme");
    expect(await b.findApiKey(id)).toMatchObject({ id, tenant: "acme", revokedAt: null });
    expect(await b.revokeApiKey(id, 55)).toBe(true);
    expect(await a.findApiKey(id)).toMatchObject({ revokedAt: 55 });

    await b.putIdempotent([{ tenant: "acme", key: "k", response: "from b" }], 1000);
    expect((await a.getIdempotent("acme", ["k"])).get("k")).toBe("from b");
    expect(await a.pruneIdempotency(2000)).toBe(1);
    expect((await b.getIdempotent("acme", ["k"])).size).toBe(0);

    await a.audit.append([{ tenant: "acme", at: 1, kind: "connect", actor: "user:a", detail: null }]);
    await b.audit.append([{ tenant: "acme", at: 2, kind: "connect", actor: "user:b", detail: null }]);
    expect((await a.audit.list("acme", { before: null, limit: 10, kind: null })).map((e) => e.actor)).toEqual(["user:b", "user:a"]);

    await a.feeds.save({ feed: "f", source: "db.c", token: "t1", updatedAt: 1 });
    expect((await b.feeds.get("f"))?.token).toBe("t1");
    await b.feeds.clear("f");
    expect(await a.feeds.get("f")).toBeNull();
  });
});
