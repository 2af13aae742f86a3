import { describe, expect } from "bun:test";
import type { NewMessage } from "../../src/store/chat-store.ts";
import { PRUNE_BATCH } from "../../src/store/prune.ts";
import { allDistinct, CUT, increasing, NOW, OLD, RECENT, writeInTurns } from "./helpers.ts";
import type { StoreSubject } from "./subjects.ts";

const msg = (over: Partial<NewMessage>): NewMessage => ({ tenant: "acme", room: "1", sender: "u1", content: "hi", clientMsgId: null, createdAt: 1000, ...over });
/** A value the schema refuses (content is NOT NULL): makes a write fail partway. */
const REFUSED = null as unknown as string;

/** The ChatStore contract (src/store/chat-store.ts), run over each subject. */
export function chatStoreContract(subject: StoreSubject): void {
  const { test } = subject;

  describe(`ChatStore on ${subject.name}`, () => {
    subject.hooks();

    test("stores a batch in order and creates the room open; an empty batch stores nothing", async () => {
      const { chat } = await subject.open();
      const out = await chat.insertMessages([msg({ content: "a" }), msg({ content: "b", sender: "u2" })]);
      expect(out.map((o) => [o.message.content, o.duplicate])).toEqual([["a", false], ["b", false]]);
      expect(typeof out[0]!.message.id).toBe("number");
      expect(out[1]!.message.id).toBeGreaterThan(out[0]!.message.id);
      expect(out[0]!.message).toEqual({ id: out[0]!.message.id, room: "1", sender: "u1", content: "a", clientMsgId: null, createdAt: 1000 });
      expect(await chat.getRoom("acme", "1")).toEqual({ id: "1", status: "open", assignedAgent: null, meta: null, members: [], createdAt: 1000, updatedAt: 1000 });
      expect(await chat.insertMessages([])).toEqual([]);
    });

    test("a repeated client_msg_id from the same sender returns the first message, in a later batch or the same one", async () => {
      const { chat } = await subject.open();
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

    test("a batch that fails partway stores nothing, not even its room; the next message creates the room", async () => {
      const { chat } = await subject.open();
      await chat.insertMessages([msg({ room: "old" })]);
      await expect(chat.insertMessages([msg({ room: "old", content: "a" }), msg({ room: "new", content: "b" }), msg({ room: "new", content: REFUSED })])).rejects.toThrow();
      expect(await chat.getRoom("acme", "new")).toBeNull();
      expect(await chat.listMessages("acme", "new", null, 10)).toEqual([]);
      expect((await chat.listMessages("acme", "old", null, 10)).map((m) => m.content)).toEqual(["hi"]);
      // Nothing of the failed batch is remembered either (a store caching known rooms forgets them).
      await chat.insertMessages([msg({ room: "new", content: "c" })]);
      expect(await chat.getRoom("acme", "new")).toMatchObject({ id: "new", status: "open" });
      expect((await chat.listMessages("acme", "new", null, 10)).map((m) => m.content)).toEqual(["c"]);
    });

    test("pages newest first with before, scoped by tenant and room", async () => {
      const { chat } = await subject.open();
      for (let i = 1; i <= 5; i++) await chat.insertMessages([msg({ content: `m${i}` }), msg({ tenant: "globex", content: `g${i}` }), msg({ room: "2", content: `r${i}` })]);
      const page1 = await chat.listMessages("acme", "1", null, 2);
      expect(page1.map((m) => m.content)).toEqual(["m5", "m4"]);
      const page2 = await chat.listMessages("acme", "1", page1[1]!.id, 2);
      expect(page2.map((m) => m.content)).toEqual(["m3", "m2"]);
      const page3 = await chat.listMessages("acme", "1", page2[1]!.id, 2);
      expect(page3.map((m) => m.content)).toEqual(["m1"]);
      expect(await chat.listMessages("initech", "1", null, 10)).toEqual([]);
    });

    test("read receipts only move forward; unread counts others' messages after the receipt", async () => {
      const { chat } = await subject.open();
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
      const { chat } = await subject.open();
      const [mine, otherRoom, otherTenant] = await chat.insertMessages([msg({}), msg({ room: "2" }), msg({ tenant: "globex" })]);
      for (const id of [otherRoom!.message.id, otherTenant!.message.id, 999_999]) expect(await chat.markRead("acme", "1", "u2", id, 2000)).toBeNull();
      expect(await chat.unreadCount("acme", "1", "u2")).toBe(1);
      expect(await chat.markRead("acme", "1", "u2", mine!.message.id, 2001)).toBe(mine!.message.id);
    });

    test("upsertRoom creates, then changes status, assignment, meta and adds members", async () => {
      const { chat } = await subject.open();
      const created = await chat.upsertRoom("acme", "9", { members: ["a"] }, 10);
      expect(created).toMatchObject({ created: true, room: { id: "9", status: "open", members: ["a"] } });
      const meta = { subject: "x", tags: ["a", "b"], nested: { n: 1, ok: true } };
      const changed = await chat.upsertRoom("acme", "9", { status: "closed", assignedAgent: "ag", meta, members: ["b", "a"] }, 20);
      expect(changed).toEqual({ created: false, room: { id: "9", status: "closed", assignedAgent: "ag", meta, members: ["a", "b"], createdAt: 10, updatedAt: 20 } });
      expect((await chat.upsertRoom("acme", "9", { assignedAgent: null }, 30)).room).toMatchObject({ assignedAgent: null, status: "closed", meta, updatedAt: 30 });
      expect(await chat.getRoom("globex", "9")).toBeNull();
      expect(await chat.members("acme", "9")).toEqual(["a", "b"]);
      expect(await chat.members("acme", "nope")).toEqual([]);
    });

    test("an upsertRoom that fails partway leaves neither the room nor any change", async () => {
      const { chat } = await subject.open();
      await expect(chat.upsertRoom("acme", "new", { status: "closed", members: ["a", REFUSED] }, 10)).rejects.toThrow();
      expect(await chat.getRoom("acme", "new")).toBeNull();
      expect(await chat.members("acme", "new")).toEqual([]);
      await chat.upsertRoom("acme", "kept", { members: ["a"] }, 10);
      await expect(chat.upsertRoom("acme", "kept", { status: "closed", meta: { x: 1 }, members: ["b", REFUSED] }, 20)).rejects.toThrow();
      expect(await chat.getRoom("acme", "kept")).toEqual({ id: "kept", status: "open", assignedAgent: null, meta: null, members: ["a"], createdAt: 10, updatedAt: 10 });
    });

    test("everything survives a restart, and ids keep growing after it", async () => {
      const first = await subject.open();
      const [kept] = await first.chat.insertMessages([msg({ content: "kept", clientMsgId: "c1" }), msg({ sender: "u2", content: "other" })]);
      await first.chat.upsertRoom("acme", "1", { assignedAgent: "ag", meta: { topic: "billing" }, members: ["u1", "u2"] }, 2000);
      await first.chat.markRead("acme", "1", "u2", kept!.message.id, 3000);
      await first.close();

      const { chat } = await subject.open();
      expect((await chat.listMessages("acme", "1", null, 10)).map((m) => m.content)).toEqual(["other", "kept"]);
      expect(await chat.getRoom("acme", "1")).toEqual({ id: "1", status: "open", assignedAgent: "ag", meta: { topic: "billing" }, members: ["u1", "u2"], createdAt: 1000, updatedAt: 2000 });
      expect(await chat.unreadCount("acme", "1", "u2")).toBe(0);
      expect(await chat.insertMessages([msg({ content: "resend", clientMsgId: "c1" })])).toEqual([{ message: kept!.message, duplicate: true }]);
      const [next] = await chat.insertMessages([msg({ content: "after" })]);
      expect(next!.message.id).toBeGreaterThan(kept!.message.id + 1);
    });

    describe("two nodes on one database", () => {
      test("writing at once, nothing is lost and nothing duplicated; each node's messages keep their order", async () => {
        const local = await subject.open();
        const peer = await subject.openPeer();
        const ROUNDS = 60;
        const batch = (who: string, i: number) => [0, 1, 2].map((j) => msg({ room: `r${i % 4}`, sender: who, content: `${who}.${i}.${j}` }));
        // This process's writes wait a round trip to the peer between them (a sqlite write here is
        // synchronous, and would otherwise all be done before the peer's first one arrives).
        const [byLocal, byPeer] = await Promise.all([
          writeInTurns(ROUNDS, async (i) => {
            await peer.ping();
            return local.chat.insertMessages(batch("a", i));
          }),
          writeInTurns(ROUNDS, (i) => peer.chat.insertMessages(batch("b", i))),
        ]);

        const returned = [...byLocal, ...byPeer].flat();
        expect(returned.every((o) => !o.duplicate)).toBe(true);
        expect(allDistinct(returned.map((o) => o.message.id))).toBe(true);
        for (const mine of [byLocal, byPeer]) expect(increasing(mine.flat().map((o) => o.message.id))).toBe(true);
        const stored = (await Promise.all([0, 1, 2, 3].map((r) => local.chat.listMessages("acme", `r${r}`, null, 1_000)))).flat();
        expect(stored).toHaveLength(ROUNDS * 3 * 2);
        expect(new Map(stored.map((m) => [m.id, m]))).toEqual(new Map(returned.map((o) => [o.message.id, o.message])));
        // The peer reads the same.
        expect(await peer.chat.listMessages("acme", "r0", null, 1_000)).toEqual(await local.chat.listMessages("acme", "r0", null, 1_000));
      });

      test("racing the same (room, sender, client_msg_id): exactly one stores it, the other gets that first copy", async () => {
        const local = await subject.open();
        const peer = await subject.openPeer();
        for (let round = 0; round < 20; round++) {
          const clientMsgId = `race-${round}`;
          const room = `r${round % 3}`;
          const [p, l] = await Promise.all([
            peer.chat.insertMessages([msg({ room, clientMsgId, content: "from the peer" })]),
            local.chat.insertMessages([msg({ room, clientMsgId, content: "from here" })]),
          ]);
          expect(l[0]!.message).toEqual(p[0]!.message);
          expect([l[0]!.duplicate, p[0]!.duplicate].sort()).toEqual([false, true]);
          const stored = (await local.chat.listMessages("acme", room, null, 100)).filter((m) => m.clientMsgId === clientMsgId);
          expect(stored).toEqual([l[0]!.message]);
        }
      });

      test("upserting one room and moving receipts at once: one creates it, members add up, receipts end at the furthest", async () => {
        const local = await subject.open();
        const peer = await subject.openPeer();
        const [p, l] = await Promise.all([
          peer.chat.upsertRoom("acme", "both", { members: ["p1", "shared"] }, 10),
          local.chat.upsertRoom("acme", "both", { members: ["l1", "shared"] }, 10),
        ]);
        expect([l.created, p.created].sort()).toEqual([false, true]);
        expect((await local.chat.members("acme", "both")).sort()).toEqual(["l1", "p1", "shared"]);

        const ids = (await local.chat.insertMessages(Array.from({ length: 40 }, (_, i) => msg({ room: "both", sender: "l1", content: `m${i}` })))).map((o) => o.message.id);
        const reads = (node: typeof local, order: number[]) => writeInTurns(order.length, (i) => node.chat.markRead("acme", "both", "shared", order[i]!, 20));
        const [fromPeer, fromLocal] = await Promise.all([reads(peer, ids), reads(local, [...ids].reverse()), writeInTurns(20, (i) => peer.chat.insertMessages([msg({ room: "both", sender: "p1", content: `late${i}` })]))]);
        // A receipt never moves back, whichever node wrote last.
        for (const seen of [fromPeer, fromLocal]) expect(seen.every((id, i) => i === 0 || id! >= seen[i - 1]!)).toBe(true);
        expect(fromLocal.every((id) => id === ids.at(-1))).toBe(true);
        expect(await peer.chat.unreadCount("acme", "both", "shared")).toBe(20);
      });
    });

    describe("prune (MESSAGE_RETENTION_DAYS)", () => {
      const recent = (over: Partial<NewMessage>) => msg({ createdAt: RECENT, ...over });

      test("deletes the messages stored before the cut-off, all tenants, and keeps the recent ones and the rooms", async () => {
        const { chat } = await subject.open();
        await chat.upsertRoom("acme", "1", { members: ["u1", "u2"], meta: { topic: "billing" } }, OLD);
        await chat.insertMessages([recent({ content: "a", createdAt: OLD }), recent({ content: "b", createdAt: OLD, room: "2", tenant: "globex" }), recent({ content: "c" })]);
        await chat.insertMessages([recent({ content: "only old", room: "3", createdAt: OLD })]);
        await chat.insertMessages([recent({ content: "at the cut-off", createdAt: CUT })]);

        expect(await chat.prune(CUT)).toBe(3);
        expect((await chat.listMessages("acme", "1", null, 50)).map((m) => m.content)).toEqual(["at the cut-off", "c"]);
        expect(await chat.listMessages("globex", "2", null, 50)).toEqual([]);
        // A room whose messages all went stays, with its members and meta.
        expect(await chat.getRoom("acme", "3")).toMatchObject({ id: "3", status: "open" });
        expect(await chat.getRoom("acme", "1")).toMatchObject({ members: ["u1", "u2"], meta: { topic: "billing" } });
        expect(await chat.prune(CUT)).toBe(0);
      });

      test("unread counts count the kept messages after a receipt that points at a pruned one", async () => {
        const { chat } = await subject.open();
        const stored = await chat.insertMessages([recent({ sender: "u1", createdAt: OLD }), recent({ sender: "u1", createdAt: OLD }), recent({ sender: "u1" }), recent({ sender: "u3" })]);
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

      test("after every message went, new ones get higher ids, so old receipts do not hide them, across a restart too", async () => {
        const first = await subject.open();
        const [last] = await first.chat.insertMessages([recent({ createdAt: OLD }), recent({ createdAt: OLD })]).then((s) => s.slice(-1));
        await first.chat.markRead("acme", "1", "u2", last!.message.id, OLD);
        expect(await first.chat.prune(NOW)).toBe(2);
        await first.close();

        const { chat } = await subject.open();
        const [next] = await chat.insertMessages([recent({ createdAt: NOW })]);
        expect(next!.message.id).toBeGreaterThan(last!.message.id);
        expect(await chat.unreadCount("acme", "1", "u2")).toBe(1);
      });

      test("a big prune goes in batches, across tenants, with turns of the event loop between them", async () => {
        const { chat } = await subject.open();
        await subject.seed("messages", { tenant: "acme", count: PRUNE_BATCH + 300, createdAt: OLD });
        await subject.seed("messages", { tenant: "globex", count: PRUNE_BATCH, createdAt: OLD });
        await chat.insertMessages([recent({ content: "kept" })]);

        const order: string[] = [];
        const pruned = chat.prune(CUT).then((n) => {
          order.push("pruned");
          return n;
        });
        setImmediate(() => order.push("event loop turn"));
        expect(await pruned).toBe(PRUNE_BATCH * 2 + 300);
        expect(order).toEqual(["event loop turn", "pruned"]);
        expect((await chat.listMessages("acme", "1", null, 50)).map((m) => m.content)).toEqual(["kept"]);
        expect(await chat.listMessages("globex", "1", null, 50)).toEqual([]);
      }, 60_000);

      test("two nodes pruning while both write: every old message goes once, no new one goes", async () => {
        const local = await subject.open();
        const peer = await subject.openPeer();
        await subject.seed("messages", { tenant: "acme", count: 3_000, createdAt: OLD });
        const [byPeer, byLocal] = await Promise.all([peer.chat.prune(CUT), local.chat.prune(CUT), writeInTurns(20, (i) => peer.chat.insertMessages([recent({ content: `new${i}`, clientMsgId: `n${i}` })]))]);
        expect(byPeer + byLocal).toBe(3_000);
        expect(await local.chat.listMessages("acme", "1", null, 50)).toHaveLength(20);
      }, 60_000);
    });
  });
}
