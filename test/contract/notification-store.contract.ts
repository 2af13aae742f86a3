import { describe, expect } from "bun:test";
import type { NewNotification } from "../../src/store/notification-store.ts";
import { PRUNE_BATCH } from "../../src/store/prune.ts";
import { allDistinct, CUT, increasing, NOW, OLD, RECENT, writeInTurns } from "./helpers.ts";
import type { StoreSubject } from "./subjects.ts";

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
const all = { unreadOnly: false, before: null, limit: 1_000 };

/** The NotificationStore contract (src/store/notification-store.ts), run over each subject. */
export function notificationStoreContract(subject: StoreSubject): void {
  const { test } = subject;

  describe(`NotificationStore on ${subject.name}`, () => {
    subject.hooks();

    test("insert returns the rows with their ids in order; data round-trips as the value itself, or stays absent", async () => {
      const { notifications } = await subject.open();
      const rows = await notifications.insert("acme", [
        note({ title: "a", data: { ticket: 42, tags: ["x"] }, action: "/t/42" }),
        note({ title: "b", data: "plain" }),
        note({ title: "c", data: [1, 2] }),
        note({ title: "d", data: null }),
        note({ title: "e" }),
      ]);
      expect(rows.map((r) => r.title)).toEqual(["a", "b", "c", "d", "e"]);
      expect(increasing(rows.map((r) => r.id))).toBe(true);
      expect(rows.map((r) => r.data)).toEqual([{ ticket: 42, tags: ["x"] }, "plain", [1, 2], null, undefined]);
      expect(rows[0]).toEqual({ id: rows[0]!.id, user: "u1", category: "general", title: "a", message: "m", data: { ticket: 42, tags: ["x"] }, action: "/t/42", createdAt: RECENT, deliveredAt: null, readAt: null });
      expect(await notifications.list("acme", "u1", all)).toEqual([...rows].reverse());
      expect(await notifications.insert("acme", [])).toEqual([]);
    });

    test("an insert that fails partway stores none of its rows", async () => {
      const { notifications } = await subject.open();
      const refused = note({ title: null as unknown as string });
      await expect(notifications.insert("acme", [note({ title: "a" }), note({ title: "b", user: "u2" }), refused])).rejects.toThrow();
      expect(await notifications.list("acme", "u1", all)).toEqual([]);
      expect(await notifications.usersWithPending()).toEqual([]);
    });

    test("pending, markDelivered, usersWithPending: per tenant and user, oldest first, delivered once", async () => {
      const { notifications } = await subject.open();
      const [a, b] = await notifications.insert("acme", [note({ title: "a" }), note({ title: "b" }), note({ title: "muted", deliveredAt: RECENT })]);
      await notifications.insert("other", [note({ title: "elsewhere" })]);
      await notifications.insert("acme", [note({ user: "u2", title: "u2's" })]);
      expect((await notifications.pending("acme", "u1", 10)).map((n) => n.title)).toEqual(["a", "b"]);
      expect((await notifications.pending("acme", "u1", 1)).map((n) => n.title)).toEqual(["a"]);
      expect(await notifications.usersWithPending()).toEqual(
        expect.arrayContaining([
          { tenant: "acme", user: "u1" },
          { tenant: "acme", user: "u2" },
          { tenant: "other", user: "u1" },
        ]),
      );
      // Another user's or tenant's ids are never changed.
      expect(await notifications.markDelivered("acme", "u2", [a!.id], NOW)).toEqual([]);
      expect(await notifications.markDelivered("other", "u1", [a!.id], NOW)).toEqual([]);
      expect((await notifications.markDelivered("acme", "u1", [a!.id, b!.id], NOW)).sort((x, y) => x - y)).toEqual([a!.id, b!.id]);
      expect(await notifications.markDelivered("acme", "u1", [a!.id, b!.id], NOW)).toEqual([]);
      expect(await notifications.markDelivered("acme", "u1", [], NOW)).toEqual([]);
      expect(await notifications.pending("acme", "u1", 10)).toEqual([]);
      expect((await notifications.list("acme", "u1", { unreadOnly: false, before: null, limit: 1 }))[0]).toMatchObject({ title: "muted", deliveredAt: RECENT });
      const usersLeft = await notifications.usersWithPending();
      expect(usersLeft).toHaveLength(2);
      expect(usersLeft).toEqual(expect.arrayContaining([{ tenant: "acme", user: "u2" }, { tenant: "other", user: "u1" }]));
      // A read notification is no longer pending either.
      await notifications.markRead("acme", "u2", null, NOW);
      expect(await notifications.pending("acme", "u2", 10)).toEqual([]);
      expect(await notifications.usersWithPending()).toEqual([{ tenant: "other", user: "u1" }]);
    });

    test("list: newest first, unread only, before an id, limit; markRead counts what it changed", async () => {
      const { notifications } = await subject.open();
      const ids: number[] = [];
      for (let i = 1; i <= 3; i++) ids.push((await notifications.insert("acme", [note({ title: `n${i}` })]))[0]!.id);
      await notifications.insert("acme", [note({ user: "u2", title: "not mine" })]);
      expect(await notifications.markRead("acme", "u1", [ids[0]!], NOW)).toBe(1);
      expect(await notifications.markRead("acme", "u1", [ids[0]!], NOW)).toBe(0);
      expect(await notifications.markRead("acme", "u1", [], NOW)).toBe(0);
      expect(await notifications.markRead("other", "u1", [ids[1]!], NOW)).toBe(0);
      expect((await notifications.list("acme", "u1", { unreadOnly: true, before: null, limit: 50 })).map((n) => n.title)).toEqual(["n3", "n2"]);
      expect((await notifications.list("acme", "u1", { unreadOnly: false, before: ids[2]!, limit: 1 })).map((n) => n.title)).toEqual(["n2"]);
      expect((await notifications.list("acme", "u1", all)).map((n) => [n.title, n.readAt])).toEqual([
        ["n3", null],
        ["n2", null],
        ["n1", NOW],
      ]);
      expect(await notifications.markRead("acme", "u1", null, NOW)).toBe(2);
      expect(await notifications.list("acme", "u1", { unreadOnly: true, before: null, limit: 50 })).toEqual([]);
      expect(await notifications.list("acme", "u2", { unreadOnly: true, before: null, limit: 50 })).toHaveLength(1);
    });

    test("muted categories: none by default, kept without repeats, replaced by the next set, per tenant and user", async () => {
      const { notifications } = await subject.open();
      expect(await notifications.mutedCategories("acme", "u1")).toEqual([]);
      await notifications.setMutedCategories("acme", "u1", ["marketing", "digest", "marketing"], NOW);
      expect(await notifications.mutedCategories("acme", "u1")).toEqual(["marketing", "digest"]);
      expect(await notifications.mutedCategories("acme", "u2")).toEqual([]);
      expect(await notifications.mutedCategories("other", "u1")).toEqual([]);
      await notifications.setMutedCategories("acme", "u1", [], NOW + 1);
      expect(await notifications.mutedCategories("acme", "u1")).toEqual([]);
    });

    test("everything survives a restart, and ids keep growing after it", async () => {
      const first = await subject.open();
      const [read, pending] = await first.notifications.insert("acme", [note({ title: "read", data: { n: 1 } }), note({ title: "pending" })]);
      await first.notifications.markRead("acme", "u1", [read!.id], NOW);
      await first.notifications.setMutedCategories("acme", "u1", ["digest"], NOW);
      await first.close();

      const { notifications } = await subject.open();
      expect(await notifications.list("acme", "u1", all)).toEqual([pending!, { ...read!, readAt: NOW }]);
      expect(await notifications.pending("acme", "u1", 10)).toEqual([pending!]);
      expect(await notifications.mutedCategories("acme", "u1")).toEqual(["digest"]);
      const [next] = await notifications.insert("acme", [note({ title: "after" })]);
      expect(next!.id).toBeGreaterThan(pending!.id);
    });

    describe("two nodes on one database", () => {
      test("inserting at once, nothing is lost and nothing duplicated", async () => {
        const local = await subject.open();
        const peer = await subject.openPeer();
        const ROUNDS = 40;
        const batch = (who: string, i: number) => [note({ title: `${who}${i}` }), note({ user: "u2", title: `${who}${i}` })];
        const [byLocal, byPeer] = await Promise.all([
          writeInTurns(ROUNDS, async (i) => {
            await peer.ping();
            return local.notifications.insert("acme", batch("a", i));
          }),
          writeInTurns(ROUNDS, (i) => peer.notifications.insert("acme", batch("b", i))),
        ]);
        const returned = [...byLocal, ...byPeer].flat();
        expect(allDistinct(returned.map((n) => n.id))).toBe(true);
        for (const mine of [byLocal, byPeer]) expect(increasing(mine.flat().map((n) => n.id))).toBe(true);
        const stored = [...(await local.notifications.list("acme", "u1", all)), ...(await local.notifications.list("acme", "u2", all))];
        expect(stored).toHaveLength(ROUNDS * 2 * 2);
        expect(new Map(stored.map((n) => [n.id, n]))).toEqual(new Map(returned.map((n) => [n.id, n])));
      });

      test("racing markDelivered on the same ids: each id is claimed by exactly one node", async () => {
        const local = await subject.open();
        const peer = await subject.openPeer();
        const ids = (await local.notifications.insert("acme", Array.from({ length: 200 }, (_, i) => note({ title: `n${i}` })))).map((n) => n.id);
        const reversed = [...ids].reverse();
        // In pieces and in both orders, so the claims interleave row by row.
        const claim = (node: typeof local, order: number[]) => writeInTurns(4, (i) => node.notifications.markDelivered("acme", "u1", order.slice(i * 50, i * 50 + 50), NOW)).then((parts) => parts.flat());
        const claims = await Promise.all([claim(peer, ids), claim(local, reversed), claim(peer, reversed), claim(local, ids)]);
        const claimed = claims.flat().sort((a, b) => a - b);
        expect(claimed).toEqual(ids);
        expect(await local.notifications.pending("acme", "u1", 500)).toEqual([]);
        expect(await peer.notifications.markDelivered("acme", "u1", ids, NOW + 1)).toEqual([]);
      });
    });

    describe("prune (NOTIFICATION_RETENTION_DAYS)", () => {
      test("deletes old notifications whether read, delivered or pending, and keeps recent ones", async () => {
        const { notifications } = await subject.open();
        await notifications.insert("acme", [
          note({ title: "old read", createdAt: OLD, deliveredAt: OLD }),
          note({ title: "old pending", user: "u2", createdAt: OLD }),
          note({ title: "old delivered", createdAt: OLD, deliveredAt: OLD }),
          note({ title: "recent pending" }),
        ]);
        await notifications.markRead("acme", "u1", null, OLD);
        await notifications.insert("acme", [note({ title: "recent read" }), note({ title: "at the cut-off", createdAt: CUT })]);
        await notifications.insert("other", [note({ title: "old elsewhere", createdAt: OLD })]);

        expect(await notifications.prune(CUT)).toBe(4);
        const list = await notifications.list("acme", "u1", all);
        expect(list.map((n) => n.title)).toEqual(["at the cut-off", "recent read", "recent pending"]);
        // u2's only pending notification went with its age: nothing is pushed at its next connect.
        expect(await notifications.pending("acme", "u2", 100)).toEqual([]);
        expect(await notifications.usersWithPending()).toEqual([{ tenant: "acme", user: "u1" }]);
        expect(await notifications.prune(CUT)).toBe(0);
      });

      test("a big prune goes in batches, across tenants, with turns of the event loop between them", async () => {
        const { notifications } = await subject.open();
        await subject.seed("notifications", { tenant: "acme", count: PRUNE_BATCH + 23, createdAt: OLD });
        await subject.seed("notifications", { tenant: "other", count: 12, createdAt: OLD });
        await notifications.insert("acme", [note({ title: "kept" })]);

        const order: string[] = [];
        const pruned = notifications.prune(CUT).then((n) => {
          order.push("pruned");
          return n;
        });
        setImmediate(() => order.push("event loop turn"));
        expect(await pruned).toBe(PRUNE_BATCH + 35);
        expect(order).toEqual(["event loop turn", "pruned"]);
        expect((await notifications.list("acme", "u1", all)).map((n) => n.title)).toEqual(["kept"]);
        expect(await notifications.list("other", "u1", all)).toEqual([]);
      }, 60_000);
    });
  });
}
