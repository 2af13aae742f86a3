import { SQL } from "bun";
import { and, eq, inArray, sql } from "drizzle-orm";
import { drizzle } from "drizzle-orm/bun-sql";
import { pgMigrations } from "./migrations.macro.ts" with { type: "macro" };
import { PgAuditStore } from "./pg-audit-store.ts";
import type { PgDb } from "./pg-db.ts";
import { PgFeedStore } from "./pg-feed-store.ts";
import { apiKeys, idempotency } from "./schema.pg.ts";
import type { Store, StoredApiKey } from "./store.ts";
import { PgChannelLogStore } from "./pg-channel-log-store.ts";
import { PgChatStore } from "./pg-chat-store.ts";
import { PgNotificationStore } from "./pg-notification-store.ts";

export interface PgStoreOptions {
  /** Connections in this node's pool (Bun.SQL `max`; Bun's default is 10). */
  poolSize?: number;
  /**
   * Longest a statement may run, in ms; PostgreSQL cancels it after that (SQLSTATE 57014). Sent as
   * the `statement_timeout` startup parameter of every connection (Bun.SQL's `connection` option).
   * Unset or 0: no limit.
   */
  statementTimeoutMs?: number;
}

/** Any key that identifies sinal's migration lock among other advisory locks of the database. */
const MIGRATION_LOCK = 0x5_11_a1_0001;
/** Rows per INSERT (4 bound values each) and keys per IN list: far under PostgreSQL's 65,535 values. */
const CHUNK = 1_000;

/**
 * Opens a pool on the PostgreSQL at `url`, brings its schema up to date with the embedded
 * drizzle/pg migrations, and resolves with the store. Several nodes may open the same database at
 * once: the migrations run under an advisory lock, one node after another.
 */
export async function openPgStore(url: string, opts: PgStoreOptions = {}): Promise<Store> {
  await migrate(url);
  const connection: Record<string, number> = {};
  if (opts.statementTimeoutMs !== undefined && opts.statementTimeoutMs > 0) connection.statement_timeout = Math.ceil(opts.statementTimeoutMs);
  // prepare:false: with Bun.SQL's default named statements drizzle 0.45 stores jsonb objects as
  // JSON strings (test/postgres-driver.test.ts).
  const client = new SQL(url, { prepare: false, ...(opts.poolSize === undefined ? {} : { max: opts.poolSize }), connection });
  const db: PgDb = drizzle({ client });
  return new PgStore(client, db);
}

/**
 * Applies the embedded migrations (the call drizzle-orm/bun-sql/migrator makes, with the SQL
 * inlined at bundle time) on one dedicated connection holding a session advisory lock: drizzle's
 * migrate alone is not safe when two nodes start together (both see no migration applied, and the
 * second fails creating tables that exist).
 */
async function migrate(url: string): Promise<void> {
  const client = new SQL(url, { prepare: false, max: 1 });
  try {
    await client`SELECT pg_advisory_lock(${MIGRATION_LOCK})`;
    const db = drizzle({ client });
    // @ts-expect-error dialect and session are drizzle internals; this is what drizzle-orm/bun-sql/migrator does.
    await db.dialect.migrate(pgMigrations(), db.session, {});
    await client`SELECT pg_advisory_unlock(${MIGRATION_LOCK})`;
  } finally {
    // Closing the connection releases the lock too, when a migration failed.
    await client.close();
  }
}

class PgStore implements Store {
  private closed = false;
  readonly audit: PgAuditStore;
  readonly feeds: PgFeedStore;
  readonly chat: PgChatStore;
  readonly notifications: PgNotificationStore;
  readonly channelLog: PgChannelLogStore;

  constructor(
    private readonly client: SQL,
    private readonly db: PgDb,
  ) {
    this.audit = new PgAuditStore(db);
    this.feeds = new PgFeedStore(db);
    this.chat = new PgChatStore(db);
    this.notifications = new PgNotificationStore(db);
    this.channelLog = new PgChannelLogStore(db, this.chat);
  }

  async insertApiKey(key: StoredApiKey): Promise<void> {
    const { id, tenant, secretHash, createdAt, revokedAt } = key;
    await this.db.insert(apiKeys).values({ id, tenant, secretHash, createdAt, revokedAt });
  }

  async findApiKey(id: string): Promise<StoredApiKey | null> {
    const [row] = await this.db.select().from(apiKeys).where(eq(apiKeys.id, id)).limit(1);
    return row ?? null;
  }

  async listApiKeys(tenant: string): Promise<StoredApiKey[]> {
    return this.db.select().from(apiKeys).where(eq(apiKeys.tenant, tenant));
  }

  async revokeApiKey(id: string, at: number): Promise<boolean> {
    const updated = await this.db.update(apiKeys).set({ revokedAt: at }).where(eq(apiKeys.id, id)).returning({ id: apiKeys.id });
    return updated.length > 0;
  }

  async getIdempotent(tenant: string, keys: readonly string[]): Promise<Map<string, string>> {
    const found = new Map<string, string>();
    for (let i = 0; i < keys.length; i += CHUNK) {
      const rows = await this.db
        .select({ key: idempotency.key, response: idempotency.response })
        .from(idempotency)
        .where(and(eq(idempotency.tenant, tenant), inArray(idempotency.key, keys.slice(i, i + CHUNK))));
      for (const row of rows) found.set(row.key, row.response);
    }
    return found;
  }

  async putIdempotent(entries: readonly { tenant: string; key: string; response: string }[], at: number): Promise<void> {
    if (entries.length === 0) return;
    // Sorted (stably: a key twice in one batch keeps its first answer) so that two nodes putting
    // overlapping batches wait on each other's keys in one order and never deadlock. A key another
    // transaction is inserting makes this one wait for it, then keep that first answer.
    const rows = entries
      .map(({ tenant, key, response }) => ({ tenant, key, response, createdAt: at }))
      .sort((a, b) => (a.tenant < b.tenant ? -1 : a.tenant > b.tenant ? 1 : a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    if (rows.length <= CHUNK) {
      await this.db.insert(idempotency).values(rows).onConflictDoNothing();
      return;
    }
    await this.db.transaction(async (tx) => {
      for (let i = 0; i < rows.length; i += CHUNK) await tx.insert(idempotency).values(rows.slice(i, i + CHUNK)).onConflictDoNothing();
    });
  }

  async pruneIdempotency(before: number): Promise<number> {
    const rows = (await this.db.execute(sql`
      WITH gone AS (DELETE FROM ${idempotency} WHERE ${idempotency.createdAt} < ${before} RETURNING 1)
      SELECT count(*)::int AS n FROM gone`)) as unknown as { n: number | string }[];
    return Number(rows[0]?.n ?? 0);
  }

  async ping(): Promise<boolean> {
    if (this.closed) return false;
    try {
      await this.db.execute(sql`select 1`);
      return true;
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.client.close();
  }
}
