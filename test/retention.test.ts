import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { ConfigError, loadConfig } from "../src/config.ts";
import type { NewMessage } from "../src/store/chat-store.ts";
import type { NewNotification } from "../src/store/notification-store.ts";
import { Retention } from "../src/store/retention.ts";
import { PRUNE_BATCH } from "../src/store/prune.ts";
import { openSqliteStore } from "../src/store/sqlite-store.ts";
import type { Store } from "../src/store/store.ts";

const DAY = 86_400_000;
const NOW = 100 * DAY;
const OLD = NOW - 10 * DAY;
const RECENT = NOW - DAY;
const CUT = NOW - 7 * DAY;

let dir: string;
let store: Store;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "sinal-retention-"));
  store = openSqliteStore(join(dir, "retention.db"));
});
afterEach(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

const msg = (over: Partial<NewMessage>): NewMessage => ({ tenant: "acme", room: "1", sender: "u1", content: "hi", clientMsgId: null, createdAt: RECENT, ...over });
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

/** A pino logger whose lines land in `lines`. */
function capturingLogger() {
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: "info" }, { write: (line: string) => void lines.push(JSON.parse(line)) });
  return { logger, lines };
}

describe("ChatStore.prune", () => {
  test("deletes the messages stored before the cut-off and keeps the recent ones and the room", async () => {
    await store.chat.upsertRoom("acme", "1", { members: ["u1", "u2"], meta: { topic: "billing" } }, OLD);
    await store.chat.insertMessages([msg({ content: "a", createdAt: OLD }), msg({ content: "b", createdAt: OLD, room: "2", tenant: "globex" }), msg({ content: "c" })]);
    await store.chat.insertMessages([msg({ content: "only old", room: "3", createdAt: OLD })]);

    expect(await store.chat.prune(CUT)).toBe(3);
    expect((await store.chat.listMessages("acme", "1", null, 50)).map((m) => m.content)).toEqual(["c"]);
    expect(await store.chat.listMessages("globex", "2", null, 50)).toEqual([]);
    // A room whose messages all went stays, with its members and meta.
    expect(await store.chat.getRoom("acme", "3")).toMatchObject({ id: "3", status: "open" });
    expect(await store.chat.getRoom("acme", "1")).toMatchObject({ members: ["u1", "u2"], meta: { topic: "billing" } });
    expect(await store.chat.prune(CUT)).toBe(0);
  });

  test("unread counts count the kept messages after a receipt that points at a pruned one", async () => {
    const stored = await store.chat.insertMessages([
      msg({ sender: "u1", createdAt: OLD }),
      msg({ sender: "u1", createdAt: OLD }),
      msg({ sender: "u1" }),
      msg({ sender: "u3" }),
    ]);
    const ids = stored.map((s) => s.message.id);
    await store.chat.markRead("acme", "1", "u2", ids[1]!, OLD);
    await store.chat.markRead("acme", "1", "u3", ids[0]!, OLD);

    await store.chat.prune(CUT);
    expect(await store.chat.unreadCount("acme", "1", "u2")).toBe(2);
    // u3's own message does not count; its receipt on a pruned message still orders.
    expect(await store.chat.unreadCount("acme", "1", "u3")).toBe(1);
    // No receipt: every kept message by someone else.
    expect(await store.chat.unreadCount("acme", "1", "u4")).toBe(2);
    // A pruned message is no message of the room any more: a read of it stores nothing.
    expect(await store.chat.markRead("acme", "1", "u4", ids[0]!, NOW)).toBeNull();
    expect(await store.chat.markRead("acme", "1", "u2", ids[3]!, NOW)).toBe(ids[3]!);
    expect(await store.chat.unreadCount("acme", "1", "u2")).toBe(0);
  });

  test("after every message went, new ones get higher ids, so old receipts do not hide them", async () => {
    const [first] = await store.chat.insertMessages([msg({ createdAt: OLD }), msg({ createdAt: OLD })]).then((s) => s.slice(-1));
    await store.chat.markRead("acme", "1", "u2", first!.message.id, OLD);
    expect(await store.chat.prune(NOW)).toBe(2);

    const [next] = await store.chat.insertMessages([msg({ createdAt: NOW })]);
    expect(next!.message.id).toBeGreaterThan(first!.message.id);
    expect(await store.chat.unreadCount("acme", "1", "u2")).toBe(1);
  });

  test("a big prune goes in batches with turns of the event loop between them", async () => {
    const total = PRUNE_BATCH * 2 + 500;
    await store.chat.insertMessages(Array.from({ length: total }, () => msg({ createdAt: OLD })));
    await store.chat.insertMessages([msg({ content: "kept" })]);

    const order: string[] = [];
    const pruned = store.chat.prune(CUT).then((n) => {
      order.push("pruned");
      return n;
    });
    setImmediate(() => order.push("event loop turn"));
    expect(await pruned).toBe(total);
    expect(order).toEqual(["event loop turn", "pruned"]);
    expect((await store.chat.listMessages("acme", "1", null, 50)).map((m) => m.content)).toEqual(["kept"]);
  });
});

describe("NotificationStore.prune", () => {
  test("deletes old notifications whether read, delivered or pending, and keeps recent ones", async () => {
    await store.notifications.insert("acme", [
      note({ title: "old read", createdAt: OLD, deliveredAt: OLD }),
      note({ title: "old pending", user: "u2", createdAt: OLD }),
      note({ title: "old delivered", createdAt: OLD, deliveredAt: OLD }),
      note({ title: "recent pending" }),
    ]);
    await store.notifications.markRead("acme", "u1", null, OLD);
    await store.notifications.insert("acme", [note({ title: "recent read" })]);

    expect(await store.notifications.prune(CUT)).toBe(3);
    const list = await store.notifications.list("acme", "u1", { unreadOnly: false, before: null, limit: 50 });
    expect(list.map((n) => n.title)).toEqual(["recent read", "recent pending"]);
    // u2's only pending notification went with its age: nothing is pushed at its next connect.
    expect(await store.notifications.pending("acme", "u2", 100)).toEqual([]);
    expect(await store.notifications.usersWithPending()).toEqual([{ tenant: "acme", user: "u1" }]);
  });
});

