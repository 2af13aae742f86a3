import { and, asc, desc, eq, gt, inArray, lt, ne, sql } from "drizzle-orm";
import type { ChatStore, NewMessage, RoomChange, StoredMessage, StoredRoom } from "./chat-store.ts";
import type { PgDb } from "./pg-db.ts";
import { messages, readReceipts, roomMembers, rooms } from "./schema.pg.ts";
import { PRUNE_BATCH, pruneInBatches } from "./prune.ts";

/** A drizzle transaction of PgDb: what `insertWithin` writes in (the channel log store's own). */
export type PgTx = Parameters<Parameters<PgDb["transaction"]>[0]>[0];

/** The database or one of its transactions: reads and writes that run on either. */
type PgExecutor = PgDb | PgTx;

/**
 * A duplicate's first copy may be pruned between the insert that saw it and the select that reads
 * it; the insert is then tried again. More rounds than this means something else is wrong.
 */
const DUPLICATE_ROUNDS = 3;

/**
 * ChatStore on PostgreSQL, for several nodes writing one database. No in-process state: rooms are
 * created with INSERT ... ON CONFLICT DO NOTHING on every message, and a repeated client_msg_id is
 * resolved by the unique index (messages_client_msg_idx), so two nodes racing the same message
 * both end with the copy that committed first.
 */
export class PgChatStore implements ChatStore {
  constructor(
    private readonly db: PgDb,
    /** Rows one prune statement deletes at most (tests lower it). */
    private readonly pruneBatch = PRUNE_BATCH,
  ) {}

  async insertMessages(batch: readonly NewMessage[]): Promise<{ message: StoredMessage; duplicate: boolean }[]> {
    if (batch.length === 0) return [];
    return this.db.transaction((tx) => this.insertWithin(tx, batch));
  }

  /**
   * Stores messages inside the caller's open transaction (the PostgreSQL channel log store writes
   * the rooms' `new_message` publications in the same commit), creating their rooms if missing;
   * ids follow the batch order. Nothing to undo on rollback: this store keeps no memory of what
   * it wrote.
   */
  async insertWithin(tx: PgTx, batch: readonly NewMessage[]): Promise<{ message: StoredMessage; duplicate: boolean }[]> {
    if (batch.length === 0) return [];
    await ensureRooms(tx, batch);
    return insertAll(tx, batch);
  }

  async listMessages(tenant: string, room: string, before: number | null, limit: number): Promise<StoredMessage[]> {
    const where = and(eq(messages.tenant, tenant), eq(messages.room, room), before === null ? undefined : lt(messages.id, before));
    const rows = await this.db.select().from(messages).where(where).orderBy(desc(messages.id)).limit(limit);
    return rows.map(toMessage);
  }

  async getRoom(tenant: string, room: string): Promise<StoredRoom | null> {
    return readRoom(this.db, tenant, room);
  }

  async members(tenant: string, room: string): Promise<string[]> {
    return readMembers(this.db, tenant, room);
  }

  async upsertRoom(tenant: string, room: string, change: RoomChange, now: number): Promise<{ room: StoredRoom; created: boolean }> {
    return this.db.transaction(async (tx) => {
      const inserted = await tx.insert(rooms).values({ tenant, id: room, createdAt: now, updatedAt: now }).onConflictDoNothing().returning({ id: rooms.id });
      const set: Partial<typeof rooms.$inferInsert> = { updatedAt: now };
      if (change.status !== undefined) set.status = change.status;
      if (change.assignedAgent !== undefined) set.assignedAgent = change.assignedAgent;
      // jsonb: the object itself (a string here would be stored as a JSON string).
      if (change.meta !== undefined) set.meta = change.meta;
      await tx.update(rooms).set(set).where(and(eq(rooms.tenant, tenant), eq(rooms.id, room)));
      // Sorted, so two nodes adding the same members lock them in the same order.
      const users = [...new Set(change.members ?? [])].sort();
      if (users.length > 0) {
        await tx
          .insert(roomMembers)
          .values(users.map((user) => ({ tenant, room, user, joinedAt: now })))
          .onConflictDoNothing();
      }
      return { room: (await readRoom(tx, tenant, room))!, created: inserted.length > 0 };
    });
  }

