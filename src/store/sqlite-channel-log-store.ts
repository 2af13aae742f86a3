import { and, desc, eq, gt, gte, lt, lte, sql } from "drizzle-orm";
import type { Database } from "bun:sqlite";
import { open, type FileHandle } from "node:fs/promises";
import type { BunSQLiteDatabase } from "drizzle-orm/bun-sqlite";
import { initialEpoch, type Position } from "../history/history.ts";
import { countByTopic, type ChannelLogStore, type CommittedEntry, type DurableEntry } from "./channel-log-store.ts";
import type { SqliteChatStore } from "./sqlite-chat-store.ts";
import { channelLog, channelPositions } from "./schema.sqlite.ts";

type Db = BunSQLiteDatabase<Record<string, never>> & { $client: Database };

/**
 * See ChannelLogStore for the guarantees.
 *
 * Durability off the JS thread: with synchronous=FULL every commit would block the thread that
 * also fans out for an fsync (0.2-1.3 ms on the disks measured). Instead a commit runs its
 * transaction under synchronous=NORMAL (WAL frames written to the page cache, no fsync; sqlite
 * documents WAL with NORMAL as never corrupting the database), then fdatasyncs the WAL file through
 * node:fs on Bun's I/O threads, and only then resolves: the history delivers and the caller
 * answers after the fsync, so nothing is published or acknowledged that a power loss could take
 * back. Every other write of the connection keeps synchronous=FULL (the pragma is switched back
 * in the same synchronous step). Readers of the log go no further than what was delivered
 * (DurableHistory's positions), so no reader sees a publication before its fsync either.
 */
export class SqliteChannelLogStore implements ChannelLogStore {
  private readonly insertPublication;
  private readonly advancePosition;
  private readonly readRange;
  private readonly insertKey;

  /** The WAL file, opened at the first commit that needs its fsync. */
  private wal: FileHandle | null = null;

  constructor(
    private readonly db: Db,
    private readonly chat: SqliteChatStore,
    /** The WAL file to fsync after each commit; null when the connection does not fsync (synchronous=NORMAL, an in-memory database). */
    private readonly walPath: string | null = null,
  ) {
    // Every publication on a durable channel (every chat message) runs these: plain bun:sqlite
    // statements, without drizzle's per-call mapping, which cost as much as the insert itself.
    const sqlite = db.$client;
    this.insertPublication = sqlite.prepare<void, [string, number, string, number]>('INSERT INTO channel_log (topic, "offset", frame, at) VALUES (?, ?, ?, ?)');
    // Moves a topic's position on by the offsets a commit needs and answers where it now stands.
    this.advancePosition = sqlite.prepare<Position, [string, string, number]>(
      'INSERT INTO channel_positions (topic, epoch, "offset") VALUES (?, ?, ?) ON CONFLICT (topic) DO UPDATE SET "offset" = channel_positions."offset" + excluded."offset" RETURNING epoch, "offset"',
    );
    this.insertKey = sqlite.prepare<void, [string, string, string, number]>(
      "INSERT INTO idempotency (tenant, key, response, created_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
    );
    // Every recovery of a durable channel runs this (1,000 clients back from an outage: 1,000 reads).
    this.readRange = sqlite.prepare<{ offset: number; frame: string }, [string, number, number, number]>(
      'SELECT "offset", frame FROM channel_log WHERE topic = ? AND "offset" > ? AND "offset" <= ? AND at >= ? ORDER BY "offset"',
    );
  }

  async position(topic: string): Promise<Position | null> {
    return this.db.select({ epoch: channelPositions.epoch, offset: channelPositions.offset }).from(channelPositions).where(eq(channelPositions.topic, topic)).get() ?? null;
  }

  async commit(entries: readonly DurableEntry[], keep: boolean): Promise<CommittedEntry[]> {
    if (entries.length === 0) return [];
    const created: string[] = [];
    let committed: CommittedEntry[];
    // Run as text each time: sqlite applies `PRAGMA synchronous` when the statement is prepared.
    if (this.walPath !== null) this.db.$client.run("PRAGMA synchronous = NORMAL");
    try {
      // IMMEDIATE: the write lock from the first statement, so another process's commit waits
      // (busy_timeout) instead of failing this one's upgrade from reader to writer.
      committed = this.db.transaction(() => this.commitWithin(entries, keep, created), { behavior: "immediate" });
    } catch (err) {
      this.chat.forgetRooms(created);
      throw err;
    } finally {
      if (this.walPath !== null) this.db.$client.run("PRAGMA synchronous = FULL");
    }
    if (this.walPath !== null) {
      this.wal ??= await open(this.walPath, "r+");
      // fdatasync, as sqlite itself syncs its WAL on Linux: the data and the size that finds it, not the times.
      await this.wal.datasync();
    }
    return committed;
  }

  /** Closes the WAL file handle (before the store closes its connection). */
  async close(): Promise<void> {
    const wal = this.wal;
    this.wal = null;
    await wal?.close();
  }

  /** Messages first (a duplicate takes no offset), then each topic's position moved on once, then the publications. */
  private commitWithin(entries: readonly DurableEntry[], keep: boolean, created: string[]): CommittedEntry[] {
    const stored = entries.map((entry) => (entry.message === undefined ? null : this.chat.insertWithin(entry.message, created)));
    const next = new Map<string, Position>();
    for (const [topic, count] of countByTopic(entries.map((entry, i) => (stored[i]?.duplicate ? null : entry.topic)))) {
      const top = this.advancePosition.get(topic, initialEpoch(topic), count)!;
      next.set(topic, { epoch: top.epoch, offset: top.offset - count });
    }
    return entries.map((entry, i): CommittedEntry => {
      const message = stored[i];
      if (message?.duplicate) return { duplicate: true, message: message.message };
      const last = next.get(entry.topic)!;
      const position = { epoch: last.epoch, offset: last.offset + 1 };
      next.set(entry.topic, position);
      const frame = entry.build(position, message?.message ?? null);
      if (keep) this.insertPublication.run(entry.topic, position.offset, frame, entry.at);
      if (entry.idempotency !== undefined) {
        this.insertKey.run(entry.idempotency.tenant, entry.idempotency.key, JSON.stringify({ offset: position.offset, epoch: position.epoch }), entry.at);
      }
      return { duplicate: false, position, frame, message: message?.message ?? null };
    });
  }

  async readFrom(topic: string, after: number, upTo: number, minAt: number, maxBytes: number): Promise<{ offset: number; frame: string }[]> {
    const rows: { offset: number; frame: string }[] = [];
    let bytes = 0;
    // One row at a time: a page stops at its byte budget, whatever the range holds.
    for (const row of this.readRange.iterate(topic, after, upTo, minAt)) {
      bytes += row.frame.length;
      if (bytes > maxBytes && rows.length > 0) break;
      rows.push(row);
    }
    return rows;
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
