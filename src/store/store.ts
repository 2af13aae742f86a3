/**
 * Durable state of one node (or of the cluster, with a shared database).
 * Every call is scoped by tenant where the data belongs to one.
 * Implementations: sqlite-store.ts (bun:sqlite, the embedded default).
 * Each concept has its own interface (chat-store.ts ...), reached through a field of Store.
 */
export interface StoredApiKey {
  id: string;
  tenant: string;
  /** Hex SHA-256 of the key's secret part. */
  secretHash: string;
  createdAt: number;
  revokedAt: number | null;
}

import type { ChatStore } from "./chat-store.ts";
import type { NotificationStore } from "./notification-store.ts";
import type { AuditStore } from "./audit-store.ts";
import type { FeedStore } from "./feed-store.ts";
import type { ChannelLogStore } from "./channel-log-store.ts";

export interface Store {
  readonly audit: AuditStore;
  readonly chat: ChatStore;
  readonly notifications: NotificationStore;
  readonly feeds: FeedStore;
  readonly channelLog: ChannelLogStore;

  insertApiKey(key: StoredApiKey): Promise<void>;
  findApiKey(id: string): Promise<StoredApiKey | null>;
  listApiKeys(tenant: string): Promise<StoredApiKey[]>;
  /** Marks a key revoked; false when no such key exists. */
  revokeApiKey(id: string, at: number): Promise<boolean>;

  /** The stored first answers of those of `keys` that have one (one query for a whole batch). */
  getIdempotent(tenant: string, keys: readonly string[]): Promise<Map<string, string>>;
  /** Keeps the first answers, in one transaction; a (tenant, key) already stored keeps its first answer. */
  putIdempotent(entries: readonly { tenant: string; key: string; response: string }[], at: number): Promise<void>;
  /** Deletes answers created before `before` (ms); returns how many went. */
  pruneIdempotency(before: number): Promise<number>;

  /** Resolves true when the store answers a trivial query. */
  ping(): Promise<boolean>;
  /** Flushes and closes; later calls fail. */
  close(): Promise<void>;
}
