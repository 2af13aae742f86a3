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
 * position and its kept publications. Guarantees: `commit` stores a batch of publications (and the
 * chat messages they announce), moves each topic's position to its last one, in ONE transaction,
 * so a stored position never points past what is stored, a message is never stored without
 * its publication, and an idempotency key never without the publication it answers with (an
 * existing (tenant, key) keeps its first answer). Implementations: sqlite-channel-log-store.ts.
 */
export interface ChannelLogStore {
  /** Where `topic` stands as stored; null when it never had a publication or a reset. */
  position(topic: string): Promise<Position | null>;
  /**
   * Commits `entries` in order in one transaction. Each entry's offset comes from `assign(topic)`,
   * called inside the transaction in entry order (a duplicate message calls nothing). With `keep`
   * false only positions (and messages) are written: history off.
   */
  commit(entries: readonly DurableEntry[], keep: boolean, assign: (topic: string) => Position): Promise<CommittedEntry[]>;
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
