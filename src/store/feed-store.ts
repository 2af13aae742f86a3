/**
 * Positions of the MongoDB feeds (src/feeds/): the resume token after the last change that was
 * published. Guarantee: a token is saved only after every change before it was published, so
 * resuming after it loses nothing and repeats nothing. Implementations: sqlite-feed-store.ts.
 */
export interface FeedPosition {
  /** The feed's configured name. */
  feed: string;
  /** The watched `db.collection`; a position saved for another source is not resumed. */
  source: string;
  /** The resume token as canonical Extended JSON (opaque to the store). */
  token: string;
  updatedAt: number;
}

export interface FeedStore {
  /** The saved position of a feed, or null when it has none (never started, or cleared). */
  get(feed: string): Promise<FeedPosition | null>;
  /** Replaces the feed's position. */
  save(position: FeedPosition): Promise<void>;
  /** Forgets the feed's position (its history was lost: the next start begins from now). */
  clear(feed: string): Promise<void>;
}
