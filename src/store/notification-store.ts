/**
 * Per-user notifications and notification preferences. Every call is scoped by tenant and user.
 * Implementations: sqlite-notification-store.ts.
 */
export interface StoredNotification {
  id: number;
  user: string;
  category: string;
  title: string;
  message: string;
  data: unknown;
  action: string | null;
  createdAt: number;
  /** When it was pushed to a live connection, or stored muted (never to be pushed); null: pending. */
  deliveredAt: number | null;
  readAt: number | null;
}

export type NewNotification = Omit<StoredNotification, "id" | "readAt">;

export interface NotificationStore {
  /** Stores one row per recipient in one transaction; returns them with their ids, in order. */
  insert(tenant: string, rows: readonly NewNotification[]): Promise<StoredNotification[]>;
  /** Marks the given ids delivered if they were still pending; returns the ids it changed. */
  markDelivered(tenant: string, user: string, ids: readonly number[], at: number): Promise<number[]>;
  /** Pending (not yet delivered) notifications of the user, oldest first. */
  pending(tenant: string, user: string, limit: number): Promise<StoredNotification[]>;
  /** Every (tenant, user) with at least one pending notification. */
  usersWithPending(): Promise<{ tenant: string; user: string }[]>;
  /** Newest first; `before` excludes ids >= before. */
  list(tenant: string, user: string, opts: { unreadOnly: boolean; before: number | null; limit: number }): Promise<StoredNotification[]>;
  /** Marks ids (or all when null) read; returns how many changed. */
  markRead(tenant: string, user: string, ids: readonly number[] | null, at: number): Promise<number>;
  /**
   * Deletes notifications created before `before` (ms), all tenants, read or not, delivered or
   * pending, oldest first, in bounded batches that leave the event loop free between them;
   * resolves with how many went. Same ordering caveat as ChatStore.prune.
   */
  prune(before: number): Promise<number>;
  mutedCategories(tenant: string, user: string): Promise<string[]>;
  setMutedCategories(tenant: string, user: string, categories: readonly string[], at: number): Promise<void>;
}
