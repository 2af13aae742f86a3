import { and, desc, eq, gt, inArray, lt, ne, sql } from "drizzle-orm";
import type { BunSQLiteDatabase } from "drizzle-orm/bun-sqlite";
import type { ChatStore, NewMessage, RoomChange, StoredMessage, StoredRoom } from "./chat-store.ts";
import { messages, readReceipts, roomMembers, rooms } from "./schema.sqlite.ts";
import { pruneInBatches } from "./prune.ts";

/** Rooms remembered as existing; past it the set starts again (messages to ever new rooms must not grow memory). */
const KNOWN_ROOMS_MAX = 100_000;

type Db = BunSQLiteDatabase<Record<string, never>>;

/** ChatStore on bun:sqlite. Writes are synchronous transactions; the Promise is the interface's. */
export class SqliteChatStore implements ChatStore {
  private readonly insertMessage;
  private readonly findByClientId;
  private readonly ensureRoom;
  /** Rooms known to exist (rooms are never deleted), so a message costs no room insert. */
  private readonly knownRooms = new Set<string>();

  constructor(private readonly db: Db) {
    // Prepared once: the message path runs these for every chat message.
    this.insertMessage = db
      .insert(messages)
      .values({
        tenant: sql.placeholder("tenant"),
        room: sql.placeholder("room"),
        sender: sql.placeholder("sender"),
        content: sql.placeholder("content"),
        clientMsgId: sql.placeholder("clientMsgId"),
        createdAt: sql.placeholder("createdAt"),
      })
      .onConflictDoNothing()
      .returning()
      .prepare();
    this.findByClientId = db
      .select()
      .from(messages)
      .where(
        and(
          eq(messages.tenant, sql.placeholder("tenant")),
          eq(messages.room, sql.placeholder("room")),
          eq(messages.sender, sql.placeholder("sender")),
          eq(messages.clientMsgId, sql.placeholder("clientMsgId")),
        ),
      )
      .prepare();
    this.ensureRoom = db
      .insert(rooms)
      .values({ tenant: sql.placeholder("tenant"), id: sql.placeholder("room"), createdAt: sql.placeholder("now"), updatedAt: sql.placeholder("now") })
      .onConflictDoNothing()
      .prepare();
  }

  async insertMessages(batch: readonly NewMessage[]): Promise<{ message: StoredMessage; duplicate: boolean }[]> {
    const created: string[] = [];
    try {
      return this.insertBatch(batch, created);
    } catch (err) {
      this.forgetRooms(created);
      throw err;
    }
  }

  private insertBatch(batch: readonly NewMessage[], created: string[]): { message: StoredMessage; duplicate: boolean }[] {
    return this.db.transaction(() => batch.map((m) => this.insertWithin(m, created)));
  }

  /**
   * Stores one message inside the caller's open transaction (the durable history writes a room's
   * `new_message` publication in the same one); `created` collects rooms it created, for `forget`.
   */
  insertWithin(m: NewMessage, created: string[]): { message: StoredMessage; duplicate: boolean } {
    const roomKey = `${m.tenant}\u0000${m.room}`;
    if (!this.knownRooms.has(roomKey)) {
      this.ensureRoom.run({ tenant: m.tenant, room: m.room, now: m.createdAt });
      // A cache, bounded: forgetting rooms only costs a harmless INSERT OR IGNORE later.
      if (this.knownRooms.size >= KNOWN_ROOMS_MAX) this.knownRooms.clear();
      this.knownRooms.add(roomKey);
      created.push(roomKey);
    }
    const inserted = this.insertMessage.get({ ...m });
    // Only the (tenant, room, sender, client_msg_id) index can conflict: return the first copy.
    if (inserted) return { message: toMessage(inserted), duplicate: false };
    return { message: toMessage(this.findByClientId.get({ ...m })!), duplicate: true };
  }

  /** After a rolled-back transaction: the rooms it created do not exist. */
  forgetRooms(created: readonly string[]): void {
    for (const key of created) this.knownRooms.delete(key);
  }

  async listMessages(tenant: string, room: string, before: number | null, limit: number): Promise<StoredMessage[]> {
    const where = and(eq(messages.tenant, tenant), eq(messages.room, room), before === null ? undefined : lt(messages.id, before));
    return this.db.select().from(messages).where(where).orderBy(desc(messages.id)).limit(limit).all().map(toMessage);
  }

