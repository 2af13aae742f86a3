import { describe, expect } from "bun:test";
import type { FeedPosition } from "../../src/store/feed-store.ts";
import { writeInTurns } from "./helpers.ts";
import type { StoreSubject } from "./subjects.ts";

const position = (over: Partial<FeedPosition>): FeedPosition => ({ feed: "roulettes", source: "runcash.roulettes", token: '{"_data":"T1"}', updatedAt: 1000, fence: 1, ...over });

/** A fencing token as the leases give them: about the wall clock in ms, above 2^32. */
const CLOCK_FENCE = 1_796_316_550_220;

/** The FeedStore contract (src/store/feed-store.ts), run over each subject. */
export function feedStoreContract(subject: StoreSubject): void {
  const { test } = subject;

  describe(`FeedStore on ${subject.name}`, () => {
    subject.hooks();

    test("save replaces, get reads, clear forgets", async () => {
      const { feeds } = await subject.open();
      expect(await feeds.get("roulettes")).toBeNull();
      expect(await feeds.save(position({}))).toBe(true);
      expect(await feeds.save(position({ feed: "strategies", source: "runcash.strategies", token: '{"_data":"S1"}' }))).toBe(true);
      expect(await feeds.save(position({ source: "runcash.other", token: '{"_data":"T2"}', updatedAt: 2000 }))).toBe(true);
      expect(await feeds.get("roulettes")).toEqual({ feed: "roulettes", source: "runcash.other", token: '{"_data":"T2"}', updatedAt: 2000, fence: 1 });
      expect(await feeds.clear("roulettes", 1)).toBe(true);
      expect(await feeds.get("roulettes")).toBeNull();
      expect(await feeds.get("strategies")).toEqual(position({ feed: "strategies", source: "runcash.strategies", token: '{"_data":"S1"}' }));
      expect(await feeds.clear("nothing", 1)).toBe(true);
      expect(await feeds.get("nothing")).toBeNull();
    });

    test("a save with a lower fence than the stored one is refused and leaves the newer position; an equal or higher fence saves", async () => {
      const { feeds } = await subject.open();
      const newer = position({ token: '{"_data":"T5"}', updatedAt: 5000, fence: CLOCK_FENCE });
      expect(await feeds.save(newer)).toBe(true);
      expect(await feeds.save(position({ token: '{"_data":"T3"}', updatedAt: 6000, fence: CLOCK_FENCE - 1 }))).toBe(false);
      expect(await feeds.save(position({ source: "runcash.other", token: '{"_data":"T9"}', updatedAt: 7000, fence: 0 }))).toBe(false);
      expect(await feeds.get("roulettes")).toEqual(newer);

      const same = position({ token: '{"_data":"T6"}', updatedAt: 8000, fence: CLOCK_FENCE });
      expect(await feeds.save(same)).toBe(true);
      expect(await feeds.get("roulettes")).toEqual(same);
      const higher = position({ token: '{"_data":"T7"}', updatedAt: 9000, fence: CLOCK_FENCE + 1 });
      expect(await feeds.save(higher)).toBe(true);
      expect(await feeds.get("roulettes")).toEqual(higher);
      expect(await feeds.save(same)).toBe(false);
      expect(await feeds.get("roulettes")).toEqual(higher);
    });

    test("a clear with a lower fence leaves the position; after a clear with fence N a save below N is refused and get stays null, one at N or above saves", async () => {
      const { feeds } = await subject.open();
      const saved = position({ fence: 5 });
      await feeds.save(saved);
      expect(await feeds.clear("roulettes", 4)).toBe(false);
      expect(await feeds.get("roulettes")).toEqual(saved);

      expect(await feeds.clear("roulettes", 7)).toBe(true);
      expect(await feeds.get("roulettes")).toBeNull();
      expect(await feeds.save(position({ token: '{"_data":"STALE"}', fence: 6 }))).toBe(false);
      expect(await feeds.get("roulettes")).toBeNull();
      expect(await feeds.clear("roulettes", 6)).toBe(false);
      expect(await feeds.save(position({ token: '{"_data":"T8"}', fence: 7 }))).toBe(true);
      expect(await feeds.get("roulettes")).toEqual(position({ token: '{"_data":"T8"}', fence: 7 }));

      // A feed never saved: the clear still records its fence.
      expect(await feeds.clear("strategies", 3)).toBe(true);
      expect(await feeds.save(position({ feed: "strategies", fence: 2 }))).toBe(false);
      expect(await feeds.get("strategies")).toBeNull();
    });

    test("a saved position survives a restart; a cleared one stays cleared, with its fence", async () => {
      const first = await subject.open();
      await first.feeds.save(position({ fence: CLOCK_FENCE }));
      await first.feeds.save(position({ feed: "gone", fence: 4 }));
      await first.feeds.clear("gone", 4);
      await first.close();

      const { feeds } = await subject.open();
      expect(await feeds.get("roulettes")).toEqual(position({ fence: CLOCK_FENCE }));
      expect(await feeds.get("gone")).toBeNull();
      expect(await feeds.save(position({ feed: "gone", fence: 3 }))).toBe(false);
      expect(await feeds.get("gone")).toBeNull();
    });

    test("two nodes saving one feed at once: it holds one node's whole position, the one saved last", async () => {
      const local = await subject.open();
      const peer = await subject.openPeer();
      const ROUNDS = 30;
      await Promise.all([
        writeInTurns(ROUNDS, async (i) => {
          await peer.ping();
          await local.feeds.save(position({ source: "a.src", token: `a${i}`, updatedAt: i }));
        }),
        writeInTurns(ROUNDS, (i) => peer.feeds.save(position({ source: "b.src", token: `b${i}`, updatedAt: i }))),
      ]);
      const saved = await peer.feeds.get("roulettes");
      expect([position({ source: "a.src", token: `a${ROUNDS - 1}`, updatedAt: ROUNDS - 1 }), position({ source: "b.src", token: `b${ROUNDS - 1}`, updatedAt: ROUNDS - 1 })]).toContainEqual(saved!);
      expect(await local.feeds.get("roulettes")).toEqual(saved);
      await peer.feeds.clear("roulettes", 1);
      expect(await local.feeds.get("roulettes")).toBeNull();
    });

    test("a stale node saving while a newer one does: every stale save after the newer one's first is refused, and the newer one's last position stays", async () => {
      const stale = await subject.open();
      const newer = await subject.openPeer();
      const ROUNDS = 30;
      let newerSaved = false;
      const [staleResults] = await Promise.all([
        writeInTurns(ROUNDS, async (i) => {
          const after = newerSaved;
          const saved = await stale.feeds.save(position({ token: `old${i}`, updatedAt: i, fence: 10 }));
          return { after, saved };
        }),
        writeInTurns(ROUNDS, async (i) => {
          expect(await newer.feeds.save(position({ token: `new${i}`, updatedAt: i, fence: 11 }))).toBe(true);
          newerSaved = true;
        }),
      ]);
      // A stale save that started after the newer node's first save had landed cannot succeed.
      expect(staleResults.filter((r) => r.after && r.saved)).toEqual([]);
      expect(await stale.feeds.get("roulettes")).toEqual(position({ token: `new${ROUNDS - 1}`, updatedAt: ROUNDS - 1, fence: 11 }));
    });
  });
}
