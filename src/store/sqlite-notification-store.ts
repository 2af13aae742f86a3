import { and, asc, desc, eq, inArray, isNull, lt } from "drizzle-orm";
import type { BunSQLiteDatabase } from "drizzle-orm/bun-sqlite";
import type { NewNotification, NotificationStore, StoredNotification } from "./notification-store.ts";
import { notifications, preferences } from "./schema.sqlite.ts";
import { pruneInBatches } from "./prune.ts";

type Db = BunSQLiteDatabase<Record<string, never>>;

export class SqliteNotificationStore implements NotificationStore {
  constructor(private readonly db: Db) {}

  async insert(tenant: string, rows: readonly NewNotification[]): Promise<StoredNotification[]> {
    if (rows.length === 0) return [];
    const values = rows.map((r) => ({ ...r, tenant, data: r.data === undefined ? null : JSON.stringify(r.data) }));
    return this.db.transaction((tx) => tx.insert(notifications).values(values).returning().all()).map(toNotification);
  }

  async markDelivered(tenant: string, user: string, ids: readonly number[], at: number): Promise<number[]> {
    if (ids.length === 0) return [];
    return this.db
      .update(notifications)
      .set({ deliveredAt: at })
      .where(and(eq(notifications.tenant, tenant), eq(notifications.user, user), inArray(notifications.id, [...ids]), isNull(notifications.deliveredAt)))
      .returning({ id: notifications.id })
      .all()
      .map((r) => r.id);
  }

  async pending(tenant: string, user: string, limit: number): Promise<StoredNotification[]> {
    return this.db
      .select()
      .from(notifications)
      .where(and(eq(notifications.tenant, tenant), eq(notifications.user, user), isNull(notifications.deliveredAt), isNull(notifications.readAt)))
      .orderBy(asc(notifications.id))
      .limit(limit)
      .all()
      .map(toNotification);
  }

  async usersWithPending(): Promise<{ tenant: string; user: string }[]> {
    return this.db
      .selectDistinct({ tenant: notifications.tenant, user: notifications.user })
      .from(notifications)
      .where(and(isNull(notifications.deliveredAt), isNull(notifications.readAt)))
      .all();
  }

  async list(tenant: string, user: string, opts: { unreadOnly: boolean; before: number | null; limit: number }): Promise<StoredNotification[]> {
    return this.db
      .select()
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
      .limit(opts.limit)
      .all()
      .map(toNotification);
  }

  async markRead(tenant: string, user: string, ids: readonly number[] | null, at: number): Promise<number> {
    if (ids !== null && ids.length === 0) return 0;
    return this.db
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
      .returning({ id: notifications.id })
      .all().length;
  }

  async prune(before: number): Promise<number> {
    // The head of the id order, batch by batch, as SqliteChatStore.prune (created_at has no index).
    return pruneInBatches((limit) => {
      const head = this.db
        .select({ id: notifications.id, createdAt: notifications.createdAt })
        .from(notifications)
        .orderBy(notifications.id)
        .limit(limit)
        .as("head");
      const old = this.db.select({ id: head.id }).from(head).where(lt(head.createdAt, before));
      return this.db.delete(notifications).where(inArray(notifications.id, old)).returning({ id: notifications.id }).all().length;
    });
  }

  async mutedCategories(tenant: string, user: string): Promise<string[]> {
    const row = this.db
      .select({ muted: preferences.mutedCategories })
      .from(preferences)
      .where(and(eq(preferences.tenant, tenant), eq(preferences.user, user)))
      .get();
    return row ? (JSON.parse(row.muted) as string[]) : [];
  }

  async setMutedCategories(tenant: string, user: string, categories: readonly string[], at: number): Promise<void> {
    const muted = JSON.stringify([...new Set(categories)]);
    this.db
      .insert(preferences)
      .values({ tenant, user, mutedCategories: muted, updatedAt: at })
      .onConflictDoUpdate({ target: [preferences.tenant, preferences.user], set: { mutedCategories: muted, updatedAt: at } })
      .run();
  }
}

function toNotification(row: typeof notifications.$inferSelect): StoredNotification {
  return {
    id: row.id,
    user: row.user,
    category: row.category,
    title: row.title,
    message: row.message,
    data: row.data === null ? undefined : JSON.parse(row.data),
    action: row.action,
    createdAt: row.createdAt,
    deliveredAt: row.deliveredAt,
    readAt: row.readAt,
  };
}
