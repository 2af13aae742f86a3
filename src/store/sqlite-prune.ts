/**
 * Rows one prune statement deletes at most: a few milliseconds of work, so the first prune of a
 * table grown for years never holds the event loop (and every socket) for long.
 */
export const PRUNE_BATCH = 10_000;

/**
 * Runs `deleteBatch` (synchronous: one statement, at most `limit` rows) until a batch deletes
 * fewer than `limit`, with a turn of the event loop between batches, so frames, REST requests and
 * group commits go on while a big prune runs. Resolves with how many rows went in all.
 */
export async function pruneInBatches(deleteBatch: (limit: number) => number, limit = PRUNE_BATCH): Promise<number> {
  let total = 0;
  for (;;) {
    const deleted = deleteBatch(limit);
    total += deleted;
    const isLastBatch = deleted < limit;
    if (isLastBatch) return total;
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}
