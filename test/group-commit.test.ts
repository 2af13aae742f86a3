import { expect, test } from "bun:test";
import { GroupCommit } from "../src/group-commit.ts";

// GroupCommit (src/group-commit.ts) with a real timer and a commit that takes time, as a
// PostgreSQL commit does: every write settles once its batch is committed, whenever it came.

/** A commit that takes `ms` and records each batch. */
function slowCommit(ms: number, batches: number[][]): (batch: number[]) => Promise<number[]> {
  return async (batch) => {
    batches.push(batch);
    await Bun.sleep(ms);
    return batch.map((n) => n * 10);
  };
}

/** The write's result, or "pending" if it has not settled within `ms`. */
function within<T>(promise: Promise<T>, ms: number): Promise<T | "pending"> {
  return Promise.race([promise, Bun.sleep(ms).then(() => "pending" as const)]);
}

test("a write that arrives while a slower-than-the-interval commit runs is committed, and so is every later write", async () => {
  const batches: number[][] = [];
  const writer = new GroupCommit(slowCommit(50, batches), 10);
  const first = writer.write(1);
  await Bun.sleep(5);
  // Its turn comes while the first commit still runs: the loop of that flush takes it.
  const second = writer.write(2);
  expect(await first).toBe(10);
  expect(await second).toBe(20);
  await Bun.sleep(30);
  // A quiet spell later, a write must start a commit of its own.
  expect(await within(writer.write(3), 1000)).toBe(30);
  expect(batches).toEqual([[1], [2], [3]]);
});

test("writes that arrive during a commit go together in the next one, in order", async () => {
  const batches: number[][] = [];
  const writer = new GroupCommit(slowCommit(30, batches), 10);
  const results = [writer.write(1)];
  await Bun.sleep(5);
  results.push(writer.write(2), writer.write(3));
  expect(await Promise.all(results)).toEqual([10, 20, 30]);
  expect(batches).toEqual([[1], [2, 3]]);
});

test("a failed commit rejects its own batch only; the next write commits", async () => {
  let fail = true;
  const writer = new GroupCommit<number, number>(async (batch) => {
    const failing = fail;
    await Bun.sleep(20);
    if (failing) throw new Error("the store said no");
    return batch;
  }, 5);
  const failed = writer.write(1);
  await Bun.sleep(2);
  fail = false;
  expect(await failed.then(() => "committed", (err: Error) => err.message)).toBe("the store said no");
  expect(await within(writer.write(2), 1000)).toBe(2);
});

test("drain() resolves once everything written so far is committed", async () => {
  const batches: number[][] = [];
  const writer = new GroupCommit(slowCommit(20, batches), 1000);
  void writer.write(1);
  await Bun.sleep(5);
  const late = writer.write(2);
  await writer.drain();
  expect(batches.flat()).toEqual([1, 2]);
  expect(await late).toBe(20);
});

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
