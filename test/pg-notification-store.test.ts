import { afterAll, beforeAll, beforeEach, expect } from "bun:test";
import { sql } from "drizzle-orm";
import type { NewNotification } from "../src/store/notification-store.ts";
import type { PgDb } from "../src/store/pg-db.ts";
import { PgNotificationStore } from "../src/store/pg-notification-store.ts";
import { PgConnections, postgresTests, startPostgres, type Postgres } from "./support/postgres.ts";

// What only PgNotificationStore has, against a throwaway PostgreSQL: data and muted categories as
// jsonb values (not JSON strings), the jsonb null told apart from no data. What every
// NotificationStore does is in test/contract/notification-store.contract.ts.

const { test, available } = postgresTests();

const NOW = 100 * 86_400_000;

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
  createdAt: NOW,
  deliveredAt: null,
  ...over,
});

test("data is stored as the jsonb value itself; a JSON null is the jsonb null, no data is SQL NULL", async () => {
  await store.insert("acme", [
    note({ title: "a", data: { ticket: 42, tags: ["x"] } }),
    note({ title: "b", data: "plain" }),
    note({ title: "c", data: [1, 2] }),
    note({ title: "d", data: null }),
    note({ title: "e" }),
  ]);
  const kinds = (await db.execute<{ kind: string | null }>(sql`SELECT jsonb_typeof(data) AS kind FROM notifications ORDER BY id`)).map((r) => r.kind);
  expect(kinds).toEqual(["object", "string", "array", "null", null]);
  const listed = await store.list("acme", "u1", { unreadOnly: false, before: null, limit: 10 });
  expect(listed.map((r) => r.data)).toEqual([undefined, null, [1, 2], "plain", { ticket: 42, tags: ["x"] }]);
});

test("muted categories are stored as a jsonb array; a new set replaces it and its time", async () => {
  await store.setMutedCategories("acme", "u1", ["marketing", "digest", "marketing"], NOW);
  const [row] = await db.execute<{ kind: string; muted: unknown }>(sql`SELECT jsonb_typeof(muted_categories) AS kind, muted_categories AS muted FROM preferences`);
  expect(row).toEqual({ kind: "array", muted: ["marketing", "digest"] });
  await store.setMutedCategories("acme", "u1", [], NOW + 1);
  expect(await store.mutedCategories("acme", "u1")).toEqual([]);
  expect(Number((await db.execute<{ updated_at: string }>(sql`SELECT updated_at FROM preferences`))[0]!.updated_at)).toBe(NOW + 1);
});
