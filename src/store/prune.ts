/**
 * Rows one prune statement deletes at most: a few milliseconds of work, so the first prune of a
 * table grown for years never holds the event loop (and every socket) for long.
 */
export const PRUNE_BATCH = 10_000;

/**
 * Runs `deleteBatch` (one statement, at most `limit` rows; synchronous for sqlite, a Promise for
 * PostgreSQL) until a batch deletes fewer than `limit`, with a turn of the event loop between
 * batches, so frames, REST requests and group commits go on while a big prune runs (a synchronous
 * sqlite statement would otherwise run batch after batch without yielding). Each batch is its own
 * commit. Resolves with how many rows went in all.
 */
export async function pruneInBatches(deleteBatch: (limit: number) => number | Promise<number>, limit = PRUNE_BATCH): Promise<number> {
  let total = 0;
  for (;;) {
    const deleted = await deleteBatch(limit);
    total += deleted;
    const isLastBatch = deleted < limit;
    if (isLastBatch) return total;
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}
