import { Database } from "bun:sqlite";
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import journal from "../drizzle/sqlite/meta/_journal.json" with { type: "json" };
import { createApiKey } from "../src/auth/api-keys.ts";
import { openSqliteStore } from "../src/store/sqlite-store.ts";
import type { Store } from "../src/store/store.ts";

// What only the sqlite store has: its file, WAL mode, its migration bookkeeping, the bytes it
// writes. What every store does is in the contract suites (test/contract/, test/*.contract.test.ts).

let dir: string;
let path: string;
const opened: Store[] = [];

/** Opens the store under test; every store opened here is closed after the test. */
function open(): Store {
  const store = openSqliteStore(path);
  opened.push(store);
  return store;
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "sinal-store-"));
  path = join(dir, "nested", "sinal.db");
});

afterEach(async () => {
  for (const store of opened.splice(0)) await store.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Reads the file with a plain sqlite connection, independent of the store's own code. */
function inspect<T>(fn: (db: Database) => T): T {
  const db = new Database(path, { readonly: true });
  try {
    return fn(db);
  } finally {
    db.close();
  }
}

describe("openSqliteStore", () => {
  test("creates the file, its folder and the schema from the embedded migrations", () => {
    open();
    const tables = inspect((db) =>
      db
        .query<{ name: string }, []>("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .all()
        .map((r) => r.name),
    );
    expect(tables).toEqual(expect.arrayContaining(["__drizzle_migrations", "api_keys", "idempotency"]));
    const columns = inspect((db) =>
      db
        .query<{ name: string }, []>("PRAGMA table_info(api_keys)")
        .all()
        .map((r) => r.name),
    );
    expect(columns).toEqual(["id", "tenant", "secret_hash", "created_at", "revoked_at"]);
    const applied = inspect((db) => db.query<{ n: number }, []>("SELECT count(*) AS n FROM __drizzle_migrations").get()!.n);
    expect(applied).toBe(journal.entries.length);
  });

  test("puts the database in WAL mode", () => {
    open();
    const mode = inspect((db) => db.query<{ journal_mode: string }, []>("PRAGMA journal_mode").get()!.journal_mode);
    expect(mode).toBe("wal");
  });

  test("reopening the same file keeps the keys and does not apply the migrations again", async () => {
    const first = open();
    const { id } = await createApiKey(first, "acme");
    await first.close();

    const second = open();
    expect(await second.findApiKey(id)).toMatchObject({ id, tenant: "acme", revokedAt: null });
    expect((await second.listApiKeys("acme")).map((k) => k.id)).toEqual([id]);
    const applied = inspect((db) => db.query<{ n: number }, []>("SELECT count(*) AS n FROM __drizzle_migrations").get()!.n);
    expect(applied).toBe(journal.entries.length);
  });
});

describe("synchronous=full with room commits fsynced off the JS thread", () => {
  // The store's own connection (private): whether it is back on FULL is what other writes get.
  const synchronousOf = (store: Store) => (store as unknown as { sqlite: Database }).sqlite.query<{ synchronous: number }, []>("PRAGMA synchronous").get()!.synchronous;
  const entry = (topic: string, at: number) => ({ topic, at, build: (p: { offset: number }) => `{"offset":${p.offset}}`, deliver: () => undefined });

  test("a channel-log commit leaves the connection on FULL (2) for every other write, also when it fails", async () => {
    const store = open();
    expect(synchronousOf(store)).toBe(2);
    const [committed] = await store.channelLog.commit([entry("acme/room:1", 1)], true);
    expect(committed).toMatchObject({ duplicate: false, position: { offset: 1 } });
    expect(synchronousOf(store)).toBe(2);
    // A NOT NULL column left null fails inside the transaction.
    await expect(store.channelLog.commit([entry("acme/room:1", null as unknown as number)], true)).rejects.toThrow();
    expect(synchronousOf(store)).toBe(2);
    expect(await store.channelLog.position("acme/room:1")).toMatchObject({ offset: 1 });
  });

  test("with SQLITE_SYNCHRONOUS=normal the connection stays on NORMAL (1)", async () => {
    const store = openSqliteStore(path, "normal");
    opened.push(store);
    await store.channelLog.commit([entry("acme/room:1", 1)], true);
    expect(synchronousOf(store)).toBe(1);
  });
});

describe("api keys", () => {
  test("a stored key row holds the SHA-256 of the secret and never the secret itself", async () => {
    const store = open();
    const { id, key } = await createApiKey(store, "acme");
    expect(key).toMatch(/^sk_[0-9a-f]{16}_[A-Za-z0-9_-]{20,}$/);
    const secret = key.slice(`sk_${id}_`.length);
    expect(key).toBe(`sk_${id}_${secret}`);

    const row = inspect((db) => db.query<Record<string, unknown>, [string]>("SELECT * FROM api_keys WHERE id = ?").get(id))!;
    expect(row.secret_hash).toBe(createHash("sha256").update(secret).digest("hex"));
    for (const value of Object.values(row)) {
      expect(String(value)).not.toContain(secret);
      expect(String(value)).not.toContain(key);
    }

    await store.close();
    // Every file sqlite wrote (main file, -wal, -shm) is free of the secret.
    const files = readdirSync(join(dir, "nested"));
    expect(files).toContain("sinal.db");
    for (const file of files) expect(readFileSync(join(dir, "nested", file)).includes(secret)).toBe(false);
  });
});
