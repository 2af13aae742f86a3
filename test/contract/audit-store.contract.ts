import { describe, expect } from "bun:test";
import type { NewAuditEntry } from "../../src/store/audit-store.ts";
import { PRUNE_BATCH } from "../../src/store/prune.ts";
import { allDistinct, CUT, increasing, OLD, RECENT, writeInTurns } from "./helpers.ts";
import type { StoreSubject } from "./subjects.ts";

const entry = (over: Partial<NewAuditEntry>): NewAuditEntry => ({ tenant: "acme", at: RECENT, kind: "connect", actor: "user:a", detail: null, ...over });
const everything = { before: null, limit: 100_000, kind: null };

/** The AuditStore contract (src/store/audit-store.ts), run over each subject. */
export function auditStoreContract(subject: StoreSubject): void {
  const { test } = subject;

  describe(`AuditStore on ${subject.name}`, () => {
    subject.hooks();

    test("lists newest first per tenant, with before and kind; detail round-trips as an object or null", async () => {
      const { audit } = await subject.open();
      await audit.append([
        { tenant: "acme", at: 1, kind: "connect", actor: "user:aud", detail: { client: "c1" } },
        { tenant: "acme", at: 2, kind: "subscribe_denied", actor: "user:aud", detail: { client: "c1", channel: "user:other", code: "forbidden" } },
        { tenant: "globex", at: 3, kind: "connect", actor: "user:g", detail: null },
        { tenant: "acme", at: 4, kind: "disconnect", actor: "user:aud", detail: { client: "c1", code: 4000 } },
        { tenant: "acme", at: 5, kind: "rest_publish", actor: "key:k", detail: { count: 2, channels: ["dept:a", "dept:b"] } },
      ]);
      await audit.append([]);
      const all = await audit.list("acme", { before: null, limit: 10, kind: null });
      expect(all.map((e) => [e.kind, e.actor, e.detail])).toEqual([
        ["rest_publish", "key:k", { count: 2, channels: ["dept:a", "dept:b"] }],
        ["disconnect", "user:aud", { client: "c1", code: 4000 }],
        ["subscribe_denied", "user:aud", { client: "c1", channel: "user:other", code: "forbidden" }],
        ["connect", "user:aud", { client: "c1" }],
      ]);
      expect(all[0]).toEqual({ id: expect.any(Number), tenant: "acme", at: 5, kind: "rest_publish", actor: "key:k", detail: { count: 2, channels: ["dept:a", "dept:b"] } });
      expect((await audit.list("acme", { before: null, limit: 5, kind: "connect" })).map((e) => e.at)).toEqual([1]);
      expect((await audit.list("acme", { before: all[1]!.id, limit: 1, kind: null })).map((e) => e.kind)).toEqual(["subscribe_denied"]);
      expect((await audit.list("globex", { before: null, limit: 10, kind: null })).map((e) => e.detail)).toEqual([null]);
      expect(await audit.list("initech", { before: null, limit: 10, kind: null })).toEqual([]);
    });

    test("an append that fails partway stores none of its rows, small or past a thousand rows", async () => {
      const { audit } = await subject.open();
      const refused = entry({ kind: null as unknown as string });
      await expect(audit.append([entry({}), entry({}), refused])).rejects.toThrow();
      await expect(audit.append([...Array.from({ length: 2_500 }, () => entry({})), refused])).rejects.toThrow();
      expect(await audit.list("acme", everything)).toEqual([]);
      // A batch past a thousand rows goes in whole, in order.
      await audit.append(Array.from({ length: 2_500 }, (_, i) => entry({ at: i })));
      const stored = await audit.list("acme", everything);
      expect(stored.map((e) => e.at)).toEqual(Array.from({ length: 2_500 }, (_, i) => 2_499 - i));
    });

    test("everything survives a restart, and ids keep growing after it", async () => {
      const first = await subject.open();
      await first.audit.append([entry({ at: 1, detail: { client: "c1" } }), entry({ at: 2, kind: "disconnect" })]);
      const before = await first.audit.list("acme", everything);
      await first.close();

      const { audit } = await subject.open();
      expect(await audit.list("acme", everything)).toEqual(before);
      await audit.append([entry({ at: 3 })]);
      const [newest] = await audit.list("acme", { before: null, limit: 1, kind: null });
      expect(newest!.id).toBeGreaterThan(before[0]!.id);
    });

    test("two nodes appending at once: nothing lost, nothing duplicated, each node's rows in its order", async () => {
      const local = await subject.open();
      const peer = await subject.openPeer();
      const ROUNDS = 40;
      const rows = (who: string, i: number) => [0, 1].map((j) => entry({ actor: `user:${who}`, detail: { i, j } }));
      await Promise.all([
        writeInTurns(ROUNDS, async (i) => {
          await peer.ping();
          await local.audit.append(rows("a", i));
        }),
        writeInTurns(ROUNDS, (i) => peer.audit.append(rows("b", i))),
      ]);
      const stored = (await peer.audit.list("acme", everything)).reverse();
      expect(stored).toHaveLength(ROUNDS * 2 * 2);
      expect(allDistinct(stored.map((e) => e.id))).toBe(true);
      for (const who of ["a", "b"]) {
        const mine = stored.filter((e) => e.actor === `user:${who}`);
        expect(mine.map((e) => e.detail)).toEqual(Array.from({ length: ROUNDS * 2 }, (_, k) => ({ i: Math.floor(k / 2), j: k % 2 })));
        expect(increasing(mine.map((e) => e.id))).toBe(true);
      }
    });

    test("prune deletes entries older than the cut-off only, in batches past PRUNE_BATCH, all tenants", async () => {
      const { audit } = await subject.open();
      await audit.append([...Array.from({ length: PRUNE_BATCH + 10 }, (_, i) => entry({ at: OLD, tenant: i % 2 === 0 ? "acme" : "globex" })), entry({ at: CUT }), entry({ at: RECENT })]);
      expect(await audit.prune(CUT)).toBe(PRUNE_BATCH + 10);
      expect((await audit.list("acme", everything)).map((e) => e.at)).toEqual([RECENT, CUT]);
      expect(await audit.list("globex", everything)).toEqual([]);
      expect(await audit.prune(CUT)).toBe(0);
    }, 60_000);
  });
}