describe("AuditStore.prune", () => {
  test("deletes old entries in batches and keeps recent ones", async () => {
    const row = (at: number) => ({ tenant: "acme", at, kind: "connect", actor: "user:u1", detail: null });
    await store.audit.append([...Array.from({ length: PRUNE_BATCH + 10 }, () => row(OLD)), row(RECENT)]);
    expect(await store.audit.prune(CUT)).toBe(PRUNE_BATCH + 10);
    expect((await store.audit.list("acme", { before: null, limit: 10, kind: null })).map((e) => e.at)).toEqual([RECENT]);
  });
});

describe("Retention", () => {
  async function seed() {
    await store.chat.insertMessages([msg({ createdAt: OLD }), msg({})]);
    await store.notifications.insert("acme", [note({ createdAt: OLD }), note({})]);
  }
  const counts = async () => ({
    messages: (await store.chat.listMessages("acme", "1", null, 50)).length,
    notifications: (await store.notifications.list("acme", "u1", { unreadOnly: false, before: null, limit: 50 })).length,
  });
  const noFailures = { backgroundFailed: (err: unknown) => { throw err; } };

  test("prunes nothing and schedules nothing when both retentions are unset", async () => {
    await seed();
    const { logger, lines } = capturingLogger();
    const retention = new Retention(store, { messageDays: null, notificationDays: null }, logger, noFailures);
    expect(retention.start(() => false)).toEqual([]);
    await retention.run(NOW);
    expect(await counts()).toEqual({ messages: 2, notifications: 2 });
    expect(lines).toEqual([]);
  });

  test("prunes each kind by its own retention and logs how many rows went", async () => {
    await seed();
    const { logger, lines } = capturingLogger();
    await new Retention(store, { messageDays: 7, notificationDays: null }, logger, noFailures).run(NOW);
    expect(await counts()).toEqual({ messages: 1, notifications: 2 });
    await new Retention(store, { messageDays: 30, notificationDays: 7 }, logger, noFailures).run(NOW);
    expect(await counts()).toEqual({ messages: 1, notifications: 1 });
    expect(lines.map((l) => [l.level, l.kind, l.pruned, l.before])).toEqual([
      [30, "messages", 1, CUT],
      [30, "notifications", 1, CUT],
    ]);
  });

  test("a failed prune is counted as background work that failed, and the next kind still runs", async () => {
    await seed();
    const failed: string[] = [];
    // Retention only reaches the two prune methods.
    const broken = { chat: { prune: () => Promise.reject(new Error("disk I/O error")) }, notifications: store.notifications } as unknown as Store;
    const retention = new Retention(broken, { messageDays: 7, notificationDays: 7 }, capturingLogger().logger, { backgroundFailed: (_err, source) => void failed.push(source) });
    await retention.run(NOW);
    expect(failed).toEqual(["message_prune"]);
    expect(await counts()).toEqual({ messages: 2, notifications: 1 });
    // Failing while the server stops (the store closing under it) is not a failure.
    await retention.run(NOW, () => true);
    expect(failed).toEqual(["message_prune"]);
  });
});

describe("MESSAGE_RETENTION_DAYS and NOTIFICATION_RETENTION_DAYS", () => {
  const SECRET = "x".repeat(32);
  const load = (env: Record<string, string>) => loadConfig({ JWT_SECRET: SECRET, ...env });

  test("unset or empty keep everything; a whole number of days is taken", () => {
    expect(load({}).retention).toEqual({ messageDays: null, notificationDays: null });
    expect(load({ MESSAGE_RETENTION_DAYS: "", NOTIFICATION_RETENTION_DAYS: "" }).retention).toEqual({ messageDays: null, notificationDays: null });
    expect(load({ MESSAGE_RETENTION_DAYS: "90", NOTIFICATION_RETENTION_DAYS: "1" }).retention).toEqual({ messageDays: 90, notificationDays: 1 });
  });

  for (const variable of ["MESSAGE_RETENTION_DAYS", "NOTIFICATION_RETENTION_DAYS"]) {
    test(`${variable} refuses 0, fractions, words and more than 3650, naming the variable`, () => {
      for (const bad of ["0", "1.5", "-3", "30d", "forever", "3651"]) {
        let error: unknown = null;
        try {
          load({ [variable]: bad });
        } catch (err) {
          error = err;
        }
        expect(error).toBeInstanceOf(ConfigError);
        expect((error as ConfigError).variable).toBe(variable);
        expect((error as Error).message.startsWith(`${variable}: `)).toBe(true);
      }
    });
  }

  test("refuses messages kept for less time than room history, which recovery would replay", () => {
    expect(() => load({ MESSAGE_RETENTION_DAYS: "1", HISTORY_ROOM: "1000,48h" })).toThrow(/^MESSAGE_RETENTION_DAYS: 1 day\(s\) is shorter than the age room history keeps \(48 h/);
    expect(load({ MESSAGE_RETENTION_DAYS: "2", HISTORY_ROOM: "1000,48h" }).retention.messageDays).toBe(2);
    expect(load({ MESSAGE_RETENTION_DAYS: "1", HISTORY_ROOM: "off" }).retention.messageDays).toBe(1);
    // The default room history (24 h) fits the shortest retention.
    expect(load({ MESSAGE_RETENTION_DAYS: "1" }).retention.messageDays).toBe(1);
  });
});
