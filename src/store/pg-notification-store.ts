import { and, asc, desc, eq, getTableColumns, inArray, isNull, lt, sql } from "drizzle-orm";
import type { NewNotification, NotificationStore, StoredNotification } from "./notification-store.ts";
import type { PgDb } from "./pg-db.ts";
import { notifications, preferences } from "./schema.pg.ts";
import { PRUNE_BATCH, pruneInBatches } from "./prune.ts";

/**
 * NotificationStore on PostgreSQL, shared by every node: see NotificationStore for the contract.
 * `data` and the muted categories are jsonb holding the values themselves (a JSON `null` in
 * `data` is stored as the jsonb null, so it reads back as null, as with SQLite; no data is SQL NULL).
 */
/**
 * Every column, and whether `data` is SQL NULL: the driver reads the jsonb null and SQL NULL
 * both as null, and they mean "null" and "no data" (undefined).
 */
const columns = { ...getTableColumns(notifications), noData: sql<boolean>`${notifications.data} IS NULL`.as("no_data") };
type Row = typeof notifications.$inferSelect & { noData: boolean };

export class PgNotificationStore implements NotificationStore {
  constructor(private readonly db: PgDb) {
    this.pendingQuery = pendingQuery(db);
  }

  async insert(tenant: string, rows: readonly NewNotification[]): Promise<StoredNotification[]> {
    if (rows.length === 0) return [];
    const values = rows.map((r) => ({ ...r, tenant, data: r.data === undefined ? null : r.data === null ? sql`'null'::jsonb` : r.data }));
    // One statement: atomic on its own, and RETURNING keeps the VALUES order (ids from one sequence).
    const inserted = await this.db.insert(notifications).values(values).returning(columns);
    return inserted.sort((a, b) => a.id - b.id).map(toNotification);
  }

  /**
   * The claim of a push: only a still pending row is changed, and PostgreSQL re-checks
   * `delivered_at IS NULL` after waiting on a row another node is updating, so of two nodes
   * racing on one notification exactly one gets its id back (and pushes it).
   */
  async markDelivered(tenant: string, user: string, ids: readonly number[], at: number): Promise<number[]> {
    if (ids.length === 0) return [];
    const rows = await this.db
      .update(notifications)
      .set({ deliveredAt: at })
      .where(and(eq(notifications.tenant, tenant), eq(notifications.user, user), inArray(notifications.id, [...ids]), isNull(notifications.deliveredAt)))
      .returning({ id: notifications.id });
    return rows.map((r) => r.id).sort((a, b) => a - b);
  }

  async pending(tenant: string, user: string, limit: number): Promise<StoredNotification[]> {
    const rows = await this.pendingQuery.execute({ tenant, user, limit });
    return rows.map(toNotification);
  }

  /**
   * Asked at every connect: built once (drizzle builds a query's SQL anew at each call, which was
   * a sixth of a cluster node's CPU per connection opened).
   */
  private readonly pendingQuery: ReturnType<typeof pendingQuery>;

  async usersWithPending(): Promise<{ tenant: string; user: string }[]> {
    return this.db
      .selectDistinct({ tenant: notifications.tenant, user: notifications.user })
      .from(notifications)
      .where(and(isNull(notifications.deliveredAt), isNull(notifications.readAt)));
  }

  async list(tenant: string, user: string, opts: { unreadOnly: boolean; before: number | null; limit: number }): Promise<StoredNotification[]> {
    const rows = await this.db
      .select(columns)
      .from(notifications)
      .where(
        and(
          eq(notifications.tenant, tenant),
          eq(notifications.user, user),
          opts.unreadOnly ? isNull(notifications.readAt) : undefined,
          opts.before === null ? undefined : lt(notifications.id, opts.before),
        ),
      )
      .orderBy(desc(notifications.id))
      .limit(opts.limit);
    return rows.map(toNotification);
  }

  async markRead(tenant: string, user: string, ids: readonly number[] | null, at: number): Promise<number> {
    if (ids !== null && ids.length === 0) return 0;
    const rows = await this.db
      .update(notifications)
      .set({ readAt: at })
      .where(
        and(
          eq(notifications.tenant, tenant),
          eq(notifications.user, user),
          isNull(notifications.readAt),
          ids === null ? undefined : inArray(notifications.id, [...ids]),
        ),
      )
      .returning({ id: notifications.id });
    return rows.length;
  }

  async prune(before: number, limit = PRUNE_BATCH): Promise<number> {
    // The head of the id order, batch by batch, as SqliteNotificationStore.prune (created_at has
    // no index): each statement deletes at most `limit` rows, each its own short transaction.
    return pruneInBatches(async (batch) => {
      const head = this.db.select({ id: notifications.id, createdAt: notifications.createdAt }).from(notifications).orderBy(notifications.id).limit(batch).as("head");
      const old = this.db.select({ id: head.id }).from(head).where(lt(head.createdAt, before));
      return (await this.db.delete(notifications).where(inArray(notifications.id, old)).returning({ id: notifications.id })).length;
    }, limit);
  }

  async mutedCategories(tenant: string, user: string): Promise<string[]> {
    const [row] = await this.db
      .select({ muted: preferences.mutedCategories })
      .from(preferences)
      .where(and(eq(preferences.tenant, tenant), eq(preferences.user, user)));
    return row ? row.muted : [];
  }

  async setMutedCategories(tenant: string, user: string, categories: readonly string[], at: number): Promise<void> {
    const muted = [...new Set(categories)];
    await this.db
      .insert(preferences)
      .values({ tenant, user, mutedCategories: muted, updatedAt: at })
      .onConflictDoUpdate({ target: [preferences.tenant, preferences.user], set: { mutedCategories: muted, updatedAt: at } });
  }
}

function toNotification(row: Row): StoredNotification {
  return {
    id: row.id,
    user: row.user,
    category: row.category,
    title: row.title,
    message: row.message,
    data: row.noData ? undefined : row.data,
    action: row.action,
    createdAt: row.createdAt,
    deliveredAt: row.deliveredAt,
    readAt: row.readAt,
  };
}

function pendingQuery(db: PgDb) {
  return db
    .select(columns)
    .from(notifications)
    .where(and(eq(notifications.tenant, sql.placeholder("tenant")), eq(notifications.user, sql.placeholder("user")), isNull(notifications.deliveredAt), isNull(notifications.readAt)))
    .orderBy(asc(notifications.id))
    .limit(sql.placeholder("limit"))
    .prepare("notifications_pending");
}
