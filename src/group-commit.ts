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

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    const wait = this.lastCommitAt + this.intervalMs - performance.now();
    if (wait <= 0) setImmediate(() => void this.run());
    else setTimeout(() => void this.run(), wait);
  }

  /** Writes what is queued now, without waiting for the interval; resolves when all is committed. */
  async drain(): Promise<void> {
    while (this.flushing !== null || this.queue.length > 0) await (this.flushing ?? this.run());
  }

  /**
   * Runs a flush, or joins the one running (which takes whatever is queued before it ends). A
   * scheduled run that finds a flush running is spent: a write after it schedules again, and
   * items queued as that flush ends are scheduled by it.
   */
  private run(): Promise<void> {
    this.scheduled = false;
    this.flushing ??= this.flush().finally(() => {
      this.flushing = null;
      if (this.queue.length > 0) this.schedule();
    });
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
