import { afterAll, afterEach, beforeAll, beforeEach, describe, expect } from "bun:test";
import { sql } from "drizzle-orm";
import type { NewMessage, StoredMessage } from "../src/store/chat-store.ts";
import { PgChatStore } from "../src/store/pg-chat-store.ts";
import type { PgDb } from "../src/store/pg-db.ts";
import { messages } from "../src/store/schema.pg.ts";
import { PRUNE_BATCH } from "../src/store/prune.ts";
import { PgConnections, postgresTests, startPostgres, type Postgres } from "./support/postgres.ts";

// PgChatStore against a throwaway PostgreSQL: the cases of chat-store.test.ts and of the chat
// part of retention.test.ts (the sqlite store's), plus what only several nodes on one database
// show (two stores racing the same client_msg_id) and jsonb meta stored as an object.

const { test, available } = postgresTests();
let pg: Postgres | undefined;
const connections = new PgConnections();
let db: PgDb;
let chat: PgChatStore;

const open = (url: string): PgDb => connections.open(url);

beforeAll(async () => {
  if (!available) return;
  pg = await startPostgres("sinal_chat");
  db = open(pg.url);
  await connections.migrate(db);
}, 90_000);

afterAll(async () => {
  await connections.close();
  await pg?.stop();
});

beforeEach(async () => {
  if (!available) return;
  // Not RESTART IDENTITY: ids only grow, as in production.
  await db.execute(sql`TRUNCATE messages, rooms, room_members, read_receipts`);
  chat = new PgChatStore(db);
});

const msg = (over: Partial<NewMessage>): NewMessage => ({ tenant: "acme", room: "1", sender: "u1", content: "hi", clientMsgId: null, createdAt: 1000, ...over });

