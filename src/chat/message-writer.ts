import type { ChatStore, NewMessage, StoredMessage } from "../store/chat-store.ts";

interface Pending {
  message: NewMessage;
  resolve: (result: { message: StoredMessage; duplicate: boolean }) => void;
  reject: (err: unknown) => void;
}

/**
 * Groups the messages that arrive in one turn of the event loop into one transaction: a commit
 * per batch instead of per message. Each caller's promise settles only after its batch committed,
 * so nothing is acknowledged or published before it is stored.
 */
export class MessageWriter {
  private queue: Pending[] = [];
  private scheduled = false;

  constructor(
    private readonly store: ChatStore,
    private readonly maxBatch = 1000,
  ) {}

  write(message: NewMessage): Promise<{ message: StoredMessage; duplicate: boolean }> {
    return new Promise((resolve, reject) => {
      this.queue.push({ message, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => void this.flush());
      }
    });
  }

  private async flush(): Promise<void> {
    this.scheduled = false;
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, this.maxBatch);
      try {
        const results = await this.store.insertMessages(batch.map((p) => p.message));
        for (let i = 0; i < batch.length; i++) batch[i]!.resolve(results[i]!);
      } catch (err) {
        for (const p of batch) p.reject(err);
      }
    }
  }
}
