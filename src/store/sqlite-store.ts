import { Database } from "bun:sqlite";
import { and, eq, inArray, lt, sql } from "drizzle-orm";
import { drizzle, type BunSQLiteDatabase } from "drizzle-orm/bun-sqlite";
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { sqliteMigrations } from "./migrations.macro.ts" with { type: "macro" };
import { apiKeys, idempotency } from "./schema.sqlite.ts";
import { SqliteChatStore } from "./sqlite-chat-store.ts";
import { SqliteNotificationStore } from "./sqlite-notification-store.ts";
import { SqliteAuditStore } from "./sqlite-audit-store.ts";
import { SqliteFeedStore } from "./sqlite-feed-store.ts";
import { SqliteChannelLogStore } from "./sqlite-channel-log-store.ts";
import type { Store, StoredApiKey } from "./store.ts";

type Db = BunSQLiteDatabase<Record<string, never>> & { $client: Database };

/**
 * Applies the embedded drizzle/sqlite migrations, as drizzle's migrator does (same bookkeeping in
 * __drizzle_migrations), but the check of what is applied and the applying are one IMMEDIATE
 * transaction: drizzle's reads the applied migrations before its own BEGIN, so two nodes opening
 * one fresh file at once both applied them, and the second failed on tables that exist.
 */
function migrate(sqlite: Database): void {
  const migrations = sqliteMigrations();
  sqlite
    .transaction(() => {
      sqlite.run("CREATE TABLE IF NOT EXISTS __drizzle_migrations (id SERIAL PRIMARY KEY, hash text NOT NULL, created_at numeric)");
      const last = sqlite.query<{ created_at: number }, []>("SELECT created_at FROM __drizzle_migrations ORDER BY created_at DESC LIMIT 1").get();
      for (const migration of migrations) {
        if (last !== null && Number(last.created_at) >= migration.folderMillis) continue;
        for (const statement of migration.sql) sqlite.run(statement);
        sqlite.run('INSERT INTO __drizzle_migrations ("hash", "created_at") VALUES (?, ?)', [migration.hash, migration.folderMillis]);
      }
    })
    .immediate();
}

/** Opens (creating if needed) the sqlite file in WAL mode and brings its schema up to date. */
export function openSqliteStore(path: string, synchronous: "full" | "normal" = "full"): Store {
  if (path !== ":memory:") mkdirSync(dirname(path), { recursive: true });
  const sqlite = new Database(path, { create: true, strict: true });
  // First: switching a new file to WAL and migrating it wait on another node opening it too.
  sqlite.run("PRAGMA busy_timeout = 5000");
  sqlite.run("PRAGMA journal_mode = WAL");
  sqlite.run(`PRAGMA synchronous = ${synchronous === "full" ? "FULL" : "NORMAL"}`);
  migrate(sqlite);
  const db: Db = drizzle({ client: sqlite });
  // Channel-log commits fsync their WAL off the JS thread (SqliteChannelLogStore) when FULL is asked.
  return new SqliteStore(sqlite, db, synchronous === "full" && path !== ":memory:" ? `${path}-wal` : null);
}

class SqliteStore implements Store {
  private closed = false;
  readonly chat: SqliteChatStore;
  readonly notifications: SqliteNotificationStore;
  readonly audit: SqliteAuditStore;
  readonly feeds: SqliteFeedStore;
  readonly channelLog: SqliteChannelLogStore;
  /** The channel log holds the WAL file open for its fsyncs: closed before the connection. */
  private readonly walSync: SqliteChannelLogStore;

  constructor(
    private readonly sqlite: Database,
    private readonly db: Db,
    walPath: string | null,
  ) {
    this.chat = new SqliteChatStore(db);
    this.notifications = new SqliteNotificationStore(db);
    this.audit = new SqliteAuditStore(db);
    this.feeds = new SqliteFeedStore(db);
    this.channelLog = this.walSync = new SqliteChannelLogStore(db, this.chat, walPath);
  }

  async insertApiKey(key: StoredApiKey): Promise<void> {
    this.db.insert(apiKeys).values(key).run();
  }

  async findApiKey(id: string): Promise<StoredApiKey | null> {
    return this.db.select().from(apiKeys).where(eq(apiKeys.id, id)).get() ?? null;
  }

  async listApiKeys(tenant: string): Promise<StoredApiKey[]> {
    return this.db.select().from(apiKeys).where(eq(apiKeys.tenant, tenant)).all();
  }

  async revokeApiKey(id: string, at: number): Promise<boolean> {
    const updated = this.db.update(apiKeys).set({ revokedAt: at }).where(eq(apiKeys.id, id)).returning({ id: apiKeys.id }).all();
    return updated.length > 0;
  }

  async getIdempotent(tenant: string, keys: readonly string[]): Promise<Map<string, string>> {
    const found = new Map<string, string>();
    // Chunks keep each statement under SQLite's bound-variable limit.
    for (let i = 0; i < keys.length; i += 500) {
      const rows = this.db
        .select({ key: idempotency.key, response: idempotency.response })
        .from(idempotency)
        .where(and(eq(idempotency.tenant, tenant), inArray(idempotency.key, keys.slice(i, i + 500))))
        .all();
      for (const row of rows) found.set(row.key, row.response);
    }
    return found;
  }

  async putIdempotent(entries: readonly { tenant: string; key: string; response: string }[], at: number): Promise<void> {
    if (entries.length === 0) return;
    const rows = entries.map(({ tenant, key, response }) => ({ tenant, key, response, createdAt: at }));
    this.db.transaction((tx) => {
      for (let i = 0; i < rows.length; i += 200) tx.insert(idempotency).values(rows.slice(i, i + 200)).onConflictDoNothing().run();
    });
  }

  async pruneIdempotency(before: number): Promise<number> {
    return this.db.delete(idempotency).where(lt(idempotency.createdAt, before)).returning({ key: idempotency.key }).all().length;
  }

  async ping(): Promise<boolean> {
    if (this.closed) return false;
    try {
      this.db.get(sql`select 1`);
      return true;
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.walSync.close();
    this.sqlite.run("PRAGMA wal_checkpoint(TRUNCATE)");
    this.sqlite.close();
  }
}
