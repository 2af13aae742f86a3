import { expect, test } from "bun:test";
import { GroupCommit } from "../src/group-commit.ts";

test("writes arriving while a slow commit runs are all committed, in order, in later batches", async () => {
  const batches: number[][] = [];
  // Each commit takes longer than the interval, as an fsync or a database round trip does.
  const writer = new GroupCommit<number, number>(async (batch) => {
    await Bun.sleep(5);
    batches.push(batch);
    return batch.map((n) => n * 10);
  }, 1);
  const results: Promise<number>[] = [];
  for (let i = 0; i < 300; i++) {
    results.push(writer.write(i));
    if (i % 10 === 0) await Bun.sleep(1);
  }
  const settled = await Promise.race([Promise.all(results), Bun.sleep(5_000).then(() => "stalled" as const)]);
  expect(settled).toEqual(Array.from({ length: 300 }, (_, i) => i * 10));
  expect(batches.flat()).toEqual(Array.from({ length: 300 }, (_, i) => i));
  expect(batches.length).toBeGreaterThan(1);
  // After a quiet spell, one more write is committed too.
  await Bun.sleep(20);
  expect(await Promise.race([writer.write(300), Bun.sleep(2_000).then(() => "stalled" as const)])).toBe(3000);
});

test("a failed commit rejects its batch only; the next batch commits", async () => {
  let fail = true;
  const writer = new GroupCommit<number, number>(async (batch) => {
    if (fail) {
      fail = false;
      throw new Error("disk full");
    }
    return batch;
  }, 0);
  const first = writer.write(1);
  await expect(first).rejects.toThrow("disk full");
  expect(await writer.write(2)).toBe(2);
});