describe("PgChatStore", () => {
  test("stores a batch in order and creates the room open", async () => {
    const out = await chat.insertMessages([msg({ content: "a" }), msg({ content: "b", sender: "u2" })]);
    expect(out.map((o) => [o.message.content, o.duplicate])).toEqual([["a", false], ["b", false]]);
    expect(out[1]!.message.id).toBeGreaterThan(out[0]!.message.id);
    expect(typeof out[0]!.message.id).toBe("number");
    expect(await chat.getRoom("acme", "1")).toMatchObject({ id: "1", status: "open", assignedAgent: null, meta: null, members: [], createdAt: 1000 });
    expect(await chat.insertMessages([])).toEqual([]);
  });

  test("a repeated client_msg_id from the same sender returns the first message, in a later batch or the same one", async () => {
    const [first] = await chat.insertMessages([msg({ clientMsgId: "c1", content: "first" })]);
    const again = await chat.insertMessages([msg({ clientMsgId: "c1", content: "resend" }), msg({ clientMsgId: "c2" }), msg({ clientMsgId: "c2" })]);
    expect(again[0]).toEqual({ message: first!.message, duplicate: true });
    expect(again[1]!.duplicate).toBe(false);
    expect(again[2]).toEqual({ message: again[1]!.message, duplicate: true });
    // Another sender, room or tenant with the same client id is a different message.
    const others = await chat.insertMessages([msg({ clientMsgId: "c1", sender: "u2" }), msg({ clientMsgId: "c1", room: "2" }), msg({ clientMsgId: "c1", tenant: "globex" })]);
    expect(others.every((o) => !o.duplicate)).toBe(true);
    expect((await chat.listMessages("acme", "1", null, 50)).map((m) => m.content)).toEqual(["hi", "hi", "first"]);
    // Messages without a client id never collide.
    const plain = await chat.insertMessages([msg({}), msg({})]);
    expect(plain.map((o) => o.duplicate)).toEqual([false, false]);
  });

  test("a failed batch stores nothing, not even its room", async () => {
    await expect(chat.insertMessages([msg({ room: "new" }), msg({ room: "new", content: "\u0000" })])).rejects.toThrow();
    expect(await chat.getRoom("acme", "new")).toBeNull();
    expect(await chat.listMessages("acme", "new", null, 10)).toEqual([]);
  });

  test("pages newest first with before, scoped by tenant and room", async () => {
    for (let i = 1; i <= 5; i++) await chat.insertMessages([msg({ content: `m${i}` }), msg({ tenant: "globex", content: `g${i}` })]);
    const page1 = await chat.listMessages("acme", "1", null, 2);
    expect(page1.map((m) => m.content)).toEqual(["m5", "m4"]);
    const page2 = await chat.listMessages("acme", "1", page1[1]!.id, 2);
    expect(page2.map((m) => m.content)).toEqual(["m3", "m2"]);
    const page3 = await chat.listMessages("acme", "1", page2[1]!.id, 2);
    expect(page3.map((m) => m.content)).toEqual(["m1"]);
  });

  test("read receipts only move forward; unread counts others' messages after the receipt", async () => {
    const out = await chat.insertMessages([msg({ sender: "u1" }), msg({ sender: "u2" }), msg({ sender: "u1" }), msg({ sender: "u1" })]);
    const ids = out.map((o) => o.message.id);
    expect(await chat.unreadCount("acme", "1", "u2")).toBe(3);
    expect(await chat.markRead("acme", "1", "u2", ids[2]!, 2000)).toBe(ids[2]!);
    expect(await chat.markRead("acme", "1", "u2", ids[0]!, 2001)).toBe(ids[2]!);
    expect(await chat.unreadCount("acme", "1", "u2")).toBe(1);
    expect(await chat.unreadCount("acme", "1", "u1")).toBe(1);
    expect(await chat.unreadCount("globex", "1", "u2")).toBe(0);
  });

  test("a receipt for no message of the room (another room's, another tenant's, none at all) stores nothing", async () => {
    const [mine, otherRoom, otherTenant] = await chat.insertMessages([msg({}), msg({ room: "2" }), msg({ tenant: "globex" })]);
    for (const id of [otherRoom!.message.id, otherTenant!.message.id, 999_999]) expect(await chat.markRead("acme", "1", "u2", id, 2000)).toBeNull();
    expect(await chat.unreadCount("acme", "1", "u2")).toBe(1);
    expect(await chat.markRead("acme", "1", "u2", mine!.message.id, 2001)).toBe(mine!.message.id);
  });

  test("upsertRoom creates, then changes status, assignment, meta and adds members", async () => {
    const created = await chat.upsertRoom("acme", "9", { members: ["a"] }, 10);
    expect(created).toMatchObject({ created: true, room: { id: "9", status: "open", members: ["a"] } });
    const changed = await chat.upsertRoom("acme", "9", { status: "closed", assignedAgent: "ag", meta: { subject: "x" }, members: ["b", "a"] }, 20);
    expect(changed).toEqual({
      created: false,
      room: { id: "9", status: "closed", assignedAgent: "ag", meta: { subject: "x" }, members: ["a", "b"], createdAt: 10, updatedAt: 20 },
    });
    expect((await chat.upsertRoom("acme", "9", { assignedAgent: null }, 30)).room.assignedAgent).toBeNull();
    expect(await chat.getRoom("globex", "9")).toBeNull();
    expect(await chat.members("acme", "9")).toEqual(["a", "b"]);
    expect(await chat.members("acme", "nope")).toEqual([]);
  });

  test("meta is stored as a jsonb object and round-trips as one", async () => {
    const meta = { subject: "billing", tags: ["a", "b"], nested: { n: 1, ok: true } };
    await chat.upsertRoom("acme", "m", { meta }, 10);
    const rows = await db.execute<{ kind: string; subject: string }>(
      sql`SELECT jsonb_typeof(meta) AS kind, meta->>'subject' AS subject FROM rooms WHERE tenant = 'acme' AND id = 'm'`,
    );
    expect(rows[0]).toEqual({ kind: "object", subject: "billing" });
    expect((await chat.getRoom("acme", "m"))!.meta).toEqual(meta);
  });

  test("everything is seen by another store on another connection", async () => {
    const [kept] = await chat.insertMessages([msg({ content: "kept" })]);
    await chat.markRead("acme", "1", "u2", kept!.message.id, 5);
    const other = new PgChatStore(open(pg!.url));
    expect((await other.listMessages("acme", "1", null, 10)).map((m) => m.content)).toEqual(["kept"]);
    expect(await other.unreadCount("acme", "1", "u2")).toBe(0);
  });

  test("two nodes racing the same client_msg_id end with one message, the same first copy for both", async () => {
    const nodeA = new PgChatStore(open(pg!.url));
    const nodeB = new PgChatStore(open(pg!.url));
    for (let round = 0; round < 20; round++) {
      const clientMsgId = `race-${round}`;
      const room = `r${round}`;
      const [a, b] = await Promise.all([
        nodeA.insertMessages([msg({ room, clientMsgId, content: "from A" })]),
        nodeB.insertMessages([msg({ room, clientMsgId, content: "from B" })]),
      ]);
      expect(a[0]!.message).toEqual(b[0]!.message);
      expect([a[0]!.duplicate, b[0]!.duplicate].sort()).toEqual([false, true]);
      const stored = await chat.listMessages("acme", room, null, 10);
      expect(stored).toEqual([a[0]!.message]);
    }
    // Both created the room on their first message: one room.
    const rooms = await db.execute<{ n: number }>(sql`SELECT count(*)::int AS n FROM rooms WHERE id = 'r0'`);
    expect(rooms[0]!.n).toBe(1);
  });

  test("a node whose insert meets another node's uncommitted copy waits, then returns that copy, or stores its own when the other rolls back", async () => {
    for (const outcome of ["commit", "rollback"] as const) {
      const nodeA = new PgChatStore(open(pg!.url));
      const dbB = open(pg!.url);
      const nodeB = new PgChatStore(dbB);
      const clientMsgId = `held-${outcome}`;
      let stored!: () => void;
      const storedByA = new Promise<void>((resolve) => (stored = resolve));
      let release!: () => void;
      const gate = new Promise<void>((resolve) => (release = resolve));
      const a = db
        .transaction(async (tx) => {
          const out = await nodeA.insertWithin(tx, msg({ room: "held", clientMsgId, content: "from A" }));
          stored();
          await gate;
          if (outcome === "rollback") throw new Error("A rolls back");
          return out;
        })
        .catch((err: Error) => err);
      await storedByA;
      let bSettled = false;
      const b = nodeB.insertMessages([msg({ room: "held", clientMsgId, content: "from B" })]).finally(() => (bSettled = true));
      await Bun.sleep(200);
      expect(bSettled).toBe(false);
      release();
      const [aOut, [bOut]] = await Promise.all([a, b]);
      const kept = await chat.listMessages("acme", "held", null, 10);
      const mine = kept.filter((m) => m.clientMsgId === clientMsgId);
      if (outcome === "commit") {
        expect(aOut).not.toBeInstanceOf(Error);
        expect(bOut).toEqual({ message: (aOut as { message: StoredMessage }).message, duplicate: true });
        expect(mine.map((m) => m.content)).toEqual(["from A"]);
      } else {
        expect(aOut).toBeInstanceOf(Error);
        expect(bOut!.duplicate).toBe(false);
        expect(mine).toEqual([bOut!.message]);
        expect(mine.map((m) => m.content)).toEqual(["from B"]);
      }
    }
  });

  test("insertWithin stores inside the caller's transaction and goes with its rollback", async () => {
    const stored = await db.transaction(async (tx) => {
      const first = await chat.insertWithin(tx, msg({ room: "log", clientMsgId: "w1", content: "one" }));
      const again = await chat.insertWithin(tx, msg({ room: "log", clientMsgId: "w1", content: "two" }));
      expect(again).toEqual({ message: first.message, duplicate: true });
      return first;
    });
    expect(stored.duplicate).toBe(false);
    expect(await chat.listMessages("acme", "log", null, 10)).toEqual([stored.message]);
    expect(await chat.getRoom("acme", "log")).toMatchObject({ status: "open", createdAt: 1000 });

    await expect(
      db.transaction(async (tx) => {
        await chat.insertWithin(tx, msg({ room: "gone", content: "rolled back" }));
        throw new Error("the caller fails");
      }),
    ).rejects.toThrow("the caller fails");
    expect(await chat.getRoom("acme", "gone")).toBeNull();
    expect(await chat.listMessages("acme", "gone", null, 10)).toEqual([]);
  });
});

