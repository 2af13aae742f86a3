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
 * The heaviest keys of a stream in bounded memory, in the spirit of Space-Saving (Metwally et
 * al.): at most 2 x `capacity` counters. When they are full, the `capacity` smallest go at once
 * (one sort per `capacity` new keys instead of a scan per key), and a key that comes later starts
 * from the largest count dropped, so a count is never under its truth and a key that is really
 * heavy is never lost.
 */
export class TopKeys {
  private readonly counts = new Map<string, number>();
  /** The largest count dropped so far: what an unknown key may already have had. */
  private floor = 0;

  constructor(private readonly capacity: number) {}

  add(key: string, n = 1): void {
    const count = this.counts.get(key);
    if (count !== undefined) {
      this.counts.set(key, count + n);
      return;
    }
    if (this.counts.size >= 2 * this.capacity) this.shrink();
    this.counts.set(key, this.floor + n);
  }

  entries(): IterableIterator<[string, number]> {
    return this.counts.entries();
  }

  private shrink(): void {
    const ranked = [...this.counts].sort((a, b) => b[1] - a[1]);
    for (const [key, count] of ranked.slice(this.capacity)) {
      this.counts.delete(key);
      if (count > this.floor) this.floor = count;
    }
  }
}
