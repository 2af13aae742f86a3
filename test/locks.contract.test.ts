import { describe, expect, test } from "bun:test";
import type { Locks } from "../src/locks/locks.ts";
import { MemoryLocks } from "../src/locks/memory-locks.ts";

// The guarantees written on Locks (src/locks/locks.ts), for each implementation; a shared (Redis)
// one joins the list.

const subjects: Record<string, () => Locks> = {
  memory: () => new MemoryLocks(),
};
const TTL = 1_000;
const MAX = 3;

for (const [name, make] of Object.entries(subjects)) {
  describe(`Locks contract: ${name}`, () => {
    test("of users racing for a free lock exactly one gets it; the others are told who holds it", async () => {
      const locks = make();
      const results = await Promise.all(["ana", "bob", "cy", "dee"].map((user, i) => locks.acquire("acme", "customer:7", user, `c${i}`, 0, TTL, MAX)));
      const winners = results.filter((r) => r.ok);
      expect(winners).toHaveLength(1);
      const holder = (winners[0] as { lock: { user: string } }).lock.user;
      for (const r of results.filter((r) => !r.ok)) expect(r).toMatchObject({ ok: false, lock: { user: holder } });
    });

    test("the holder renews from any of its connections; the lock then goes with the connection that renewed it", async () => {
      const locks = make();
      expect(await locks.acquire("acme", "doc:1", "ana", "tab1", 0, TTL, MAX)).toMatchObject({ ok: true, renewed: false });
      expect(await locks.acquire("acme", "doc:1", "ana", "tab2", 100, TTL, MAX)).toMatchObject({ ok: true, renewed: true, lock: { connection: "tab2", expiresAt: 1100 } });
      expect(await locks.releaseConnection("acme", "tab1")).toEqual([]);
      expect((await locks.releaseConnection("acme", "tab2")).map((l) => l.resource)).toEqual(["doc:1"]);
      expect(await locks.acquire("acme", "doc:1", "bob", "b1", 200, TTL, MAX)).toMatchObject({ ok: true });
    });

    test("a user holds at most maxPerUser locks; a renewal passes at the quota; a release frees a place", async () => {
      const locks = make();
      for (let i = 0; i < MAX; i++) expect((await locks.acquire("acme", `r:${i}`, "ana", "c", 0, TTL, MAX)).ok).toBe(true);
      expect(await locks.acquire("acme", "r:extra", "ana", "c", 0, TTL, MAX)).toEqual({ ok: false, lock: null, quota: MAX });
      expect((await locks.acquire("acme", "r:0", "ana", "c", 10, TTL, MAX)).ok).toBe(true);
      expect(await locks.release("acme", "r:1", "ana")).toMatchObject({ released: { resource: "r:1" }, heldBy: null });
      expect((await locks.acquire("acme", "r:extra", "ana", "c", 20, TTL, MAX)).ok).toBe(true);
    });

    test("release by another user releases nothing and names the holder; an unheld lock releases nothing", async () => {
      const locks = make();
      await locks.acquire("acme", "doc:2", "ana", "c", 0, TTL, MAX);
      expect(await locks.release("acme", "doc:2", "bob")).toMatchObject({ released: null, heldBy: { user: "ana" } });
      expect(await locks.release("acme", "doc:none", "bob")).toEqual({ released: null, heldBy: null });
    });

    test("a lock not renewed for its TTL is free, and expire hands it out once", async () => {
      const locks = make();
      await locks.acquire("acme", "doc:3", "ana", "c", 0, TTL, MAX);
      expect(await locks.expire(TTL - 1)).toEqual([]);
      const [first, second] = await Promise.all([locks.expire(TTL), locks.expire(TTL)]);
      expect([...first!, ...second!].map((e) => `${e.tenant}/${e.lock.resource}`)).toEqual(["acme/doc:3"]);
      expect(await locks.acquire("acme", "doc:3", "bob", "b", TTL + 1, TTL, MAX)).toMatchObject({ ok: true, lock: { user: "bob" } });
    });

    test("a lock past its TTL is free to acquire even before a sweep expired it", async () => {
      const locks = make();
      await locks.acquire("acme", "doc:5", "ana", "c", 0, TTL, MAX);
      expect(await locks.acquire("acme", "doc:5", "bob", "b", TTL - 1, TTL, MAX)).toMatchObject({ ok: false, lock: { user: "ana" } });
      expect(await locks.acquire("acme", "doc:5", "bob", "b", TTL + 1, TTL, MAX)).toMatchObject({ ok: true, lock: { user: "bob" } });
    });

    test("tenants never share locks: the same resource in two tenants is two locks", async () => {
      const locks = make();
      expect((await locks.acquire("acme", "doc:4", "ana", "c1", 0, TTL, MAX)).ok).toBe(true);
      expect((await locks.acquire("globex", "doc:4", "bob", "c2", 0, TTL, MAX)).ok).toBe(true);
      expect(await locks.releaseConnection("acme", "c2")).toEqual([]);
    });
  });
}
