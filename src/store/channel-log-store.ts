import type { Position } from "../history/history.ts";

/** One kept publication of a durable channel. */
export interface LoggedPublication {
  topic: string;
  epoch: string;
  offset: number;
  /** The serialized `pub` frame, as sent to clients. */
  frame: string;
  at: number;
}

/**
 * The durable channels' history (history/durable-history.ts keeps it here): per topic its
 * position and its kept publications. Guarantees: `append` stores the publications and moves
 * each topic's position to its last one in ONE transaction, so a stored position never points
 * past what is stored. Implementations: sqlite-channel-log-store.ts.
 */
export interface ChannelLogStore {
  /** Where `topic` stands as stored; null when it never had a publication or a reset. */
  position(topic: string): Promise<Position | null>;
  /**
   * Moves the topics' positions to their last publication and, with `keep`, stores the
   * publications (in order, any topics). Without it only positions are written (history off).
   */
  append(publications: readonly LoggedPublication[], keep: boolean): Promise<void>;
  /**
   * The kept publications of `topic` with `after < offset <= upTo`, stored at or after `minAt`,
   * oldest first, at most the last `limit` of them.
   */
  read(topic: string, after: number, upTo: number, minAt: number, limit: number): Promise<{ offset: number; frame: string }[]>;
  /** A new epoch at offset 0 for `topic`; its kept publications are deleted. */
  reset(topic: string, epoch: string): Promise<void>;
  /** Deletes publications stored before `before`, and those of each listed topic at or below its `upTo`. */
  trim(before: number, topics: readonly { topic: string; upTo: number }[]): Promise<number>;
}
