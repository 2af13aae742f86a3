/**
 * Positions of the MongoDB feeds (src/feeds/): the resume token after the last change that was
 * published. Guarantees:
 * - A token is saved only after every change before it was published, so resuming after it loses
 *   nothing and repeats nothing.
 * - Writes are fenced: each carries the fencing token of the feed's lease held by its writer
 *   (src/cluster/lease.ts), and the store keeps the highest fence it was written with. A `save` or
 *   `clear` with a lower fence than the stored one changes nothing and answers false, so a stale
 *   leader (its lease expired while it was paused, or its write was slow) cannot overwrite what a
 *   newer leader wrote. Check and write are one atomic statement, across nodes on a shared store.
 * - `clear` keeps the fence: after a clear with fence N, a save with a fence below N is refused
 *   and `get` stays null.
 * Implementations: sqlite-feed-store.ts, pg-feed-store.ts.
 */
export interface FeedPosition {
  /** The feed's configured name. */
  feed: string;
  /** The watched `db.collection`; a position saved for another source is not resumed. */
  source: string;
  /** The resume token as canonical Extended JSON (opaque to the store; never empty). */
  token: string;
  updatedAt: number;
  /** Fencing token of the lease under which it was written (an integer, at least 0). */
  fence: number;
}

export interface FeedStore {
  /** The saved position of a feed, or null when it has none (never started, or cleared). */
  get(feed: string): Promise<FeedPosition | null>;
  /** Replaces the feed's position unless it was written with a higher fence: whether it did. */
  save(position: FeedPosition): Promise<boolean>;
  /**
   * Forgets the feed's position (its history was lost: the next start begins from now) unless it
   * was written with a higher fence, and records `fence` as the feed's fence: whether it did.
   */
  clear(feed: string, fence: number): Promise<boolean>;
}
