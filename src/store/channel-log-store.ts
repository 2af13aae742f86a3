import type { Deliver, IdempotencyKey, Position } from "../history/history.ts";
import type { NewMessage, StoredMessage } from "./chat-store.ts";

/** One publication of a durable channel to commit (see ChannelLogStore.commit). */
export interface DurableEntry {
  topic: string;
  at: number;
  /** The chat message this publication announces: stored in the same transaction. */
  message?: NewMessage;
  /** The serialized `pub` frame at its position (with the stored message, for a message entry). */
  build(position: Position, stored: StoredMessage | null): string;
  /** Fans the publication out once committed (the history calls it; the store does not). */
  deliver: Deliver;
  /** Stored in the same transaction, answering with the publication's position (`{epoch, offset}` as JSON). */
  idempotency?: IdempotencyKey;
}

/** What a committed entry became; a repeated client_msg_id publishes nothing and takes no offset. */
export type CommittedEntry =
  | { duplicate: false; position: Position; frame: string; message: StoredMessage | null }
  | { duplicate: true; message: StoredMessage };

/**
 * The durable channels' history (history/durable-history.ts keeps it here): per topic its
 * position and its kept publications. The store, not the process, hands out offsets, so any number
 * of writers (several nodes on one database) share a channel without a hole or a repeat.
 *
 * Guarantees, for one writer and for many on one database:
 * - Atomic: `commit` stores a batch of publications (and the chat messages they announce, and the
 *   idempotency keys that answer with them) and moves each topic's position to its last one, in ONE
 *   transaction: a stored position never points past what is stored, a message is never stored
 *   without its publication, a key never without the publication it answers with (an existing
 *   (tenant, key) keeps its first answer), and a failed commit leaves nothing, no offset used up.
 * - Ordered: offsets are assigned inside that transaction from the stored position, which the
 *   transaction holds locked until it ends (a row lock on PostgreSQL, the write lock on sqlite):
 *   commits touching one topic are serialized, and within a commit its entries take consecutive
 *   offsets in entry order. Commits of different topics do not wait for each other (PostgreSQL).
 * - A topic's first commit creates its position under `initialEpoch(topic)`; a `reset` gives it a
 *   random one. Fan-out order across writers is not the store's business: each writer fans out its
 *   own commits in order, and a receiver sees a gap in offsets if another writer's arrive late.
 * Implementations: sqlite-channel-log-store.ts, pg-channel-log-store.ts.
 */
export interface ChannelLogStore {
  /** Where `topic` stands as stored; null when it never had a publication or a reset. */
  position(topic: string): Promise<Position | null>;
  /**
   * Commits `entries` in order in one transaction, assigning each (but a duplicate message, which
   * takes no offset) the next offset of its topic. With `keep` false only positions (and
   * messages) are written: history off.
   */
  commit(entries: readonly DurableEntry[], keep: boolean): Promise<CommittedEntry[]>;
  /**
   * The kept publications of `topic` with `after < offset <= upTo`, stored at or after `minAt`,
   * oldest first, as many as fit in `maxBytes` characters of frames (at least one): a read never
   * holds more than that in memory.
   */
  readFrom(topic: string, after: number, upTo: number, minAt: number, maxBytes: number): Promise<{ offset: number; frame: string }[]>;
  /** A new epoch at offset 0 for `topic`; its kept publications are deleted. */
  reset(topic: string, epoch: string): Promise<void>;
  /** Deletes publications stored before `before`, and those of each listed topic at or below its `upTo`. */
  trim(before: number, topics: readonly { topic: string; upTo: number }[]): Promise<number>;
}

/**
 * The offsets of one commit, from its entries (duplicates already marked null): per topic how many
 * it needs, in a fixed order (sorted: two writers lock rows in the same order, never deadlock).
 */
export function countByTopic(topics: readonly (string | null)[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const topic of topics) if (topic !== null) counts.set(topic, (counts.get(topic) ?? 0) + 1);
  return new Map([...counts].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}
