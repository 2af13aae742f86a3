import type { Logger } from "../log.ts";
import type { Store } from "./store.ts";

/** How often stored data past its retention is pruned. */
export const PRUNE_INTERVAL_MS = 3_600_000;
/** The first prune after start: late enough to stay out of the reconnect storm of a restart. */
export const FIRST_PRUNE_DELAY_MS = 30_000;

const DAY_MS = 86_400_000;

/** Whole days each kind is kept; null: kept for good (Config.retention). */
export interface RetentionDays {
  messageDays: number | null;
  notificationDays: number | null;
}

/** Where a failed prune is logged and counted (Publisher.backgroundFailed). */
export interface FailureSink {
  backgroundFailed(err: unknown, source: string): void;
}

/**
 * Age-based pruning of chat messages and notifications (MESSAGE_RETENTION_DAYS,
 * NOTIFICATION_RETENTION_DAYS), so a database does not grow without bound. The stores delete in
 * bounded batches (ChatStore.prune); this only schedules, logs and counts failures.
 */
export class Retention {
  private running = false;

  constructor(
    private readonly store: Store,
    private readonly days: RetentionDays,
    private readonly logger: Logger,
    private readonly failures: FailureSink,
  ) {}

  /**
   * Schedules a prune shortly after start, then hourly; the caller clears and unrefs the timers.
   * A prune cut off by a stop (the store closing under it) is not counted as a failure.
   */
  start(isStopping: () => boolean): Timer[] {
    if (this.days.messageDays === null && this.days.notificationDays === null) return [];
    const run = () => void this.run(Date.now(), isStopping);
    return [setTimeout(run, FIRST_PRUNE_DELAY_MS), setInterval(run, PRUNE_INTERVAL_MS)];
  }

  /** One pass over each kind with a retention; never rejects. A pass still running skips this one. */
  async run(now: number, isStopping: () => boolean = () => false): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      await this.prune("messages", this.days.messageDays, now, (before) => this.store.chat.prune(before), isStopping);
      await this.prune("notifications", this.days.notificationDays, now, (before) => this.store.notifications.prune(before), isStopping);
    } finally {
      this.running = false;
    }
  }

  private async prune(kind: "messages" | "notifications", days: number | null, now: number, prune: (before: number) => Promise<number>, isStopping: () => boolean): Promise<void> {
    if (days === null || isStopping()) return;
    const before = now - days * DAY_MS;
    const started = performance.now();
    try {
      const pruned = await prune(before);
      if (pruned > 0) this.logger.info({ kind, days, pruned, before, ms: Math.round(performance.now() - started) }, "pruned stored data past its retention");
    } catch (err) {
      if (!isStopping()) this.failures.backgroundFailed(err, kind === "messages" ? "message_prune" : "notification_prune");
    }
  }
}
