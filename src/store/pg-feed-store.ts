import { and, eq, ne, sql } from "drizzle-orm";
import type { FeedPosition, FeedStore } from "./feed-store.ts";
import type { PgDb } from "./pg-db.ts";
import { feedPositions } from "./schema.pg.ts";

/**
 * See FeedStore for the guarantees; one row per feed, replaced in place by an upsert whose update
 * applies only when the stored fence is not above the new one (one statement: atomic across
 * nodes). A cleared position is its row with an empty token (so the fence stays).
 */
export class PgFeedStore implements FeedStore {
  constructor(private readonly db: PgDb) {}

  async get(feed: string): Promise<FeedPosition | null> {
    const hasPosition = and(eq(feedPositions.feed, feed), ne(feedPositions.token, CLEARED));
    const [row] = await this.db.select().from(feedPositions).where(hasPosition).limit(1);
    return row ?? null;
  }

  async save(position: FeedPosition): Promise<boolean> {
    const { feed, source, token, updatedAt, fence } = position;
    const written = await this.db
      .insert(feedPositions)
      .values({ feed, source, token, updatedAt, fence })
      .onConflictDoUpdate({ target: feedPositions.feed, set: { source, token, updatedAt, fence }, setWhere: sql`${feedPositions.fence} <= ${fence}` })
      .returning({ feed: feedPositions.feed });
    return written.length > 0;
  }

  async clear(feed: string, fence: number): Promise<boolean> {
    const cleared = { token: CLEARED, updatedAt: Date.now(), fence };
    const written = await this.db
      .insert(feedPositions)
      .values({ feed, source: "", ...cleared })
      .onConflictDoUpdate({ target: feedPositions.feed, set: cleared, setWhere: sql`${feedPositions.fence} <= ${fence}` })
      .returning({ feed: feedPositions.feed });
    return written.length > 0;
  }
}

/** The token of a cleared position: the row stays for its fence, `get` reports none. */
const CLEARED = "";
