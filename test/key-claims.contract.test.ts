import { describe, expect, test } from "bun:test";
import { MemoryKeyClaims, type KeyClaims } from "../src/claims/key-claims.ts";

// The guarantees written on KeyClaims (src/claims/key-claims.ts), for each implementation.

const subjects: Record<string, () => KeyClaims & { size: number }> = {
  memory: () => new MemoryKeyClaims(),
};

for (const [name, make] of Object.entries(subjects)) {
  describe(`KeyClaims contract: ${name}`, () => {
    test("a held key makes a second acquire wait until it is released", async () => {
      const claims = make();
      const order: string[] = [];
      const first = await claims.acquire(["t\u0000k1"], 60_000);
      const second = claims.acquire(["t\u0000k1"], 60_000).then((release) => {
        order.push("second holds");
        return release;
      });
      await Bun.sleep(20);
      order.push("first releases");
      first();
      (await second)();
      expect(order).toEqual(["first releases", "second holds"]);
      expect(claims.size).toBe(0);
    });

    test("overlapping key sets in any order: each holder has all its keys or none, and every request gets through", async () => {
      const claims = make();
      const holding = new Map<string, string>();
      const clashes: string[] = [];
      const request = async (id: string, keys: string[]) => {
        const release = await claims.acquire(keys, 60_000);
        for (const k of keys) {
          if (holding.has(k)) clashes.push(`${id} and ${holding.get(k)} both hold ${k}`);
          holding.set(k, id);
        }
        await Bun.sleep(1);
        for (const k of keys) holding.delete(k);
        release();
      };
      await Promise.all(Array.from({ length: 60 }, (_, i) => request(`r${i}`, i % 2 === 0 ? ["a", "b", `own${i}`] : ["b", "a"])));
      expect(clashes).toEqual([]);
      expect(claims.size).toBe(0);
    });

    test("different keys do not wait for each other", async () => {
      const claims = make();
      const a = await claims.acquire(["x"], 60_000);
      const b = await Promise.race([claims.acquire(["y"], 60_000), Bun.sleep(200).then(() => null)]);
      expect(b).not.toBeNull();
      a();
      b!();
    });
  });
}
