import { afterAll, beforeAll, beforeEach, expect } from "bun:test";
import { sql } from "drizzle-orm";
import type { NewNotification } from "../src/store/notification-store.ts";
import type { PgDb } from "../src/store/pg-db.ts";
import { PgNotificationStore } from "../src/store/pg-notification-store.ts";
import { PgConnections, postgresTests, startPostgres, type Postgres } from "./support/postgres.ts";

// PgNotificationStore against a throwaway PostgreSQL: the store cases of the SQLite store
// (retention.test.ts, notifications.test.ts), and the claim two nodes race on.

const { test, available } = postgresTests();

const DAY = 86_400_000;
const NOW = 100 * DAY;
const OLD = NOW - 10 * DAY;
const RECENT = NOW - DAY;
const CUT = NOW - 7 * DAY;

let pg: Postgres | undefined;
const connections = new PgConnections();
let db: PgDb;
let store: PgNotificationStore;

const open = (url: string): PgDb => connections.open(url);

beforeAll(async () => {
  if (!available) return;
  pg = await startPostgres("sinal_notifications");
  db = open(pg.url);
  await connections.migrate(db);
  store = new PgNotificationStore(db);
}, 90_000);

afterAll(async () => {
  await connections.close();
  await pg?.stop();
});

beforeEach(async () => {
  if (!available) return;
  await db.execute(sql`TRUNCATE notifications, preferences RESTART IDENTITY`);
});

const note = (over: Partial<NewNotification>): NewNotification => ({
  user: "u1",
  category: "general",
  title: "t",
  message: "m",
  data: undefined,
  action: null,
  createdAt: RECENT,
  deliveredAt: null,
  ...over,
});

test("insert returns the rows with their ids in order; data round-trips as jsonb values, not strings", async () => {
  const rows = await store.insert("acme", [
    note({ title: "a", data: { ticket: 42, tags: ["x"] } }),
    note({ title: "b", data: "plain" }),
    note({ title: "c", data: [1, 2] }),
    note({ title: "d", data: null }),
    note({ title: "e" }),
  ]);
  expect(rows.map((r) => r.title)).toEqual(["a", "b", "c", "d", "e"]);
  expect(rows.map((r) => r.id)).toEqual([...rows.map((r) => r.id)].sort((a, b) => a - b));
  expect(rows.map((r) => r.data)).toEqual([{ ticket: 42, tags: ["x"] }, "plain", [1, 2], null, undefined]);
  expect(rows[0]).toEqual({ id: rows[0]!.id, user: "u1", category: "general", title: "a", message: "m", data: { ticket: 42, tags: ["x"] }, action: null, createdAt: RECENT, deliveredAt: null, readAt: null });
  const kinds = (await db.execute<{ kind: string | null }>(sql`SELECT jsonb_typeof(data) AS kind FROM notifications ORDER BY id`)).map((r) => r.kind);
  expect(kinds).toEqual(["object", "string", "array", "null", null]);
  const listed = await store.list("acme", "u1", { unreadOnly: false, before: null, limit: 10 });
  expect(listed.map((r) => r.data)).toEqual([undefined, null, [1, 2], "plain", { ticket: 42, tags: ["x"] }]);
  expect(await store.insert("acme", [])).toEqual([]);
});

test("pending, markDelivered, usersWithPending: per tenant and user, oldest first, delivered once", async () => {
  const [a, b] = await store.insert("acme", [note({ title: "a" }), note({ title: "b" }), note({ title: "muted", deliveredAt: RECENT })]);
  await store.insert("other", [note({ title: "elsewhere" })]);
  await store.insert("acme", [note({ user: "u2", title: "u2's" })]);
  expect((await store.pending("acme", "u1", 10)).map((n) => n.title)).toEqual(["a", "b"]);
  expect((await store.pending("acme", "u1", 1)).map((n) => n.title)).toEqual(["a"]);
  expect(await store.usersWithPending()).toEqual(
    expect.arrayContaining([
      { tenant: "acme", user: "u1" },
      { tenant: "acme", user: "u2" },
      { tenant: "other", user: "u1" },
    ]),
  );
  // Another user's or tenant's ids are never changed.
  expect(await store.markDelivered("acme", "u2", [a!.id], NOW)).toEqual([]);
  expect(await store.markDelivered("other", "u1", [a!.id], NOW)).toEqual([]);
  expect(await store.markDelivered("acme", "u1", [a!.id, b!.id], NOW)).toEqual([a!.id, b!.id]);
  expect(await store.markDelivered("acme", "u1", [a!.id, b!.id], NOW)).toEqual([]);
  expect(await store.markDelivered("acme", "u1", [], NOW)).toEqual([]);
  expect(await store.pending("acme", "u1", 10)).toEqual([]);
  expect((await store.list("acme", "u1", { unreadOnly: false, before: null, limit: 1 }))[0]).toMatchObject({ deliveredAt: RECENT });
  const usersLeft = await store.usersWithPending();
  expect(usersLeft).toHaveLength(2);
  expect(usersLeft).toEqual(expect.arrayContaining([{ tenant: "acme", user: "u2" }, { tenant: "other", user: "u1" }]));
  // A read notification is no longer pending either.
  await store.markRead("acme", "u2", null, NOW);
  expect(await store.pending("acme", "u2", 10)).toEqual([]);
  expect(await store.usersWithPending()).toEqual([{ tenant: "other", user: "u1" }]);
});

