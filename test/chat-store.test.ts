import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { NewMessage } from "../src/store/chat-store.ts";
import { openSqliteStore } from "../src/store/sqlite-store.ts";
import type { Store } from "../src/store/store.ts";

let dir: string;
let store: Store;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "sinal-chat-"));
  store = openSqliteStore(join(dir, "chat.db"));
});
afterEach(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

const msg = (over: Partial<NewMessage>): NewMessage => ({ tenant: "acme", room: "1", sender: "u1", content: "hi", clientMsgId: null, createdAt: 1000, ...over });

describe("SqliteChatStore", () => {
  test("stores a batch in order and creates the room open", async () => {
    const out = await store.chat.insertMessages([msg({ content: "a" }), msg({ content: "b", sender: "u2" })]);
    expect(out.map((o) => [o.message.content, o.duplicate])).toEqual([["a", false], ["b", false]]);
    expect(out[1]!.message.id).toBeGreaterThan(out[0]!.message.id);
    expect(await store.chat.getRoom("acme", "1")).toMatchObject({ id: "1", status: "open", assignedAgent: null, members: [] });
  });

  test("a repeated client_msg_id from the same sender returns the first message, in a later batch or the same one", async () => {
    const [first] = await store.chat.insertMessages([msg({ clientMsgId: "c1", content: "first" })]);
    const again = await store.chat.insertMessages([msg({ clientMsgId: "c1", content: "resend" }), msg({ clientMsgId: "c2" }), msg({ clientMsgId: "c2" })]);
    expect(again[0]).toEqual({ message: first!.message, duplicate: true });
    expect(again[1]!.duplicate).toBe(false);
    expect(again[2]).toEqual({ message: again[1]!.message, duplicate: true });
    // Another sender, room or tenant with the same client id is a different message.
    const others = await store.chat.insertMessages([msg({ clientMsgId: "c1", sender: "u2" }), msg({ clientMsgId: "c1", room: "2" }), msg({ clientMsgId: "c1", tenant: "globex" })]);
    expect(others.every((o) => !o.duplicate)).toBe(true);
    expect((await store.chat.listMessages("acme", "1", null, 50)).map((m) => m.content)).toEqual(["hi", "hi", "first"]);
  });

  test("pages newest first with before, scoped by tenant and room", async () => {
    for (let i = 1; i <= 5; i++) await store.chat.insertMessages([msg({ content: `m${i}` }), msg({ tenant: "globex", content: `g${i}` })]);
    const page1 = await store.chat.listMessages("acme", "1", null, 2);
    expect(page1.map((m) => m.content)).toEqual(["m5", "m4"]);
    const page2 = await store.chat.listMessages("acme", "1", page1[1]!.id, 2);
    expect(page2.map((m) => m.content)).toEqual(["m3", "m2"]);
    const page3 = await store.chat.listMessages("acme", "1", page2[1]!.id, 2);
    expect(page3.map((m) => m.content)).toEqual(["m1"]);
  });

  test("read receipts only move forward; unread counts others' messages after the receipt", async () => {
    const out = await store.chat.insertMessages([msg({ sender: "u1" }), msg({ sender: "u2" }), msg({ sender: "u1" }), msg({ sender: "u1" })]);
    const ids = out.map((o) => o.message.id);
    expect(await store.chat.unreadCount("acme", "1", "u2")).toBe(3);
    expect(await store.chat.markRead("acme", "1", "u2", ids[2]!, 2000)).toBe(ids[2]!);
    expect(await store.chat.markRead("acme", "1", "u2", ids[0]!, 2001)).toBe(ids[2]!);
    expect(await store.chat.unreadCount("acme", "1", "u2")).toBe(1);
    expect(await store.chat.unreadCount("acme", "1", "u1")).toBe(1);
    expect(await store.chat.unreadCount("globex", "1", "u2")).toBe(0);
  });

  test("a receipt for no message of the room (another room's, another tenant's, none at all) stores nothing", async () => {
    const [mine, otherRoom, otherTenant] = await store.chat.insertMessages([msg({}), msg({ room: "2" }), msg({ tenant: "globex" })]);
    for (const id of [otherRoom!.message.id, otherTenant!.message.id, 999_999]) expect(await store.chat.markRead("acme", "1", "u2", id, 2000)).toBeNull();
    expect(await store.chat.unreadCount("acme", "1", "u2")).toBe(1);
    expect(await store.chat.markRead("acme", "1", "u2", mine!.message.id, 2001)).toBe(mine!.message.id);
  });

  test("upsertRoom creates, then changes status, assignment, meta and adds members", async () => {
    const created = await store.chat.upsertRoom("acme", "9", { members: ["a"] }, 10);
    expect(created).toMatchObject({ created: true, room: { id: "9", status: "open", members: ["a"] } });
    const changed = await store.chat.upsertRoom("acme", "9", { status: "closed", assignedAgent: "ag", meta: { subject: "x" }, members: ["b", "a"] }, 20);
    expect(changed).toEqual({
      created: false,
      room: { id: "9", status: "closed", assignedAgent: "ag", meta: { subject: "x" }, members: ["a", "b"], createdAt: 10, updatedAt: 20 },
    });
    expect((await store.chat.upsertRoom("acme", "9", { assignedAgent: null }, 30)).room.assignedAgent).toBeNull();
    expect(await store.chat.getRoom("globex", "9")).toBeNull();
  });

  test("everything survives reopening the file", async () => {
    await store.chat.insertMessages([msg({ content: "kept" })]);
    await store.chat.markRead("acme", "1", "u2", 1, 5);
    await store.close();
    store = openSqliteStore(join(dir, "chat.db"));
    expect((await store.chat.listMessages("acme", "1", null, 10)).map((m) => m.content)).toEqual(["kept"]);
    expect(await store.chat.unreadCount("acme", "1", "u2")).toBe(0);
  });
});