  async getRoom(tenant: string, room: string): Promise<StoredRoom | null> {
    const row = this.db.select().from(rooms).where(and(eq(rooms.tenant, tenant), eq(rooms.id, room))).get();
    if (!row) return null;
    const members = await this.members(tenant, room);
    return {
      id: row.id,
      status: row.status,
      assignedAgent: row.assignedAgent,
      meta: row.meta === null ? null : (JSON.parse(row.meta) as Record<string, unknown>),
      members,
      createdAt: row.createdAt,
      updatedAt: row.updatedAt,
    };
  }

  async members(tenant: string, room: string): Promise<string[]> {
    return this.db
      .select({ user: roomMembers.user })
      .from(roomMembers)
      .where(and(eq(roomMembers.tenant, tenant), eq(roomMembers.room, room)))
      .orderBy(roomMembers.joinedAt, roomMembers.user)
      .all()
      .map((r) => r.user);
  }

  async upsertRoom(tenant: string, room: string, change: RoomChange, now: number): Promise<{ room: StoredRoom; created: boolean }> {
    const created = this.db.transaction(() => {
      const inserted = this.db.insert(rooms).values({ tenant, id: room, createdAt: now, updatedAt: now }).onConflictDoNothing().returning().all();
      const set: Partial<typeof rooms.$inferInsert> = { updatedAt: now };
      if (change.status !== undefined) set.status = change.status;
      if (change.assignedAgent !== undefined) set.assignedAgent = change.assignedAgent;
      if (change.meta !== undefined) set.meta = JSON.stringify(change.meta);
      this.db.update(rooms).set(set).where(and(eq(rooms.tenant, tenant), eq(rooms.id, room))).run();
      for (const user of change.members ?? []) {
        this.db.insert(roomMembers).values({ tenant, room, user, joinedAt: now }).onConflictDoNothing().run();
      }
      return inserted.length > 0;
    });
    return { room: (await this.getRoom(tenant, room))!, created };
  }

  async markRead(tenant: string, room: string, user: string, messageId: number, now: number): Promise<number | null> {
    // IMMEDIATE: this transaction reads before it writes. A deferred one would start as a reader,
    // and its upgrade to a writer fails at once with SQLITE_BUSY (busy_timeout does not apply) when
    // another connection to the file (another node) committed in between.
    return this.db.transaction(() => {
      // A receipt past the room's messages (another room's id, a made-up one) would hide every later message from the unread count.
      const isRoomMessage = this.db
        .select({ id: messages.id })
        .from(messages)
        .where(and(eq(messages.tenant, tenant), eq(messages.room, room), eq(messages.id, messageId)))
        .get();
      if (isRoomMessage === undefined) return null;
      const row = this.db
        .insert(readReceipts)
        .values({ tenant, room, user, messageId, updatedAt: now })
        .onConflictDoUpdate({
          target: [readReceipts.tenant, readReceipts.room, readReceipts.user],
          set: { messageId: sql`max(${readReceipts.messageId}, excluded.message_id)`, updatedAt: now },
        })
        .returning({ messageId: readReceipts.messageId })
        .get();
      return row!.messageId;
    }, { behavior: "immediate" });
  }

  async unreadCount(tenant: string, room: string, user: string): Promise<number> {
    const receipt = this.db
      .select({ messageId: readReceipts.messageId })
      .from(readReceipts)
      .where(and(eq(readReceipts.tenant, tenant), eq(readReceipts.room, room), eq(readReceipts.user, user)))
      .get();
    const row = this.db
      .select({ count: sql<number>`count(*)` })
      .from(messages)
      .where(and(eq(messages.tenant, tenant), eq(messages.room, room), gt(messages.id, receipt?.messageId ?? 0), ne(messages.sender, user)))
      .get();
    return row?.count ?? 0;
  }

  async prune(before: number): Promise<number> {
    // Each batch looks at the head of the id order (the oldest messages), not at `created_at <
    // before` over the table: created_at has no index, and the head costs one batch of rows to
    // read even when nothing is old enough, so the hourly check never scans the whole table.
    return pruneInBatches((limit) => {
      const head = this.db.select({ id: messages.id, createdAt: messages.createdAt }).from(messages).orderBy(messages.id).limit(limit).as("head");
      const old = this.db.select({ id: head.id }).from(head).where(lt(head.createdAt, before));
      return this.db.delete(messages).where(inArray(messages.id, old)).returning({ id: messages.id }).all().length;
    });
  }
}

function toMessage(row: typeof messages.$inferSelect): StoredMessage {
  return { id: row.id, room: row.room, sender: row.sender, content: row.content, clientMsgId: row.clientMsgId, createdAt: row.createdAt };
}
