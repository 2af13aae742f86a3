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

  test("answers ping while open and refuses it after close", async () => {
    const store = open();
    expect(await store.ping()).toBe(true);
    await store.close();
    expect(await store.ping()).toBe(false);
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

  test("lists keys by tenant and revokes only an existing key", async () => {
    const store = open();
    const a = await createApiKey(store, "acme");
    const g = await createApiKey(store, "globex");
    expect((await store.listApiKeys("acme")).map((k) => k.id)).toEqual([a.id]);
    expect((await store.listApiKeys("globex")).map((k) => k.id)).toEqual([g.id]);

    expect(await store.revokeApiKey(a.id, 1234)).toBe(true);
    expect(await store.findApiKey(a.id)).toMatchObject({ id: a.id, revokedAt: 1234 });
    expect(await store.findApiKey(g.id)).toMatchObject({ id: g.id, revokedAt: null });
    expect(await store.revokeApiKey("0000000000000000", 1234)).toBe(false);
    expect(await store.findApiKey("0000000000000000")).toBeNull();
  });
});

describe("idempotency", () => {
  test("a second put for the same tenant and key keeps the first answer", async () => {
    const store = open();
    expect((await store.getIdempotent("acme", ["k1"])).get("k1") ?? null).toBeNull();
    await store.putIdempotent([{ tenant: "acme", key: "k1", response: '{"offset":1}' }], 1000);
    await store.putIdempotent([{ tenant: "acme", key: "k1", response: '{"offset":2}' }], 2000);
    expect((await store.getIdempotent("acme", ["k1"])).get("k1") ?? null).toBe('{"offset":1}');
  });

  test("the same key in two tenants holds two answers", async () => {
    const store = open();
    await store.putIdempotent([{ tenant: "acme", key: "k1", response: '{"offset":1}' }], 1000);
    expect((await store.getIdempotent("globex", ["k1"])).get("k1") ?? null).toBeNull();
    await store.putIdempotent([{ tenant: "globex", key: "k1", response: '{"offset":7}' }], 1000);
    expect((await store.getIdempotent("acme", ["k1"])).get("k1") ?? null).toBe('{"offset":1}');
    expect((await store.getIdempotent("globex", ["k1"])).get("k1") ?? null).toBe('{"offset":7}');
  });

  test("pruneIdempotency deletes only answers created before the cut-off", async () => {
    const store = open();
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

  test("answers survive a reopen of the file", async () => {
    const first = open();
    await first.putIdempotent([{ tenant: "acme", key: "k1", response: '{"offset":1}' }], 1000);
    await first.close();
    expect((await open().getIdempotent("acme", ["k1", "k2"])).get("k1")).toBe('{"offset":1}');
  });
});
