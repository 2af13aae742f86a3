import { and, asc, eq, gt, gte, lt, lte, sql } from "drizzle-orm";
import { initialEpoch, type Position } from "../history/history.ts";
import { countByTopic, type ChannelLogStore, type CommittedEntry, type DurableEntry } from "./channel-log-store.ts";
import type { NewMessage, StoredMessage } from "./chat-store.ts";
import type { PgDb } from "./pg-db.ts";
import { channelLog, channelPositions, idempotency } from "./schema.pg.ts";

/** An open transaction of a PgDb (what `db.transaction(async (tx) => ...)` hands its callback). */
import type { PgTx } from "./pg-chat-store.ts";
export type { PgTx };

/** What the channel log needs of the chat store: storing messages inside its transaction. */
export interface PgChatWithin {
  /** Stores messages in `tx`, ids in batch order; a repeated client_msg_id returns the first copy as a duplicate. */
  insertWithin(tx: PgTx, messages: readonly NewMessage[]): Promise<{ message: StoredMessage; duplicate: boolean }[]>;
}

/** Rows per multi-row INSERT: 4 parameters each, well under PostgreSQL's 65,535 per statement. */
const INSERT_CHUNK = 1_000;
/** Rows per read of a range: readFrom never holds more than this beyond its byte budget. */
const READ_PAGE = 100;

/** See ChannelLogStore for the guarantees; one PostgreSQL transaction per commit. */
export class PgChannelLogStore implements ChannelLogStore {
  constructor(
    private readonly db: PgDb,
    private readonly chat: PgChatWithin,
  ) {}

  async position(topic: string): Promise<Position | null> {
    const [row] = await this.db.select({ epoch: channelPositions.epoch, offset: channelPositions.offset }).from(channelPositions).where(eq(channelPositions.topic, topic));
    return row ?? null;
  }

  async commit(entries: readonly DurableEntry[], keep: boolean): Promise<CommittedEntry[]> {
    if (entries.length === 0) return [];
    return this.db.transaction(async (tx) => {
      // Messages first, in one statement: a duplicate client_msg_id takes no offset.
      const withMessage = entries.flatMap((entry) => (entry.message === undefined ? [] : [entry.message]));
      const storedMessages = await this.chat.insertWithin(tx, withMessage);
      let m = 0;
      const stored = entries.map((entry) => (entry.message === undefined ? null : storedMessages[m++]!));
      const next = await this.advance(tx, countByTopic(entries.map((entry, i) => (stored[i]?.duplicate ? null : entry.topic))));
      const out: CommittedEntry[] = [];
      const publications: (typeof channelLog.$inferInsert)[] = [];
      const keys: (typeof idempotency.$inferInsert)[] = [];
      for (let i = 0; i < entries.length; i++) {
        const entry = entries[i]!;
        const message = stored[i];
        if (message?.duplicate) {
          out.push({ duplicate: true, message: message.message });
          continue;
        }
        const last = next.get(entry.topic)!;
        const position = { epoch: last.epoch, offset: last.offset + 1 };
        next.set(entry.topic, position);
        const frame = entry.build(position, message?.message ?? null);
        if (keep) publications.push({ topic: entry.topic, offset: position.offset, frame, at: entry.at });
        if (entry.idempotency !== undefined) {
          keys.push({ tenant: entry.idempotency.tenant, key: entry.idempotency.key, response: JSON.stringify({ offset: position.offset, epoch: position.epoch }), createdAt: entry.at });
        }
        out.push({ duplicate: false, position, frame, message: message?.message ?? null });
      }
      // Same transaction, fewer round trips: the rows of the whole batch in multi-row statements.
      for (let i = 0; i < publications.length; i += INSERT_CHUNK) {
        await tx.insert(channelLog).values(publications.slice(i, i + INSERT_CHUNK));
      }
      // An existing (tenant, key) keeps its first answer (also a key repeated within this batch).
      for (let i = 0; i < keys.length; i += INSERT_CHUNK) {
        await tx.insert(idempotency).values(keys.slice(i, i + INSERT_CHUNK)).onConflictDoNothing();
      }
      return out;
    });
  }

  /**
   * Moves each topic's position on by its count, in one statement per chunk of topics, and answers
   * where each stood before (its next offset is one past it). The rows stay locked until the
   * transaction ends: another writer's commit of these topics waits, then continues from here.
   */
  private async advance(tx: PgTx, counts: Map<string, number>): Promise<Map<string, Position>> {
    const before = new Map<string, Position>();
    const rows = [...counts].map(([topic, count]) => ({ topic, epoch: initialEpoch(topic), offset: count }));
    for (let i = 0; i < rows.length; i += INSERT_CHUNK) {
      const tops = await tx
        .insert(channelPositions)
        .values(rows.slice(i, i + INSERT_CHUNK))
        .onConflictDoUpdate({ target: channelPositions.topic, set: { offset: sql`${channelPositions.offset} + excluded."offset"` } })
        .returning({ topic: channelPositions.topic, epoch: channelPositions.epoch, offset: channelPositions.offset });
      for (const top of tops) before.set(top.topic, { epoch: top.epoch, offset: top.offset - counts.get(top.topic)! });
    }
    return before;
  }

  async readFrom(topic: string, after: number, upTo: number, minAt: number, maxBytes: number): Promise<{ offset: number; frame: string }[]> {
    const rows: { offset: number; frame: string }[] = [];
    let bytes = 0;
    let cursor = after;
    // Page by page on the (topic, offset) key: a read stops at its byte budget, whatever the range holds.
    for (;;) {
      const limit = maxBytes <= 0 ? 1 : READ_PAGE;
      const page = await this.db
        .select({ offset: channelLog.offset, frame: channelLog.frame })
        .from(channelLog)
        .where(and(eq(channelLog.topic, topic), gt(channelLog.offset, cursor), lte(channelLog.offset, upTo), gte(channelLog.at, minAt)))
        .orderBy(asc(channelLog.offset))
        .limit(limit);
      for (const row of page) {
        bytes += row.frame.length;
        if (bytes > maxBytes && rows.length > 0) return rows;
        rows.push(row);
      }
      if (page.length < limit || maxBytes <= 0) return rows;
      cursor = page.at(-1)!.offset;
    }
  }

  async reset(topic: string, epoch: string): Promise<void> {
    await this.db.transaction(async (tx) => {
      await tx.delete(channelLog).where(eq(channelLog.topic, topic));
      await tx.insert(channelPositions).values({ topic, epoch, offset: 0 }).onConflictDoUpdate({ target: channelPositions.topic, set: { epoch, offset: 0 } });
    });
  }

  async trim(before: number, topics: readonly { topic: string; upTo: number }[]): Promise<number> {
    return this.db.transaction(async (tx) => {
      let deleted = (await tx.delete(channelLog).where(lt(channelLog.at, before)).returning({ offset: channelLog.offset })).length;
      for (const { topic, upTo } of topics) {
        deleted += (await tx.delete(channelLog).where(and(eq(channelLog.topic, topic), lte(channelLog.offset, upTo))).returning({ offset: channelLog.offset })).length;
      }
      return deleted;
    });
  }
}
