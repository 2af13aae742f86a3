interface Pending<T, R> {
  item: T;
  resolve: (result: R) => void;
  reject: (err: unknown) => void;
}

/**
 * Group commit: items written by many callers go to the store in one transaction per batch
 * instead of one each. After a commit the next one waits until `intervalMs` have passed, so under
 * load each commit (and its fsync with synchronous=FULL) carries many items; after a quiet spell
 * the first item is written at once. Each caller's promise settles only after its batch
 * committed, so nothing is acknowledged before it is stored.
 */
export class GroupCommit<T, R> {
  private queue: Pending<T, R>[] = [];
  private scheduled = false;
  private lastCommitAt = -Infinity;
  private flushing: Promise<void> | null = null;

  /** `commit` stores a batch in one transaction and returns one result per item, in order. */
  constructor(
    private readonly commit: (batch: T[]) => Promise<R[]>,
    private readonly intervalMs: number,
    private readonly maxBatch = 1000,
  ) {}

  write(item: T): Promise<R> {
    return new Promise((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      this.schedule();
    });
  }

  /**
   * Arms the timer unless it is armed. `scheduled` means exactly "a timer is pending": it is
   * cleared when the timer fires, not when a flush starts. (Cleared by flush, a timer firing
   * during a commit slower than the interval left it set with nothing pending, and every later
   * write waited forever.) A timer that fires during a flush finds the flush's loop taking its
   * items.
   */
  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    const fire = () => {
      this.scheduled = false;
      void this.run();
    };
    const wait = this.lastCommitAt + this.intervalMs - performance.now();
    if (wait <= 0) setImmediate(fire);
    else setTimeout(fire, wait);
  }

  /** Writes what is queued now, without waiting for the interval; resolves when all is committed. */
  async drain(): Promise<void> {
    while (this.flushing !== null || this.queue.length > 0) await (this.flushing ?? this.run());
  }

  private run(): Promise<void> {
    if (this.flushing === null) this.flushing = this.flush().finally(() => (this.flushing = null));
    return this.flushing;
  }

  private async flush(): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, this.maxBatch);
      try {
        const results = await this.commit(batch.map((p) => p.item));
        this.lastCommitAt = performance.now();
        for (let i = 0; i < batch.length; i++) batch[i]!.resolve(results[i]!);
      } catch (err) {
        for (const p of batch) p.reject(err);
      }
    }
  }
}
