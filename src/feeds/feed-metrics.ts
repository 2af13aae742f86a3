import { Counter, Gauge, type Registry } from "prom-client";
import type { SkipReason } from "./feed-document.ts";

/** Why a feed's position was lost and its channels got a new epoch. */
export type LostReason = "history_lost" | "invalidate" | "error";

/**
 * Prometheus series of the MongoDB feeds (documented in docs/protocol.md). Labels are the
 * configured feed names, so the number of series is fixed by the configuration.
 */
export class FeedMetrics {
  private readonly events: Counter<"feed" | "op">;
  private readonly skipped: Counter<"feed" | "reason">;
  private readonly lag: Gauge<"feed">;
  private readonly up: Gauge<"feed">;
  private readonly resets: Counter<"feed" | "reason">;
  private readonly retries: Counter<"feed">;
  private readonly leader: Gauge<"feed">;

  constructor(registry: Registry) {
    const registers = [registry];
    this.events = new Counter({ name: "sinal_feed_events_total", help: "Changes published by each feed, by operation", labelNames: ["feed", "op"], registers });
    this.skipped = new Counter({ name: "sinal_feed_skipped_total", help: "Documents a feed did not publish: no valid tenant, no valid channel, or a delete of an unknown document", labelNames: ["feed", "reason"], registers });
    this.lag = new Gauge({ name: "sinal_feed_lag_seconds", help: "Publication time minus the cluster time of the feed's last change", labelNames: ["feed"], registers });
    this.up = new Gauge({ name: "sinal_feed_up", help: "1 while the feed's change stream is open and its snapshot loaded", labelNames: ["feed"], registers });
    this.resets = new Counter({ name: "sinal_feed_epoch_resets_total", help: "Lost change-stream positions that gave the feed's channels a new epoch", labelNames: ["feed", "reason"], registers });
    this.leader = new Gauge({ name: "sinal_feed_leader", help: "1 while this node holds the feed's lease and runs its watcher (one node of a cluster per feed)", labelNames: ["feed"], registers });
    this.retries = new Counter({ name: "sinal_feed_retries_total", help: "Reconnection attempts after MongoDB was unreachable or the stream failed", labelNames: ["feed"], registers });
  }

  published(feed: string, op: string, clusterTimeMs: number | null, now = Date.now()): void {
    this.events.inc({ feed, op });
    if (clusterTimeMs !== null) this.lag.set({ feed }, Math.max(0, now - clusterTimeMs) / 1000);
  }

  skip(feed: string, reason: SkipReason): void {
    this.skipped.inc({ feed, reason });
  }

  setUp(feed: string, up: boolean): void {
    this.up.set({ feed }, up ? 1 : 0);
  }

  lost(feed: string, reason: LostReason): void {
    this.resets.inc({ feed, reason });
  }

  setLeader(feed: string, leading: boolean): void {
    this.leader.set({ feed }, leading ? 1 : 0);
  }

  retried(feed: string): void {
    this.retries.inc({ feed });
  }
}
