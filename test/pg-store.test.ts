import { afterAll, afterEach, beforeAll, describe, expect } from "bun:test";
import { SQL } from "bun";
import journal from "../drizzle/pg/meta/_journal.json" with { type: "json" };
import { createApiKey } from "../src/auth/api-keys.ts";
import { initialEpoch } from "../src/history/history.ts";
import { openPgStore, type PgStoreOptions } from "../src/store/pg-store.ts";
import type { Store } from "../src/store/store.ts";
import { postgresTests, startPostgres, type Postgres } from "./support/postgres.ts";

// What only the PostgreSQL store has, against a throwaway server: its migrations under an advisory
// lock, reconnection, statement timeout and pool size, jsonb columns, and the whole store's
// channel-log commit read by a second node. What every store does is in the contract suites
// (test/contract/, test/*.contract.test.ts). Each test gets a fresh, empty database.

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

describe("audit", () => {
  test("detail is stored as a jsonb object, not a JSON string", async () => {
    await freshDatabase();
    const store = await open();
    await store.audit.append([
      { tenant: "acme", at: 1, kind: "connect", actor: "user:aud", detail: { client: "c1" } },
      { tenant: "acme", at: 2, kind: "rest_publish", actor: "key:k", detail: { count: 2, channels: ["dept:a", "dept:b"] } },
      { tenant: "acme", at: 3, kind: "connect", actor: "user:g", detail: null },
    ]);
    const kinds = await inspect(async (sql) => (await sql`SELECT jsonb_typeof(detail) AS t FROM audit_log ORDER BY id`) as { t: string | null }[]);
    expect(kinds.map((k) => k.t)).toEqual(["object", "object", null]);
  });
});
