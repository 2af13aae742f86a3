import { afterAll, beforeAll, beforeEach, expect } from "bun:test";
import { sql } from "drizzle-orm";
import { DurableHistory } from "../src/history/durable-history.ts";
import type { Position, Retention } from "../src/history/history.ts";
import type { StoredMessage } from "../src/store/chat-store.ts";
import { PgChannelLogStore, type PgChatWithin } from "../src/store/pg-channel-log-store.ts";
import type { PgDb } from "../src/store/pg-db.ts";
import { messages } from "../src/store/schema.pg.ts";
import { PgConnections, postgresTests, startPostgres, type Postgres } from "./support/postgres.ts";

// The durable parts of history.contract.test.ts, DurableHistory over PgChannelLogStore on a
// throwaway PostgreSQL, and the store's own guarantees (one transaction per commit).

const { test, available } = postgresTests();

const KEEP: Retention = { size: 100, ttlMs: 3_600_000 };
const NO_DELIVER = () => undefined;
const frameOf = (topic: string, n: number) => (p: Position) => JSON.stringify({ type: "pub", channel: topic, data: n, offset: p.offset, epoch: p.epoch });

/** Publication-only entries never reach the chat store. */
const NO_CHAT: PgChatWithin = {
  insertWithin: () => {
    throw new Error("insertWithin called for a publication without a message");
  },
};

let pg: Postgres | undefined;
const connections = new PgConnections();
let db: PgDb;

const open = (): PgDb => connections.open(pg!.url);

beforeAll(async () => {
  if (!available) return;
  pg = await startPostgres("sinal_channel_log");
  db = open();
  await connections.migrate(db);
  // A failure inside the commit's transaction on demand, at its last statement (the positions
  // upsert, after the publications and keys were written): while `fail_next` holds a row.
  await db.execute(sql`CREATE TABLE fail_next (reason text NOT NULL)`);
  await db.execute(sql`CREATE FUNCTION fail_if_asked() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF EXISTS (SELECT 1 FROM fail_next) THEN RAISE EXCEPTION 'disk full'; END IF;
      RETURN NEW;
    END $$`);
  await db.execute(sql`CREATE TRIGGER channel_positions_fail BEFORE INSERT OR UPDATE ON channel_positions FOR EACH ROW EXECUTE FUNCTION fail_if_asked()`);
}, 90_000);

afterAll(async () => {
  await connections.close();
  await pg?.stop();
});

beforeEach(async () => {
  if (!available) return;
  await db.execute(sql`TRUNCATE channel_log, channel_positions, idempotency, messages, fail_next RESTART IDENTITY`);
});

const history = (store = new PgChannelLogStore(db, NO_CHAT), retention = KEEP) => new DurableHistory(store, 2, retention);

async function appendN(h: DurableHistory, topic: string, n: number, retention = KEEP): Promise<Position[]> {
  // All issued before any settles: offsets must follow call order even when commits are batched.
  return (await Promise.all(Array.from({ length: n }, (_, i) => h.append(topic, frameOf(topic, i + 1), retention, NO_DELIVER)))).map((r) => r.position);
}

