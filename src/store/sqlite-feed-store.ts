import { and, eq, ne, sql } from "drizzle-orm";
import type { BunSQLiteDatabase } from "drizzle-orm/bun-sqlite";
import type { FeedPosition, FeedStore } from "./feed-store.ts";
import { feedPositions } from "./schema.sqlite.ts";

type Db = BunSQLiteDatabase<Record<string, never>>;

/**
 * See FeedStore for the guarantees; one row per feed, replaced in place by an upsert whose update
 * applies only when the stored fence is not above the new one. A cleared position is its row
 * with an empty token (so the fence stays).
 */
export class SqliteFeedStore implements FeedStore {
  constructor(private readonly db: Db) {}

  async get(feed: string): Promise<FeedPosition | null> {
    const hasPosition = and(eq(feedPositions.feed, feed), ne(feedPositions.token, CLEARED));
    return this.db.select().from(feedPositions).where(hasPosition).get() ?? null;
  }

  async save(position: FeedPosition): Promise<boolean> {
    const { feed, source, token, updatedAt, fence } = position;
    const written = this.db
      .insert(feedPositions)
      .values({ feed, source, token, updatedAt, fence })
      .onConflictDoUpdate({ target: feedPositions.feed, set: { source, token, updatedAt, fence }, setWhere: sql`${feedPositions.fence} <= ${fence}` })
      .returning({ feed: feedPositions.feed })
      .all();
    return written.length > 0;
  }

  async clear(feed: string, fence: number): Promise<boolean> {
    const cleared = { token: CLEARED, updatedAt: Date.now(), fence };
    const written = this.db
      .insert(feedPositions)
      .values({ feed, source: "", ...cleared })
      .onConflictDoUpdate({ target: feedPositions.feed, set: cleared, setWhere: sql`${feedPositions.fence} <= ${fence}` })
      .returning({ feed: feedPositions.feed })
      .all();
    return written.length > 0;
  }
}

/** The token of a cleared position: the row stays for its fence, `get` reports none. */
const CLEARED = "";