describe("PgChatStore.prune", () => {
  const DAY = 86_400_000;
  const NOW = 100 * DAY;
  const OLD = NOW - 10 * DAY;
  const RECENT = NOW - DAY;
  const CUT = NOW - 7 * DAY;
  const recent = (over: Partial<NewMessage>) => msg({ createdAt: RECENT, ...over });

  test("deletes the messages stored before the cut-off and keeps the recent ones and the room", async () => {
    await chat.upsertRoom("acme", "1", { members: ["u1", "u2"], meta: { topic: "billing" } }, OLD);
    await chat.insertMessages([recent({ content: "a", createdAt: OLD }), recent({ content: "b", createdAt: OLD, room: "2", tenant: "globex" }), recent({ content: "c" })]);
    await chat.insertMessages([recent({ content: "only old", room: "3", createdAt: OLD })]);

    expect(await chat.prune(CUT)).toBe(3);
    expect((await chat.listMessages("acme", "1", null, 50)).map((m) => m.content)).toEqual(["c"]);
    expect(await chat.listMessages("globex", "2", null, 50)).toEqual([]);
    // A room whose messages all went stays, with its members and meta.
    expect(await chat.getRoom("acme", "3")).toMatchObject({ id: "3", status: "open" });
    expect(await chat.getRoom("acme", "1")).toMatchObject({ members: ["u1", "u2"], meta: { topic: "billing" } });
    expect(await chat.prune(CUT)).toBe(0);
  });

  test("unread counts count the kept messages after a receipt that points at a pruned one", async () => {
    const stored = await chat.insertMessages([
      recent({ sender: "u1", createdAt: OLD }),
      recent({ sender: "u1", createdAt: OLD }),
      recent({ sender: "u1" }),
      recent({ sender: "u3" }),
    ]);
    const ids = stored.map((s) => s.message.id);
    await chat.markRead("acme", "1", "u2", ids[1]!, OLD);
    await chat.markRead("acme", "1", "u3", ids[0]!, OLD);

    await chat.prune(CUT);
    expect(await chat.unreadCount("acme", "1", "u2")).toBe(2);
    // u3's own message does not count; its receipt on a pruned message still orders.
    expect(await chat.unreadCount("acme", "1", "u3")).toBe(1);
    // No receipt: every kept message by someone else.
    expect(await chat.unreadCount("acme", "1", "u4")).toBe(2);
    // A pruned message is no message of the room any more: a read of it stores nothing.
    expect(await chat.markRead("acme", "1", "u4", ids[0]!, NOW)).toBeNull();
    expect(await chat.markRead("acme", "1", "u2", ids[3]!, NOW)).toBe(ids[3]!);
    expect(await chat.unreadCount("acme", "1", "u2")).toBe(0);
  });

  test("after every message went, new ones get higher ids, so old receipts do not hide them", async () => {
    const [first] = await chat.insertMessages([recent({ createdAt: OLD }), recent({ createdAt: OLD })]).then((s) => s.slice(-1));
    await chat.markRead("acme", "1", "u2", first!.message.id, OLD);
    expect(await chat.prune(NOW)).toBe(2);

    const [next] = await chat.insertMessages([recent({ createdAt: NOW })]);
    expect(next!.message.id).toBeGreaterThan(first!.message.id);
    expect(await chat.unreadCount("acme", "1", "u2")).toBe(1);
  });

  test("a big prune goes in batches with turns of the event loop between them", async () => {
    const total = PRUNE_BATCH * 2 + 500;
    // Bulk rows straight into the table: one statement instead of tens of thousands.
    await db.execute(sql`INSERT INTO ${messages} (tenant, room, sender, content, created_at)
      SELECT 'acme', '1', 'u1', 'hi', ${OLD}::bigint FROM generate_series(1, ${total}::int)`);
    await chat.insertMessages([recent({ content: "kept" })]);

    const order: string[] = [];
    const pruned = chat.prune(CUT).then((n) => {
      order.push("pruned");
      return n;
    });
    setImmediate(() => order.push("event loop turn"));
    expect(await pruned).toBe(total);
    expect(order).toEqual(["event loop turn", "pruned"]);
    expect((await chat.listMessages("acme", "1", null, 50)).map((m) => m.content)).toEqual(["kept"]);
  }, 30_000);

  test("with a small batch limit the batches add up, oldest first, and the young message stays", async () => {
    const small = new PgChatStore(db, 2);
    await chat.insertMessages(Array.from({ length: 5 }, (_, i) => recent({ content: `old${i}`, createdAt: OLD })));
    await chat.insertMessages([recent({ content: "young" })]);
    expect(await small.prune(CUT)).toBe(5);
    expect((await chat.listMessages("acme", "1", null, 50)).map((m) => m.content)).toEqual(["young"]);
  });
});
