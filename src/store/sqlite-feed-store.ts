import { eq } from "drizzle-orm";
import type { BunSQLiteDatabase } from "drizzle-orm/bun-sqlite";
import type { FeedPosition, FeedStore } from "./feed-store.ts";
import { feedPositions } from "./schema.sqlite.ts";

type Db = BunSQLiteDatabase<Record<string, never>>;

/** See FeedStore for the guarantees; one row per feed, replaced in place. */
export class SqliteFeedStore implements FeedStore {
  constructor(private readonly db: Db) {}

  async get(feed: string): Promise<FeedPosition | null> {
    return this.db.select().from(feedPositions).where(eq(feedPositions.feed, feed)).get() ?? null;
  }

  async save(position: FeedPosition): Promise<void> {
    const { source, token, updatedAt } = position;
    this.db.insert(feedPositions).values(position).onConflictDoUpdate({ target: feedPositions.feed, set: { source, token, updatedAt } }).run();
  }

  async clear(feed: string): Promise<void> {
    this.db.delete(feedPositions).where(eq(feedPositions.feed, feed)).run();
  }
}