  async markRead(tenant: string, room: string, user: string, messageId: number, now: number): Promise<number | null> {
    // One statement: the receipt is written only when the id is a message of this room of this
    // tenant (a receipt past the room's messages would hide every later message from the unread
    // count), and it never moves back.
    const rows = await this.db.execute<{ message_id: string | number }>(sql`
      INSERT INTO ${readReceipts} (tenant, room, "user", message_id, updated_at)
      SELECT ${tenant}, ${room}, ${user}, ${messages.id}, ${now}::bigint
      FROM ${messages}
      WHERE ${messages.tenant} = ${tenant} AND ${messages.room} = ${room} AND ${messages.id} = ${messageId}
      ON CONFLICT (tenant, room, "user") DO UPDATE
        SET message_id = GREATEST(${readReceipts}.message_id, excluded.message_id), updated_at = excluded.updated_at
      RETURNING message_id`);
    const row = rows[0];
    return row === undefined ? null : Number(row.message_id);
  }

  async unreadCount(tenant: string, room: string, user: string): Promise<number> {
    const receipt = this.db
      .select({ messageId: readReceipts.messageId })
      .from(readReceipts)
      .where(and(eq(readReceipts.tenant, tenant), eq(readReceipts.room, room), eq(readReceipts.user, user)));
    const [row] = await this.db
      .select({ count: sql<number>`count(*)`.mapWith(Number) })
      .from(messages)
      .where(
        and(
          eq(messages.tenant, tenant),
          eq(messages.room, room),
          gt(messages.id, sql`coalesce((${receipt}), 0)`),
          ne(messages.sender, user),
        ),
      );
    return row?.count ?? 0;
  }

  async prune(before: number): Promise<number> {
    // Each batch looks at the head of the id order (the oldest messages), not at `created_at <
    // before` over the table: created_at has no index, and the head costs one batch of rows to
    // read even when nothing is old enough.
    return pruneInBatches(async (limit) => {
      const head = this.db
        .select({ id: messages.id, createdAt: messages.createdAt })
        .from(messages)
        .orderBy(asc(messages.id))
        .limit(limit)
        .as("head");
      const old = this.db.select({ id: head.id }).from(head).where(lt(head.createdAt, before));
      return (await this.db.delete(messages).where(inArray(messages.id, old)).returning({ id: messages.id })).length;
    }, this.pruneBatch);
  }
}

/**
 * Creates the batch's missing rooms (open), each once, in a fixed order (so concurrent batches
 * creating the same rooms take their locks in one order and cannot deadlock on them).
 */
async function ensureRooms(tx: PgTx, batch: readonly NewMessage[]): Promise<void> {
  const byKey = new Map<string, { tenant: string; id: string; createdAt: number; updatedAt: number }>();
  for (const m of batch) {
    const key = `${m.tenant}\u0000${m.room}`;
    if (!byKey.has(key)) byKey.set(key, { tenant: m.tenant, id: m.room, createdAt: m.createdAt, updatedAt: m.createdAt });
  }
  const values = [...byKey.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, v]) => v);
  await tx.insert(rooms).values(values).onConflictDoNothing();
}

/** Rows per multi-row INSERT of messages: 6 parameters each, well under PostgreSQL's 65,535. */
const INSERT_CHUNK = 1_000;

/**
 * Inserts a batch with one multi-row INSERT per chunk instead of a round trip per message:
 * PostgreSQL inserts (and numbers) the rows of a VALUES list in order, so the rows it returns,
 * sorted by id, follow the batch. A message the unique index turned away (a client_msg_id
 * repeated in the batch or already stored) has no row; those are resolved one by one afterwards,
 * as insertMessage does.
 */
