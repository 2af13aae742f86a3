/**
 * A fixed ring of time buckets: `size` buckets of `widthMs` each, so memory never grows however
 * long the process runs. A bucket is cleared when time comes round to it again.
 */
export class RollingBuckets<T> {
  private readonly slots: { id: number; value: T }[];

  constructor(
    readonly size: number,
    readonly widthMs: number,
    private readonly fresh: () => T,
  ) {
    this.slots = Array.from({ length: size }, () => ({ id: -1, value: fresh() }));
  }

  /** The bucket that holds `now`, cleared first if it still held an older period. */
  at(now: number): T {
    const id = Math.floor(now / this.widthMs);
    const slot = this.slots[id % this.size]!;
    if (slot.id !== id) {
      slot.id = id;
      slot.value = this.fresh();
    }
    return slot.value;
  }

  /**
   * The last `count` buckets up to and including the one holding `now`, oldest first, each with
   * the start of its period; buckets nothing was recorded in come as `null`.
   */
  window(now: number, count = this.size): { start: number; value: T | null }[] {
    const current = Math.floor(now / this.widthMs);
    const out: { start: number; value: T | null }[] = [];
    for (let id = current - Math.min(count, this.size) + 1; id <= current; id++) {
      const slot = this.slots[id % this.size]!;
      out.push({ start: id * this.widthMs, value: slot.id === id ? slot.value : null });
    }
    return out;
  }
}

/**
 * The heaviest keys of a stream in bounded memory (Metwally et al., "Space-Saving"): at most
 * `capacity` counters; a new key takes over the smallest one and inherits its count. Any key
 * counted more than total/capacity times is kept, and its count is over by at most that minimum.
 */
export class TopKeys {
  private readonly counts = new Map<string, number>();

  constructor(private readonly capacity: number) {}

  add(key: string, n = 1): void {
    const count = this.counts.get(key);
    if (count !== undefined) {
      this.counts.set(key, count + n);
      return;
    }
    if (this.counts.size < this.capacity) {
      this.counts.set(key, n);
      return;
    }
    let smallest = "";
    let min = Infinity;
    for (const [k, c] of this.counts) {
      if (c < min) {
        min = c;
        smallest = k;
      }
    }
    this.counts.delete(smallest);
    this.counts.set(key, min + n);
  }

  entries(): IterableIterator<[string, number]> {
    return this.counts.entries();
  }
}
