/** Small values and helpers the store contract suites share. */

export const DAY = 86_400_000;
/** A fixed "now" for retention cases, and ages around a seven-day cut-off. */
export const NOW = 100 * DAY;
export const OLD = NOW - 10 * DAY;
export const RECENT = NOW - DAY;
export const CUT = NOW - 7 * DAY;

/** One turn of the event loop: lets another node's answers (and this process's I/O) in between two writes. */
export const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * Runs `count` writes one after another, a turn of the event loop between them, and collects
 * their results: one node's stream of writes, to run beside another node's.
 */
export async function writeInTurns<T>(count: number, write: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = [];
  for (let i = 0; i < count; i++) {
    out.push(await write(i));
    await turn();
  }
  return out;
}

/** Whether the values are all different. */
export const allDistinct = (values: readonly unknown[]): boolean => new Set(values).size === values.length;

/** Whether the numbers only grow. */
export const increasing = (values: readonly number[]): boolean => values.every((v, i) => i === 0 || v > values[i - 1]!);
