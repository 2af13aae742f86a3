import { and, desc, eq, gt, gte, lt, lte, sql } from "drizzle-orm";
import type { BunSQLiteDatabase } from "drizzle-orm/bun-sqlite";
import type { Position } from "../history/history.ts";
import type { ChannelLogStore, LoggedPublication } from "./channel-log-store.ts";
import { channelLog, channelPositions } from "./schema.sqlite.ts";

type Db = BunSQLiteDatabase<Record<string, never>>;

/** See ChannelLogStore for the guarantees. */
export class SqliteChannelLogStore implements ChannelLogStore {
  private readonly insertPublication;
  private readonly upsertPosition;
  private readonly readRange;

  constructor(private readonly db: Db) {
    // Prepared once: every publication on a durable channel runs these.
    this.insertPublication = db
      .insert(channelLog)
      .values({ topic: sql.placeholder("topic"), offset: sql.placeholder("offset"), frame: sql.placeholder("frame"), at: sql.placeholder("at") })
      .prepare();
    this.upsertPosition = db
      .insert(channelPositions)
      .values({ topic: sql.placeholder("topic"), epoch: sql.placeholder("epoch"), offset: sql.placeholder("offset") })
      .onConflictDoUpdate({ target: channelPositions.topic, set: { epoch: sql`excluded.epoch`, offset: sql`excluded.offset` } })
      .prepare();
    // Every recovery of a durable channel runs this (1,000 clients back from an outage: 1,000 reads).
    this.readRange = db
      .select({ offset: channelLog.offset, frame: channelLog.frame })
      .from(channelLog)
      .where(
        and(
          eq(channelLog.topic, sql.placeholder("topic")),
          gt(channelLog.offset, sql.placeholder("after")),
          lte(channelLog.offset, sql.placeholder("upTo")),
          gte(channelLog.at, sql.placeholder("minAt")),
        ),
      )
      .orderBy(desc(channelLog.offset))
      .limit(sql.placeholder("limit"))
      .prepare();
  }

  async position(topic: string): Promise<Position | null> {
    return this.db.select({ epoch: channelPositions.epoch, offset: channelPositions.offset }).from(channelPositions).where(eq(channelPositions.topic, topic)).get() ?? null;
  }

  async append(publications: readonly LoggedPublication[], keep: boolean): Promise<void> {
    if (publications.length === 0) return;
    const last = new Map<string, LoggedPublication>();
    this.db.transaction(() => {
      for (const p of publications) {
        if (keep) this.insertPublication.run({ topic: p.topic, offset: p.offset, frame: p.frame, at: p.at });
        last.set(p.topic, p);
      }
      for (const p of last.values()) this.upsertPosition.run({ topic: p.topic, epoch: p.epoch, offset: p.offset });
    });
  }

  async read(topic: string, after: number, upTo: number, minAt: number, limit: number): Promise<{ offset: number; frame: string }[]> {
    return this.readRange.all({ topic, after, upTo, minAt, limit }).reverse();
  }

  async reset(topic: string, epoch: string): Promise<void> {
    this.db.transaction((tx) => {
      tx.delete(channelLog).where(eq(channelLog.topic, topic)).run();
      tx.insert(channelPositions).values({ topic, epoch, offset: 0 }).onConflictDoUpdate({ target: channelPositions.topic, set: { epoch, offset: 0 } }).run();
    });
  }

  async trim(before: number, topics: readonly { topic: string; upTo: number }[]): Promise<number> {
    return this.db.transaction((tx) => {
      let deleted = tx.delete(channelLog).where(lt(channelLog.at, before)).returning({ offset: channelLog.offset }).all().length;
      for (const { topic, upTo } of topics) {
        deleted += tx.delete(channelLog).where(and(eq(channelLog.topic, topic), lte(channelLog.offset, upTo))).returning({ offset: channelLog.offset }).all().length;
      }
      return deleted;
    });
  }
}
