import { describe, expect } from "bun:test";
import type { FeedPosition } from "../../src/store/feed-store.ts";
import { writeInTurns } from "./helpers.ts";
import type { StoreSubject } from "./subjects.ts";

const position = (over: Partial<FeedPosition>): FeedPosition => ({ feed: "roulettes", source: "runcash.roulettes", token: '{"_data":"T1"}', updatedAt: 1000, ...over });

/** The FeedStore contract (src/store/feed-store.ts), run over each subject. */
export function feedStoreContract(subject: StoreSubject): void {
  const { test } = subject;

  describe(`FeedStore on ${subject.name}`, () => {
    subject.hooks();

    test("save replaces, get reads, clear forgets", async () => {
      const { feeds } = await subject.open();
      expect(await feeds.get("roulettes")).toBeNull();
      await feeds.save(position({}));
      await feeds.save(position({ feed: "strategies", source: "runcash.strategies", token: '{"_data":"S1"}' }));
      await feeds.save(position({ source: "runcash.other", token: '{"_data":"T2"}', updatedAt: 2000 }));
      expect(await feeds.get("roulettes")).toEqual({ feed: "roulettes", source: "runcash.other", token: '{"_data":"T2"}', updatedAt: 2000 });
      await feeds.clear("roulettes");
      expect(await feeds.get("roulettes")).toBeNull();
      expect(await feeds.get("strategies")).toEqual(position({ feed: "strategies", source: "runcash.strategies", token: '{"_data":"S1"}' }));
      await feeds.clear("nothing");
    });

    test("a saved position survives a restart; a cleared one stays cleared", async () => {
      const first = await subject.open();
      await first.feeds.save(position({}));
      await first.feeds.save(position({ feed: "gone" }));
      await first.feeds.clear("gone");
      await first.close();

      const { feeds } = await subject.open();
      expect(await feeds.get("roulettes")).toEqual(position({}));
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
      await peer.feeds.clear("roulettes");
      expect(await local.feeds.get("roulettes")).toBeNull();
    });
  });
}