async function insertAll(tx: PgTx, batch: readonly NewMessage[]): Promise<{ message: StoredMessage; duplicate: boolean }[]> {
  const inserted: (typeof messages.$inferSelect)[] = [];
  for (let i = 0; i < batch.length; i += INSERT_CHUNK) {
    const rows = await tx
      .insert(messages)
      .values(batch.slice(i, i + INSERT_CHUNK).map(rowOf))
      .onConflictDoNothing()
      .returning();
    inserted.push(...rows.sort((a, b) => a.id - b.id));
  }
  const out: { message: StoredMessage; duplicate: boolean }[] = [];
  const turnedAway: number[] = [];
  let next = 0;
  for (let i = 0; i < batch.length; i++) {
    const row = inserted[next];
    if (row !== undefined && isRowOf(row, batch[i]!)) {
      out.push({ message: toMessage(row), duplicate: false });
      next++;
    } else {
      out.push(null!);
      turnedAway.push(i);
    }
  }
  for (const i of turnedAway) out[i] = await insertMessage(tx, batch[i]!);
  return out;
}

function rowOf(m: NewMessage): typeof messages.$inferInsert {
  return { tenant: m.tenant, room: m.room, sender: m.sender, content: m.content, clientMsgId: m.clientMsgId, createdAt: m.createdAt };
}

function isRowOf(row: typeof messages.$inferSelect, m: NewMessage): boolean {
  return row.tenant === m.tenant && row.room === m.room && row.sender === m.sender && row.clientMsgId === m.clientMsgId && row.content === m.content && row.createdAt === m.createdAt;
}

/**
 * Inserts one message; on a conflict (only the (tenant, room, sender, client_msg_id) index can
 * conflict) returns the stored first copy. Under READ COMMITTED an insert racing an uncommitted
 * copy waits for it: committed, the insert does nothing and the select (a new snapshot) sees it;
 * rolled back, the insert goes in. Both writers end with the same first copy.
 */
async function insertMessage(tx: PgTx, m: NewMessage): Promise<{ message: StoredMessage; duplicate: boolean }> {
  const values = rowOf(m);
  for (let round = 0; round < DUPLICATE_ROUNDS; round++) {
    const [inserted] = await tx.insert(messages).values(values).onConflictDoNothing().returning();
    if (inserted) return { message: toMessage(inserted), duplicate: false };
    const [first] = await tx
      .select()
      .from(messages)
      .where(
        and(
          eq(messages.tenant, m.tenant),
          eq(messages.room, m.room),
          eq(messages.sender, m.sender),
          eq(messages.clientMsgId, m.clientMsgId!),
        ),
      )
      .limit(1);
    if (first) return { message: toMessage(first), duplicate: true };
    // The first copy went (pruned) between the two statements: try storing this one again.
  }
  throw new Error(`message ${m.tenant}/${m.room}/${m.sender}/${m.clientMsgId} conflicts, yet no stored copy is found`);
}

async function readRoom(on: PgExecutor, tenant: string, room: string): Promise<StoredRoom | null> {
  const [row] = await on.select().from(rooms).where(and(eq(rooms.tenant, tenant), eq(rooms.id, room)));
  if (!row) return null;
  return {
    id: row.id,
    status: row.status,
    assignedAgent: row.assignedAgent,
    meta: (row.meta ?? null) as Record<string, unknown> | null,
    members: await readMembers(on, tenant, room),
    createdAt: row.createdAt,
    updatedAt: row.updatedAt,
  };
}

async function readMembers(on: PgExecutor, tenant: string, room: string): Promise<string[]> {
  const rows = await on
    .select({ user: roomMembers.user })
    .from(roomMembers)
    .where(and(eq(roomMembers.tenant, tenant), eq(roomMembers.room, room)))
    .orderBy(roomMembers.joinedAt, roomMembers.user);
  return rows.map((r) => r.user);
}

function toMessage(row: typeof messages.$inferSelect): StoredMessage {
  return { id: row.id, room: row.room, sender: row.sender, content: row.content, clientMsgId: row.clientMsgId, createdAt: row.createdAt };
}
