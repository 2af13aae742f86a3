import { afterAll, beforeAll, beforeEach, describe, expect } from "bun:test";
import { sql } from "drizzle-orm";
import type { NewMessage, StoredMessage } from "../src/store/chat-store.ts";
import { PgChatStore } from "../src/store/pg-chat-store.ts";
import type { PgDb } from "../src/store/pg-db.ts";
import { PgConnections, postgresTests, startPostgres, type Postgres } from "./support/postgres.ts";

// What only PgChatStore has, against a throwaway PostgreSQL: meta as a jsonb object, and
// insertWithin (the channel log store's transaction) meeting another node's uncommitted copy or
// its caller's rollback. What every ChatStore does is in test/contract/chat-store.contract.ts.

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
  test("meta is stored as a jsonb object and round-trips as one", async () => {
    const meta = { subject: "billing", tags: ["a", "b"], nested: { n: 1, ok: true } };
    await chat.upsertRoom("acme", "m", { meta }, 10);
    const rows = await db.execute<{ kind: string; subject: string }>(
      sql`SELECT jsonb_typeof(meta) AS kind, meta->>'subject' AS subject FROM rooms WHERE tenant = 'acme' AND id = 'm'`,
    );
    expect(rows[0]).toEqual({ kind: "object", subject: "billing" });
    expect((await chat.getRoom("acme", "m"))!.meta).toEqual(meta);
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
          const [out] = await nodeA.insertWithin(tx, [msg({ room: "held", clientMsgId, content: "from A" })]);
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
      const [first] = await chat.insertWithin(tx, [msg({ room: "log", clientMsgId: "w1", content: "one" })]);
      const [again] = await chat.insertWithin(tx, [msg({ room: "log", clientMsgId: "w1", content: "two" })]);
      expect(again).toEqual({ message: first!.message, duplicate: true });
      return first!;
    });
    expect(stored.duplicate).toBe(false);
    expect(await chat.listMessages("acme", "log", null, 10)).toEqual([stored.message]);
    expect(await chat.getRoom("acme", "log")).toMatchObject({ status: "open", createdAt: 1000 });

    await expect(
      db.transaction(async (tx) => {
        await chat.insertWithin(tx, [msg({ room: "gone", content: "rolled back" })]);
        throw new Error("the caller fails");
      }),
    ).rejects.toThrow("the caller fails");
    expect(await chat.getRoom("acme", "gone")).toBeNull();
    expect(await chat.listMessages("acme", "gone", null, 10)).toEqual([]);
  });

  test("a batch in one statement: ids follow the batch, a client_msg_id repeated within it or already stored is the first copy", async () => {
    const [before] = await chat.insertMessages([msg({ room: "batch", clientMsgId: "old", content: "stored earlier" })]);
    const batch = [
      msg({ room: "batch", clientMsgId: "c1", content: "first" }),
      msg({ room: "batch", clientMsgId: null, content: "same" }),
      msg({ room: "batch", clientMsgId: "c1", content: "first, again" }),
      msg({ room: "batch", clientMsgId: "old", content: "old, again" }),
      msg({ room: "batch", clientMsgId: null, content: "same" }),
      msg({ room: "other", clientMsgId: "c1", content: "another room" }),
    ];
    const out = await db.transaction((tx) => chat.insertWithin(tx, batch));
    expect(out.map((o) => o.duplicate)).toEqual([false, false, true, true, false, false]);
    expect(out[2]!.message).toEqual(out[0]!.message);
    expect(out[3]!.message).toEqual(before!.message);
    const fresh = out.filter((o) => !o.duplicate).map((o) => o.message);
    expect(fresh.map((m) => m.content)).toEqual(["first", "same", "same", "another room"]);
    expect(fresh.map((m) => m.id)).toEqual([...fresh.map((m) => m.id)].sort((a, b) => a - b));
    expect(fresh[0]!.id).toBeGreaterThan(before!.message.id);
  });
});
