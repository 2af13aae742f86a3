import { describe, expect } from "bun:test";
import { createHash } from "node:crypto";
import pino from "pino";
import { createApiKey } from "../../src/auth/api-keys.ts";
import type { NewMessage } from "../../src/store/chat-store.ts";
import type { NewNotification } from "../../src/store/notification-store.ts";
import { Retention } from "../../src/store/retention.ts";
import type { Store } from "../../src/store/store.ts";
import { CUT, NOW, OLD, RECENT, writeInTurns } from "./helpers.ts";
import type { StoreSubject } from "./subjects.ts";

const answer = async (store: Store, tenant: string, key: string): Promise<string | null> => (await store.getIdempotent(tenant, [key])).get(key) ?? null;

/** A pino logger whose lines land in `lines`. */
function capturingLogger() {
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: "info" }, { write: (line: string) => void lines.push(JSON.parse(line)) });
  return { logger, lines };
}

/**
 * The contract of Store itself (src/store/store.ts): opening, ping and close, API keys, idempotent
 * answers, and retention (src/store/retention.ts) over a real store. The sub-stores have their own
 * suites (chat-store.contract.ts ...).
 */
export function storeContract(subject: StoreSubject): void {
  const { test } = subject;

  describe(`Store on ${subject.name}`, () => {
    subject.hooks();

    describe("open and close", () => {
      test("answers ping while open and refuses it after close; close twice is harmless; later calls fail", async () => {
        const store = await subject.open();
        expect(await store.ping()).toBe(true);
        await store.close();
        expect(await store.ping()).toBe(false);
        await store.close();
        await expect(store.listApiKeys("acme")).rejects.toThrow();
      });

      test("two nodes opening one fresh database at the same moment both open it, with one schema", async () => {
        const [a, b] = await Promise.all([subject.openPeer(), subject.openPeer()]);
        expect(await a.ping()).toBe(true);
        const { id } = await createApiKey(a, "acme");
        expect(await b.findApiKey(id)).toMatchObject({ id, tenant: "acme" });
      });
    });

    describe("api keys", () => {
      test("a stored key holds the SHA-256 of the secret and never the secret itself; times come back as numbers", async () => {
        const store = await subject.open();
        const { id, key } = await createApiKey(store, "acme");
        expect(key).toMatch(/^sk_[0-9a-f]{16}_[A-Za-z0-9_-]{20,}$/);
        const secret = key.slice(`sk_${id}_`.length);
        const stored = (await store.findApiKey(id))!;
        expect(stored).toEqual({ id, tenant: "acme", secretHash: createHash("sha256").update(secret).digest("hex"), createdAt: expect.any(Number), revokedAt: null });
        for (const value of Object.values(stored)) expect(String(value)).not.toContain(secret);
      });

      test("lists keys by tenant and revokes only an existing key", async () => {
        const store = await subject.open();
        const a = await createApiKey(store, "acme");
        const g = await createApiKey(store, "globex");
        expect((await store.listApiKeys("acme")).map((k) => k.id)).toEqual([a.id]);
        expect((await store.listApiKeys("globex")).map((k) => k.id)).toEqual([g.id]);
        expect(await store.listApiKeys("initech")).toEqual([]);

        expect(await store.revokeApiKey(a.id, 1234)).toBe(true);
        expect(await store.findApiKey(a.id)).toMatchObject({ id: a.id, revokedAt: 1234 });
        expect(await store.findApiKey(g.id)).toMatchObject({ id: g.id, revokedAt: null });
        expect(await store.revokeApiKey("0000000000000000", 1234)).toBe(false);
        expect(await store.findApiKey("0000000000000000")).toBeNull();
      });

      test("keys and revocations survive a restart", async () => {
        const first = await subject.open();
        const kept = await createApiKey(first, "acme");
        const revoked = await createApiKey(first, "acme");
        await first.revokeApiKey(revoked.id, 55);
        const before = await first.listApiKeys("acme");
        await first.close();

        const store = await subject.open();
        expect(await store.listApiKeys("acme")).toEqual(before);
        expect(await store.findApiKey(kept.id)).toMatchObject({ revokedAt: null });
        expect(await store.findApiKey(revoked.id)).toMatchObject({ revokedAt: 55 });
      });

      test("a key one node creates or revokes is seen by the other at once", async () => {
        const a = await subject.open();
        const b = await subject.openPeer();
        const { id } = await createApiKey(a, "acme");
        expect(await b.findApiKey(id)).toMatchObject({ id, tenant: "acme", revokedAt: null });
        expect(await b.revokeApiKey(id, 55)).toBe(true);
        expect(await a.findApiKey(id)).toMatchObject({ revokedAt: 55 });
      });
    });

    describe("idempotency", () => {
      test("a second put for the same tenant and key keeps the first answer; another tenant holds its own", async () => {
        const store = await subject.open();
        expect(await answer(store, "acme", "k1")).toBeNull();
        await store.putIdempotent([{ tenant: "acme", key: "k1", response: '{"offset":1}' }], 1000);
        await store.putIdempotent([{ tenant: "acme", key: "k1", response: '{"offset":2}' }], 2000);
        expect(await answer(store, "acme", "k1")).toBe('{"offset":1}');
        expect(await answer(store, "globex", "k1")).toBeNull();
        await store.putIdempotent([{ tenant: "globex", key: "k1", response: '{"offset":7}' }], 1000);
        expect(await answer(store, "acme", "k1")).toBe('{"offset":1}');
        expect(await answer(store, "globex", "k1")).toBe('{"offset":7}');
        await store.putIdempotent([], 1000);
        expect(await store.getIdempotent("acme", [])).toEqual(new Map());
      });

      test("the same key twice in one batch keeps the first; a batch of thousands is read back whole", async () => {
        const store = await subject.open();
        const many = Array.from({ length: 2_500 }, (_, i) => ({ tenant: "acme", key: `k${i}`, response: String(i) }));
        await store.putIdempotent([{ tenant: "acme", key: "dup", response: "first" }, ...many, { tenant: "acme", key: "dup", response: "second" }], 1000);
        const found = await store.getIdempotent("acme", [...many.map((e) => e.key), "dup", "missing"]);
        expect(found.size).toBe(2_501);
        expect(found.get("dup")).toBe("first");
        expect(found.get("k2499")).toBe("2499");
      });

      test("a put that fails partway keeps none of its answers, small or past a thousand", async () => {
        const store = await subject.open();
        const refused = { tenant: "acme", key: "refused", response: null as unknown as string };
        const many = Array.from({ length: 2_500 }, (_, i) => ({ tenant: "acme", key: `k${i}`, response: String(i) }));
        await expect(store.putIdempotent([{ tenant: "acme", key: "a", response: "1" }, refused], 1000)).rejects.toThrow();
        await expect(store.putIdempotent([...many, refused], 1000)).rejects.toThrow();
        expect((await store.getIdempotent("acme", ["a", ...many.map((e) => e.key)])).size).toBe(0);
      });

      test("pruneIdempotency deletes only answers created before the cut-off, all tenants", async () => {
        const store = await subject.open();
        await store.putIdempotent([{ tenant: "acme", key: "old", response: "1" }], 1000);
        await store.putIdempotent([{ tenant: "globex", key: "old", response: "1" }], 1999);
        await store.putIdempotent([{ tenant: "acme", key: "edge", response: "2" }], 2000);
        await store.putIdempotent([{ tenant: "acme", key: "new", response: "3" }], 3000);

        expect(await store.pruneIdempotency(2000)).toBe(2);
        expect(await answer(store, "acme", "old")).toBeNull();
        expect(await answer(store, "globex", "old")).toBeNull();
        expect(await answer(store, "acme", "edge")).toBe("2");
        expect(await answer(store, "acme", "new")).toBe("3");
        expect(await store.pruneIdempotency(2000)).toBe(0);
      });

      test("answers survive a restart, and still win over a later put", async () => {
        const first = await subject.open();
        await first.putIdempotent([{ tenant: "acme", key: "k1", response: '{"offset":1}' }], 1000);
        await first.close();
        const store = await subject.open();
        expect(await store.getIdempotent("acme", ["k1", "k2"])).toEqual(new Map([["k1", '{"offset":1}']]));
        await store.putIdempotent([{ tenant: "acme", key: "k1", response: '{"offset":9}' }], 2000);
        expect(await answer(store, "acme", "k1")).toBe('{"offset":1}');
      });

      test("two nodes putting one key at once: exactly one answer is kept, the same for both, never replaced", async () => {
        const local = await subject.open();
        const peer = await subject.openPeer();
        for (let round = 0; round < 20; round++) {
          const key = `k${round}`;
          // Overlapping batches in opposite orders: no deadlock, one answer per key.
          await Promise.all([
            peer.putIdempotent([{ tenant: "acme", key: `${key}x`, response: "peer" }, { tenant: "acme", key, response: "peer" }], 1000),
            local.putIdempotent([{ tenant: "acme", key, response: "local" }, { tenant: "acme", key: `${key}x`, response: "local" }], 1000),
          ]);
          const seenHere = await local.getIdempotent("acme", [key, `${key}x`]);
          expect(await peer.getIdempotent("acme", [key, `${key}x`])).toEqual(seenHere);
          expect(["local", "peer"]).toContain(seenHere.get(key)!);
          expect(["local", "peer"]).toContain(seenHere.get(`${key}x`)!);
        }
        // A later put of a stored key, from either node, never replaces the first answer.
        const first = await answer(local, "acme", "k0");
        await peer.putIdempotent([{ tenant: "acme", key: "k0", response: "late" }], 2000);
        await local.putIdempotent([{ tenant: "acme", key: "k0", response: "later" }], 2000);
        expect(await answer(peer, "acme", "k0")).toBe(first);
      });

      test("two nodes putting many answers at once: every one is kept, once", async () => {
        const local = await subject.open();
        const peer = await subject.openPeer();
        const batch = (who: string, i: number) => Array.from({ length: 20 }, (_, j) => ({ tenant: "acme", key: `${who}${i}.${j}`, response: `${who}${i}.${j}` }));
        await Promise.all([
          writeInTurns(30, async (i) => {
            await peer.ping();
            await local.putIdempotent(batch("a", i), 1000);
          }),
          writeInTurns(30, (i) => peer.putIdempotent(batch("b", i), 1000)),
        ]);
        const keys = ["a", "b"].flatMap((who) => Array.from({ length: 30 }, (_, i) => batch(who, i).map((e) => e.key)).flat());
        const found = await local.getIdempotent("acme", keys);
        expect(found.size).toBe(keys.length);
        for (const key of keys) expect(found.get(key)).toBe(key);
        expect(await local.pruneIdempotency(1001)).toBe(keys.length);
      });
    });

    describe("Retention (MESSAGE_RETENTION_DAYS, NOTIFICATION_RETENTION_DAYS) over this store", () => {
      const msg = (over: Partial<NewMessage>): NewMessage => ({ tenant: "acme", room: "1", sender: "u1", content: "hi", clientMsgId: null, createdAt: RECENT, ...over });
      const note = (over: Partial<NewNotification>): NewNotification => ({ user: "u1", category: "general", title: "t", message: "m", data: undefined, action: null, createdAt: RECENT, deliveredAt: null, ...over });
      const noFailures = { backgroundFailed: (err: unknown) => { throw err; } };

      async function seeded(): Promise<{ store: Store; counts: () => Promise<{ messages: number; notifications: number }> }> {
        const store = await subject.open();
        await store.chat.insertMessages([msg({ createdAt: OLD }), msg({})]);
        await store.notifications.insert("acme", [note({ createdAt: OLD }), note({})]);
        const counts = async () => ({
          messages: (await store.chat.listMessages("acme", "1", null, 50)).length,
          notifications: (await store.notifications.list("acme", "u1", { unreadOnly: false, before: null, limit: 50 })).length,
        });
        return { store, counts };
      }

      test("prunes nothing and schedules nothing when both retentions are unset", async () => {
        const { store, counts } = await seeded();
        const { logger, lines } = capturingLogger();
        const retention = new Retention(store, { messageDays: null, notificationDays: null }, logger, noFailures);
        expect(retention.start(() => false)).toEqual([]);
        await retention.run(NOW);
        expect(await counts()).toEqual({ messages: 2, notifications: 2 });
        expect(lines).toEqual([]);
      });

      test("prunes each kind by its own retention and logs how many rows went", async () => {
        const { store, counts } = await seeded();
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
        const { store, counts } = await seeded();
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

      test("a prune cut off by the store closing under it is not counted while stopping", async () => {
        const { store } = await seeded();
        const failed: string[] = [];
        await store.close();
        const retention = new Retention(store, { messageDays: 7, notificationDays: 7 }, capturingLogger().logger, { backgroundFailed: (_err, source) => void failed.push(source) });
        let stopping = false;
        const run = retention.run(NOW, () => stopping);
        stopping = true;
        await run;
        expect(failed).toEqual([]);
        // Not stopping, the same failure is counted.
        await retention.run(NOW);
        expect(failed).toEqual(["message_prune", "notification_prune"]);
      });
    });
  });
}