test("two nodes racing markDelivered on the same ids: each id is claimed by exactly one", async () => {
  const other = new PgNotificationStore(open(pg!.url));
  const rows = await store.insert("acme", Array.from({ length: 200 }, (_, i) => note({ title: `n${i}` })));
  const ids = rows.map((r) => r.id);
  const reversed = [...ids].reverse();
  for (let round = 0; round < 3; round++) {
    const claims = await Promise.all(
      Array.from({ length: 8 }, (_, i) => {
        const node = i % 2 === 0 ? store : other;
        // In pieces and in both orders, so the claims interleave row by row.
        const order = i % 4 < 2 ? ids : reversed;
        return Promise.all([0, 50, 100, 150].map((from) => node.markDelivered("acme", "u1", order.slice(from, from + 50), NOW + round))).then((parts) => parts.flat());
      }),
    );
    const all = claims.flat();
    if (round === 0) {
      expect(all.sort((a, b) => a - b)).toEqual(ids);
      expect(new Set(all).size).toBe(all.length);
    } else {
      expect(all).toEqual([]);
    }
  }
  expect(await store.pending("acme", "u1", 500)).toEqual([]);
});

test("list: newest first, unread only, before an id, limit; markRead counts what it changed", async () => {
  const ids: number[] = [];
  for (let i = 1; i <= 3; i++) ids.push((await store.insert("acme", [note({ title: `n${i}` })]))[0]!.id);
  await store.insert("acme", [note({ user: "u2", title: "not mine" })]);
  expect(await store.markRead("acme", "u1", [ids[0]!], NOW)).toBe(1);
  expect(await store.markRead("acme", "u1", [ids[0]!], NOW)).toBe(0);
  expect(await store.markRead("acme", "u1", [], NOW)).toBe(0);
  expect(await store.markRead("other", "u1", [ids[1]!], NOW)).toBe(0);
  expect((await store.list("acme", "u1", { unreadOnly: true, before: null, limit: 50 })).map((n) => n.title)).toEqual(["n3", "n2"]);
  expect((await store.list("acme", "u1", { unreadOnly: false, before: ids[2]!, limit: 1 })).map((n) => n.title)).toEqual(["n2"]);
  expect((await store.list("acme", "u1", { unreadOnly: false, before: null, limit: 50 })).map((n) => [n.title, n.readAt])).toEqual([
    ["n3", null],
    ["n2", null],
    ["n1", NOW],
  ]);
  expect(await store.markRead("acme", "u1", null, NOW)).toBe(2);
  expect(await store.list("acme", "u1", { unreadOnly: true, before: null, limit: 50 })).toEqual([]);
  expect(await store.list("acme", "u2", { unreadOnly: true, before: null, limit: 50 })).toHaveLength(1);
});

test("muted categories: none by default, stored as a jsonb array without repeats, replaced by the next set", async () => {
  expect(await store.mutedCategories("acme", "u1")).toEqual([]);
  await store.setMutedCategories("acme", "u1", ["marketing", "digest", "marketing"], NOW);
  expect(await store.mutedCategories("acme", "u1")).toEqual(["marketing", "digest"]);
  expect(await store.mutedCategories("acme", "u2")).toEqual([]);
  expect(await store.mutedCategories("other", "u1")).toEqual([]);
  const [row] = await db.execute<{ kind: string; updated_at: string }>(sql`SELECT jsonb_typeof(muted_categories) AS kind, updated_at FROM preferences`);
  expect(row!.kind).toBe("array");
  await store.setMutedCategories("acme", "u1", [], NOW + 1);
  expect(await store.mutedCategories("acme", "u1")).toEqual([]);
  expect(Number((await db.execute<{ updated_at: string }>(sql`SELECT updated_at FROM preferences`))[0]!.updated_at)).toBe(NOW + 1);
});

test("prune deletes old notifications whether read, delivered or pending, and keeps recent ones", async () => {
  await store.insert("acme", [
    note({ title: "old read", createdAt: OLD, deliveredAt: OLD }),
    note({ title: "old pending", user: "u2", createdAt: OLD }),
    note({ title: "old delivered", createdAt: OLD, deliveredAt: OLD }),
    note({ title: "recent pending" }),
  ]);
  await store.markRead("acme", "u1", null, OLD);
  await store.insert("acme", [note({ title: "recent read" })]);

  expect(await store.prune(CUT)).toBe(3);
  const list = await store.list("acme", "u1", { unreadOnly: false, before: null, limit: 50 });
  expect(list.map((n) => n.title)).toEqual(["recent read", "recent pending"]);
  expect(await store.pending("acme", "u2", 100)).toEqual([]);
  expect(await store.usersWithPending()).toEqual([{ tenant: "acme", user: "u1" }]);
});

test("prune goes in bounded batches across tenants until a batch deletes fewer than its limit", async () => {
  await store.insert("acme", Array.from({ length: 23 }, () => note({ createdAt: OLD })));
  await store.insert("other", Array.from({ length: 12 }, () => note({ createdAt: OLD })));
  await store.insert("acme", [note({ title: "kept" })]);
  const statements: string[] = [];
  const spy = new PgNotificationStore(
    new Proxy(db, {
      get(target, prop, receiver) {
        if (prop === "delete") statements.push("delete");
        return Reflect.get(target, prop, receiver);
      },
    }),
  );
  expect(await spy.prune(CUT, 10)).toBe(35);
  // 10 + 10 + 10 + 5: four statements of at most ten rows.
  expect(statements).toHaveLength(4);
  expect((await store.list("acme", "u1", { unreadOnly: false, before: null, limit: 50 })).map((n) => n.title)).toEqual(["kept"]);
  expect(await store.list("other", "u1", { unreadOnly: false, before: null, limit: 50 })).toEqual([]);
  expect(await store.prune(CUT)).toBe(0);
});
