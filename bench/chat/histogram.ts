/**
 * A latency histogram that load-generator processes can send to the parent and that merges:
 * log-scale buckets 1% wide from 10 µs up, so a percentile read from it is within 1% of the
 * exact value (it reports the bucket's upper edge).
 */
const MIN_MS = 0.01;
const GROWTH = 1.01;
const LOG_GROWTH = Math.log(GROWTH);

export class Histogram {
  private counts = new Map<number, number>();
  count = 0;
  max = 0;

  record(ms: number): void {
    const bucket = ms <= MIN_MS ? 0 : Math.ceil(Math.log(ms / MIN_MS) / LOG_GROWTH);
    this.counts.set(bucket, (this.counts.get(bucket) ?? 0) + 1);
    this.count++;
    if (ms > this.max) this.max = ms;
  }

  merge(other: HistogramJSON): void {
    for (const [bucket, n] of other.buckets) this.counts.set(bucket, (this.counts.get(bucket) ?? 0) + n);
    this.count += other.count;
    this.max = Math.max(this.max, other.max);
  }

  /** The latency below which `p` percent of the samples fall (NaN without samples). */
  percentile(p: number): number {
    if (this.count === 0) return Number.NaN;
    const rank = Math.ceil((p / 100) * this.count);
    let seen = 0;
    for (const bucket of [...this.counts.keys()].sort((a, b) => a - b)) {
      seen += this.counts.get(bucket)!;
      if (seen >= rank) return Math.min(this.max, MIN_MS * GROWTH ** bucket);
    }
    return this.max;
  }

  toJSON(): HistogramJSON {
    return { buckets: [...this.counts], count: this.count, max: this.max };
  }
}

export interface HistogramJSON {
  buckets: [number, number][];
  count: number;
  max: number;
}
