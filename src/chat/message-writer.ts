import type { ChatStore, NewMessage, StoredMessage } from "../store/chat-store.ts";

interface Pending {
  message: NewMessage;
  resolve: (result: { message: StoredMessage; duplicate: boolean }) => void;
  reject: (err: unknown) => void;
}

/**
 * Group commit: messages are written in one transaction per batch instead of one per message.
 * After a commit the next one waits until `commitIntervalMs` have passed, so under load each
 * commit (and its fsync with synchronous=FULL) carries many messages; after a quiet spell the
 * first message is written at once. Each caller's promise settles only after its batch
 * committed, so nothing is acknowledged or published before it is stored.
 */
export class MessageWriter {
  private queue: Pending[] = [];
  private scheduled = false;
  private lastCommitAt = -Infinity;

  constructor(
    private readonly store: ChatStore,
    private readonly commitIntervalMs = 4,
    private readonly maxBatch = 1000,
  ) {}

  write(message: NewMessage): Promise<{ message: StoredMessage; duplicate: boolean }> {
    return new Promise((resolve, reject) => {
      this.queue.push({ message, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        const wait = this.lastCommitAt + this.commitIntervalMs - performance.now();
        if (wait <= 0) setImmediate(() => void this.flush());
        else setTimeout(() => void this.flush(), wait);
      }
    });
  }

  private async flush(): Promise<void> {
    this.scheduled = false;
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, this.maxBatch);
      try {
        const results = await this.store.insertMessages(batch.map((p) => p.message));
        this.lastCommitAt = performance.now();
        for (let i = 0; i < batch.length; i++) batch[i]!.resolve(results[i]!);
      } catch (err) {
        for (const p of batch) p.reject(err);
      }
    }
  }
}
