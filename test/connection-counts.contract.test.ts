import { describe, expect, test } from "bun:test";
import { MemoryConnectionCounts, type ConnectionCounts } from "../src/claims/connection-counts.ts";

// The guarantees written on ConnectionCounts (src/claims/connection-counts.ts), for each implementation.

const subjects: Record<string, () => ConnectionCounts & { size: number }> = {
  memory: () => new MemoryConnectionCounts(),
};
const LIMITS = { perUser: 3, perTenant: 5 };

for (const [name, make] of Object.entries(subjects)) {
  describe(`ConnectionCounts contract: ${name}`, () => {
    test("admits up to the user bound, then refuses naming it; a refusal counts nothing", async () => {
      const counts = make();
      const verdicts = [];
      for (let i = 0; i < 5; i++) verdicts.push(await counts.admit("acme", "ana", LIMITS));
      expect(verdicts).toEqual([null, null, null, "user", "user"]);
      expect(await counts.count("acme", "ana")).toEqual({ user: 3, tenant: 3 });
    });

    test("the tenant bound holds across users; another tenant is not counted", async () => {
      const counts = make();
      const verdicts = [];
      for (const user of ["a", "b", "c", "d", "e", "f"]) verdicts.push(await counts.admit("acme", user, LIMITS));
      expect(verdicts).toEqual([null, null, null, null, null, "tenant"]);
      expect(await counts.admit("globex", "a", LIMITS)).toBeNull();
      expect(await counts.count("globex", "a")).toEqual({ user: 1, tenant: 1 });
    });

    test("racing admits for the last slots never pass the bound", async () => {
      const counts = make();
      const verdicts = await Promise.all(Array.from({ length: 20 }, () => counts.admit("acme", "ana", LIMITS)));
      expect(verdicts.filter((v) => v === null)).toHaveLength(3);
      expect(await counts.count("acme", "ana")).toEqual({ user: 3, tenant: 3 });
    });

    test("a release frees the slot; after every release nothing is held", async () => {
      const counts = make();
      for (let i = 0; i < 3; i++) await counts.admit("acme", "ana", LIMITS);
      expect(await counts.admit("acme", "ana", LIMITS)).toBe("user");
      await counts.release("acme", "ana");
      expect(await counts.admit("acme", "ana", LIMITS)).toBeNull();
      for (let i = 0; i < 3; i++) await counts.release("acme", "ana");
      expect(await counts.count("acme", "ana")).toEqual({ user: 0, tenant: 0 });
      expect(counts.size).toBe(0);
    });
  });
}
