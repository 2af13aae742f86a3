import { eq } from "drizzle-orm";
import type { FeedPosition, FeedStore } from "./feed-store.ts";
import type { PgDb } from "./pg-db.ts";
import { feedPositions } from "./schema.pg.ts";

/** See FeedStore for the guarantees; one row per feed, replaced in place (an upsert: atomic across nodes). */
export class PgFeedStore implements FeedStore {
  constructor(private readonly db: PgDb) {}

  async get(feed: string): Promise<FeedPosition | null> {
    const [row] = await this.db.select().from(feedPositions).where(eq(feedPositions.feed, feed)).limit(1);
    return row ?? null;
  }

  async save(position: FeedPosition): Promise<void> {
    const { feed, source, token, updatedAt } = position;
    await this.db
      .insert(feedPositions)
      .values({ feed, source, token, updatedAt })
      .onConflictDoUpdate({ target: feedPositions.feed, set: { source, token, updatedAt } });
  }

  async clear(feed: string): Promise<void> {
    await this.db.delete(feedPositions).where(eq(feedPositions.feed, feed));
  }
}