test("offsets run 1, 2, 3 ... per topic in call order, under one epoch; topics are independent", async () => {
  const h = history();
  const a = await appendN(h, "t/a", 50);
  const b = await appendN(h, "t/b", 3);
  expect(a.map((p) => p.offset)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
  expect(new Set(a.map((p) => p.epoch)).size).toBe(1);
  expect(b.map((p) => p.offset)).toEqual([1, 2, 3]);
  expect(await h.position("t/a")).toEqual({ epoch: a[0]!.epoch, offset: 50 });
  expect((await h.position("t/never")).offset).toBe(0);
});

test("deliver runs once per publication, in offset order, before its append settles", async () => {
  const h = history();
  const delivered: string[] = [];
  const settledBeforeDelivery: string[] = [];
  await Promise.all(
    Array.from({ length: 60 }, (_, i) => {
      const topic = i % 3 === 0 ? "t/x" : "t/y";
      return h.append(topic, frameOf(topic, i), KEEP, (p) => delivered.push(`${topic}#${p.offset}`)).then((r) => {
        if (!delivered.includes(`${topic}#${r.position.offset}`)) settledBeforeDelivery.push(`${topic}#${r.position.offset}`);
      });
    }),
  );
  expect(settledBeforeDelivery).toEqual([]);
  for (const topic of ["t/x", "t/y"]) {
    const offsets = delivered.filter((d) => d.startsWith(`${topic}#`)).map((d) => Number(d.split("#")[1]));
    expect(offsets).toEqual(Array.from({ length: offsets.length }, (_, i) => i + 1));
  }
  expect(delivered.length).toBe(60);
});

test("recover returns exactly the publications after since, in order; trimmed and other epochs are refused", async () => {
  const h = history();
  const [first] = await appendN(h, "t/r", 30);
  const r = await h.recover("t/r", { epoch: first!.epoch, offset: 10 }, KEEP, Infinity);
  expect(r.recovered).toBe(true);
  expect(r.position).toEqual({ epoch: first!.epoch, offset: 30 });
  expect(r.publications.map((f) => JSON.parse(f).offset)).toEqual(Array.from({ length: 20 }, (_, i) => i + 11));
  expect(await h.recover("t/r", { epoch: first!.epoch, offset: 30 }, KEEP, Infinity)).toMatchObject({ recovered: true, publications: [] });
  const small: Retention = { size: 5, ttlMs: 3_600_000 };
  expect(await h.recover("t/r", { epoch: "elsewhere", offset: 3 }, small, Infinity)).toMatchObject({ recovered: false, reason: "epoch_changed", historyFrom: 26 });
  expect(await h.recover("t/r", { epoch: first!.epoch, offset: 10 }, small, Infinity)).toMatchObject({ recovered: false, reason: "trimmed", historyFrom: 26 });
  expect(await h.recover("t/r", { epoch: first!.epoch, offset: 31 }, small, Infinity)).toMatchObject({ recovered: false, reason: "ahead" });
});

test("a recovery larger than the byte budget comes in pages of at most that budget, in order, none twice", async () => {
  const h = history();
  const [p] = await appendN(h, "t/big", 30);
  const frameBytes = JSON.stringify({ type: "pub", channel: "t/big", data: 10, offset: 10, epoch: p!.epoch }).length;
  const budget = 7 * frameBytes;
  const first = await h.recover("t/big", { epoch: p!.epoch, offset: 2 }, KEEP, budget);
  expect(first).toMatchObject({ recovered: true, through: 9 });
  const got = first.publications.map((f) => JSON.parse(f).offset);
  let after = first.through;
  while (after < 30) {
    const page = (await h.page("t/big", p!.epoch, after, 30, KEEP, budget))!;
    expect(page.reduce((n, k) => n + k.frame.length, 0)).toBeLessThanOrEqual(budget);
    got.push(...page.map((k) => k.offset));
    after = page.at(-1)!.offset;
  }
  expect(got).toEqual(Array.from({ length: 28 }, (_, i) => i + 3));
  expect(await h.page("t/big", "elsewhere", 2, 30, KEEP, budget)).toBeNull();
  expect(await h.page("t/big", p!.epoch, 2, 30, { size: 10, ttlMs: 3_600_000 }, budget)).toBeNull();
});

test("readFrom reads a long range page by page: all of it within the budget, at least one row past it, honouring minAt", async () => {
  const store = new PgChannelLogStore(db, NO_CHAT);
  const h = history(store, { size: 1000, ttlMs: 3_600_000 });
  await appendN(h, "t/long", 250, { size: 1000, ttlMs: 3_600_000 });
  expect((await store.readFrom("t/long", 0, 250, 0, Infinity)).map((r) => r.offset)).toEqual(Array.from({ length: 250 }, (_, i) => i + 1));
  expect((await store.readFrom("t/long", 120, 240, 0, Infinity)).map((r) => r.offset)).toEqual(Array.from({ length: 120 }, (_, i) => i + 121));
  expect((await store.readFrom("t/long", 10, 250, 0, 0)).map((r) => r.offset)).toEqual([11]);
  expect((await store.readFrom("t/long", 10, 250, 0, 1)).map((r) => r.offset)).toEqual([11]);
  const frame = (await store.readFrom("t/long", 0, 1, 0, Infinity))[0]!.frame.length;
  const some = await store.readFrom("t/long", 50, 250, 0, 150 * frame + frame - 1);
  expect(some.length).toBeGreaterThanOrEqual(130);
  expect(some.reduce((n, r) => n + r.frame.length, 0)).toBeLessThanOrEqual(150 * frame + frame - 1);
  expect(some.map((r) => r.offset)).toEqual(Array.from({ length: some.length }, (_, i) => i + 51));
  expect(await store.readFrom("t/long", 0, 250, Date.now() + 60_000, Infinity)).toEqual([]);
});

test("after a restart, a new DurableHistory over the same database keeps epoch, offsets and publications", async () => {
  const h = history();
  const [p] = await appendN(h, "t/keep", 12);
  await h.close();
  const again = new DurableHistory(new PgChannelLogStore(open(), NO_CHAT), 2, KEEP);
  expect(await again.position("t/keep")).toEqual({ epoch: p!.epoch, offset: 12 });
  const r = await again.recover("t/keep", { epoch: p!.epoch, offset: 7 }, KEEP, Infinity);
  expect(r.publications.map((f) => JSON.parse(f).offset)).toEqual([8, 9, 10, 11, 12]);
  expect((await appendN(again, "t/keep", 1))[0]).toEqual({ epoch: p!.epoch, offset: 13 });
});

test("reset starts a new epoch at offset 0 for that topic only, its publications deleted", async () => {
  const store = new PgChannelLogStore(db, NO_CHAT);
  const h = history(store);
  const [a] = await appendN(h, "t/x", 2);
  const [b] = await appendN(h, "t/y", 1);
  const fresh = await h.reset("t/x");
  expect(fresh.offset).toBe(0);
  expect(fresh.epoch).not.toBe(a!.epoch);
  expect(await store.position("t/x")).toEqual(fresh);
  expect(await store.readFrom("t/x", 0, 10, 0, Infinity)).toEqual([]);
  expect((await appendN(h, "t/x", 1))[0]).toEqual({ epoch: fresh.epoch, offset: 1 });
  expect(await h.position("t/y")).toEqual({ epoch: b!.epoch, offset: 1 });
});

test("trim deletes by age, and each listed topic at or below its upTo", async () => {
  const store = new PgChannelLogStore(db, NO_CHAT);
  const h = history(store, { size: 5, ttlMs: 3_600_000 });
  const [p] = await appendN(h, "t/trim", 20, { size: 5, ttlMs: 3_600_000 });
  await appendN(h, "t/other", 3, { size: 5, ttlMs: 3_600_000 });
  expect(await store.trim(0, [{ topic: "t/trim", upTo: 15 }])).toBe(15);
  expect((await store.readFrom("t/trim", 0, 20, 0, Infinity)).map((r) => r.offset)).toEqual([16, 17, 18, 19, 20]);
  expect(await store.trim(Date.now() + 60_000, [])).toBe(8);
  expect(await store.readFrom("t/other", 0, 3, 0, Infinity)).toEqual([]);
  expect(await h.position("t/trim")).toEqual({ epoch: p!.epoch, offset: 20 });
});

test("with history off only positions are written; offsets still survive a restart", async () => {
  const off: Retention = { size: 0, ttlMs: 0 };
  const store = new PgChannelLogStore(db, NO_CHAT);
  const h = history(store, off);
  const [p] = await appendN(h, "t/off", 3, off);
  await h.close();
  expect(await store.readFrom("t/off", 0, 3, 0, Infinity)).toEqual([]);
  expect(await new DurableHistory(new PgChannelLogStore(open(), NO_CHAT), 0, off).position("t/off")).toEqual({ epoch: p!.epoch, offset: 3 });
});

test("a commit failing inside its transaction leaves no hole and stores nothing: no publication, no position, no idempotency key", async () => {
  const store = new PgChannelLogStore(db, NO_CHAT);
  const h = new DurableHistory(store, 0, KEEP);
  const [p] = await appendN(h, "t/f", 1);
  await db.execute(sql`INSERT INTO fail_next VALUES ('once')`);
  expect(await failure(h.append("t/f", frameOf("t/f", 2), KEEP, NO_DELIVER, { tenant: "acme", key: "k-failed" }))).toContain("disk full");
  expect(await store.readFrom("t/f", 0, 10, 0, Infinity)).toHaveLength(1);
  expect(await store.position("t/f")).toEqual(p!);
  expect(await db.execute(sql`SELECT key FROM idempotency`)).toHaveLength(0);
  await db.execute(sql`DELETE FROM fail_next`);
  const { position } = await h.append("t/f", frameOf("t/f", 3), KEEP, NO_DELIVER, { tenant: "acme", key: "k-ok" });
  expect(position).toEqual({ epoch: p!.epoch, offset: 2 });
  expect(await h.position("t/f")).toEqual(position);
  expect((await store.readFrom("t/f", 0, 10, 0, Infinity)).map((r) => JSON.parse(r.frame).data)).toEqual([1, 3]);
  const keys = await db.execute<{ tenant: string; key: string; response: string }>(sql`SELECT tenant, key, response FROM idempotency`);
  expect(keys.map((k) => ({ ...k }))).toEqual([{ tenant: "acme", key: "k-ok", response: JSON.stringify({ offset: 2, epoch: p!.epoch }) }]);
});

test("an idempotency key is stored with its publication; an existing (tenant, key) keeps its first answer", async () => {
  const store = new PgChannelLogStore(db, NO_CHAT);
  const h = history(store);
  const key = { tenant: "acme", key: "k1" };
  const [first, second] = await Promise.all([h.append("t/k", frameOf("t/k", 1), KEEP, NO_DELIVER, key), h.append("t/k", frameOf("t/k", 2), KEEP, NO_DELIVER, key)]);
  await h.append("t/k", frameOf("t/k", 3), KEEP, NO_DELIVER, key);
  expect(second!.position.offset).toBe(2);
  const rows = await db.execute<{ response: string }>(sql`SELECT response FROM idempotency WHERE tenant = 'acme' AND key = 'k1'`);
  expect(rows.map((r) => JSON.parse(r.response))).toEqual([{ offset: 1, epoch: first!.position.epoch }]);
});

test("message entries: the chat message is stored in the commit's transaction, a duplicate takes no offset, a failure rolls the message back", async () => {
  // A minimal chat store writing in the given transaction (the real one comes from PgChatStore).
  const chat: PgChatWithin = {
    async insertWithin(tx, m) {
      const [row] = await tx.insert(messages).values(m).onConflictDoNothing().returning();
      if (row !== undefined) return { message: toStored(row), duplicate: false };
      const [first] = await tx.select().from(messages).where(sql`tenant = ${m.tenant} AND room = ${m.room} AND sender = ${m.sender} AND client_msg_id = ${m.clientMsgId}`);
      return { message: toStored(first!), duplicate: true };
    },
  };
  const h = new DurableHistory(new PgChannelLogStore(db, chat), 2, KEEP);
  const msg = (content: string, clientMsgId: string | null) => ({ tenant: "acme", room: "r1", sender: "u1", content, clientMsgId, createdAt: Date.now() });
  const build = (p: Position, s: StoredMessage) => JSON.stringify({ offset: p.offset, id: s.id, content: s.content });
  const [a, dup, b] = await Promise.all([
    h.appendMessage("t/room", msg("hello", "c1"), build, NO_DELIVER),
    h.appendMessage("t/room", msg("hello again", "c1"), build, NO_DELIVER),
    h.appendMessage("t/room", msg("world", null), build, NO_DELIVER),
  ]);
  expect(a).toMatchObject({ duplicate: false, position: { offset: 1 }, message: { content: "hello" } });
  expect(dup).toMatchObject({ duplicate: true, message: { id: a!.message!.id, content: "hello" } });
  expect(b).toMatchObject({ duplicate: false, position: { offset: 2 }, message: { content: "world" } });
  await db.execute(sql`INSERT INTO fail_next VALUES ('once')`);
  expect(await failure(h.appendMessage("t/room", msg("lost", "c9"), build, NO_DELIVER))).toContain("disk full");
  await db.execute(sql`DELETE FROM fail_next`);
  expect((await db.execute<{ content: string }>(sql`SELECT content FROM messages ORDER BY id`)).map((r) => r.content)).toEqual(["hello", "world"]);
  expect((await h.appendMessage("t/room", msg("lost", "c9"), build, NO_DELIVER)).duplicate).toBe(false);
  expect(await h.position("t/room")).toMatchObject({ offset: 3 });
});

/** The message of a rejection and of its causes (drizzle wraps the server's error in a DrizzleQueryError). */
async function failure(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    const parts: string[] = [];
    for (let e: unknown = err; e instanceof Error; e = e.cause) parts.push(e.message);
    return parts.join(" / ");
  }
  throw new Error("expected a rejection");
}

function toStored(row: typeof messages.$inferSelect): StoredMessage {
  return { id: row.id, room: row.room, sender: row.sender, content: row.content, clientMsgId: row.clientMsgId, createdAt: row.createdAt };
}
