import type { Leases } from "../cluster/lease.ts";
import { Sleeper } from "./sleeper.ts";
import type { Logger } from "../log.ts";
import type { FeedMetrics } from "./feed-metrics.ts";
import type { FeedWatcher } from "./feed-watcher.ts";

/** `unknown`: the first attempt at the lease has not answered yet. */
export type Leadership = "unknown" | "leading" | "following";

export interface FeedLeaderDeps {
  /** The feed's configured name; its lease is `feed:<name>`. */
  feed: string;
  leases: Leases;
  /** This node's id in the cluster (the lease's holder). */
  holder: string;
  ttlMs: number;
  /**
   * A new watcher for one term of leadership (not started): it resumes from the saved token, and
   * writes its position fenced with `fence`, the term's fencing token.
   */
  newWatcher: (fence: number) => FeedWatcher;
  metrics: FeedMetrics;
  logger: Logger;
}

/**
 * Runs a feed's watcher on this node only while this node holds the feed's lease, so one node
 * of the cluster publishes each feed. The loop: try to acquire the lease (every ttl/4 while
 * another node holds it); once held, start a watcher and renew every ttl/3. A renewal that is
 * refused, fails, or has not answered by a third of the TTL before the lease would expire stops
 * the watcher at once (no change is published after that) without saving its token (the next
 * leader may have saved a later one), and the loop goes back to acquiring. The margin leaves the
 * old leader a third of the TTL to stop before anyone can take the lease over; the overlap that
 * remains (publications in flight, changes after the last saved token) is published again by the
 * next leader under the same idempotency keys (see FeedWatcher). The watcher writes its position
 * fenced with the term's token, so a write of this node's that lands after a newer leader's (a
 * pause past the TTL, a slow store) is refused rather than moving the position back (see
 * FeedStore). `stop` stops the watcher (saving its token) and releases the lease, so another node
 * takes over without waiting for the TTL.
 * The loop never throws and never ends before stop().
 */
export class FeedLeader {
  leadership: Leadership = "unknown";
  /** The watcher of the current term, while leading. */
  watcher: FeedWatcher | null = null;
  /** Fencing token of the current term, while leading. */
  token: number | null = null;
  private stopping = false;
  private running: Promise<void> | null = null;
  private readonly sleeper = new Sleeper();
  /** Settles when stop() is called: a renewal in flight is not waited for then. */
  private readonly stopped: Promise<void>;
  private signalStop!: () => void;
  /** The current watcher's stop, when stop() began it. */
  private watcherStopped: Promise<void> | null = null;
  /** The last attempt at the lease failed (logged once per outage, not per attempt). */
  private failing = false;
  private readonly lease: string;

  constructor(private readonly deps: FeedLeaderDeps) {
    this.lease = `feed:${deps.feed}`;
    this.stopped = new Promise((resolve) => (this.signalStop = resolve));
  }

  start(): void {
    this.running = this.run();
  }

  /** Stops the watcher (saving its token) and releases the lease if held. */
  async stop(): Promise<void> {
    this.stopping = true;
    // At once, as FeedService closes the MongoDB client right after: the watcher must not take
    // that for an outage.
    this.watcherStopped = this.watcher?.stop(true) ?? null;
    this.signalStop();
    this.sleeper.wakeUp();
    await this.running;
  }

  private async run(): Promise<void> {
    const { ttlMs } = this.deps;
    while (!this.stopping) {
      const sentAt = performance.now();
      const token = await this.acquire();
      if (token !== null && this.stopping) {
        await this.release(token);
        break;
      }
      if (token === null) {
        this.setLeadership("following");
        await this.sleep(ttlMs / 4);
        continue;
      }
      // Redis set the TTL after the call was sent: counting from then errs on the safe side.
      await this.lead(token, sentAt + ttlMs);
    }
  }

  /** One term: runs the watcher while renewals succeed in time; returns once lost or stopped. */
  private async lead(token: number, validUntil: number): Promise<void> {
    const { leases, feed, holder, ttlMs, logger } = this.deps;
    const margin = ttlMs / 3;
    const watcher = this.deps.newWatcher(token);
    this.watcher = watcher;
    this.token = token;
    this.setLeadership("leading");
    logger.info({ token }, "leading the feed");
    watcher.start();
    let lost: string | null = null;
    while (!this.stopping) {
      await this.sleep(ttlMs / 3);
      if (this.stopping) break;
      const sentAt = performance.now();
      const renewed = await within(leases.renew(this.lease, holder, token, ttlMs), validUntil - margin - sentAt, this.stopped);
      if (this.stopping) break;
      if (renewed.ok && renewed.value) {
        validUntil = sentAt + ttlMs;
        continue;
      }
      lost = renewed.ok ? "taken" : renewed.timedOut ? "renew_timeout" : "renew_failed";
      logger.warn({ token, code: `feed_lease_${lost}`, err: renewed.ok ? undefined : renewed.err }, "lost the feed's lease: stopped publishing it");
      break;
    }
    this.watcher = null;
    this.token = null;
    if (lost !== null) {
      // Before the first await: from here on this node publishes nothing of the feed.
      const stopped = watcher.stop(false);
      this.setLeadership("following");
      await stopped;
      // After the stop: a session that was loading its snapshot may mark itself up on its way out.
      this.deps.metrics.setUp(feed, false);
      return;
    }
    await (this.watcherStopped ?? watcher.stop(true));
    this.deps.metrics.setUp(feed, false);
    this.setLeadership("following");
    await this.release(token);
  }

  /** The lease's token, or null when another node holds it or the attempt failed. */
  private async acquire(): Promise<number | null> {
    const { leases, holder, ttlMs, logger } = this.deps;
    // An attempt that hangs past its TTL could not be relied on anyway; a late grant expires by itself.
    const acquired = await within(leases.acquire(this.lease, holder, ttlMs), ttlMs / 3, this.stopped);
    if (acquired.ok) {
      this.failing = false;
      return acquired.value;
    }
    if (!this.failing) logger.warn({ code: "feed_lease_unavailable", err: acquired.ok ? undefined : acquired.err }, "could not reach the feed's lease: not leading it; retrying");
    this.failing = true;
    return null;
  }

  private async release(token: number): Promise<void> {
    try {
      await this.deps.leases.release(this.lease, this.deps.holder, token);
    } catch (err) {
      // It expires by itself after its TTL: another node takes over then.
      this.deps.logger.warn({ err, code: "feed_lease_release_failed" }, "could not release the feed's lease");
    }
  }

  private setLeadership(leadership: Leadership): void {
    if (leadership === this.leadership) return;
    this.leadership = leadership;
    this.deps.metrics.setLeader(this.deps.feed, leadership === "leading");
  }

  private sleep(ms: number): Promise<void> {
    return this.stopping ? Promise.resolve() : this.sleeper.sleep(ms);
  }

}

type Outcome<T> = { ok: true; value: T } | { ok: false; timedOut: boolean; err: unknown };

/** `work`'s outcome, or a timeout after `ms` (at once when ms <= 0) or when `cancelled` settles; never rejects. */
async function within<T>(work: Promise<T>, ms: number, cancelled: Promise<void>): Promise<Outcome<T>> {
  let timer: Timer | undefined;
  const settled = work.then(
    (value): Outcome<T> => ({ ok: true, value }),
    (err: unknown): Outcome<T> => ({ ok: false, timedOut: false, err }),
  );
  const timeout = new Promise<Outcome<T>>((resolve) => {
    timer = setTimeout(() => resolve({ ok: false, timedOut: true, err: new Error(`no answer within ${Math.round(ms)} ms`) }), Math.max(0, ms));
  });
  try {
    const cancel = cancelled.then((): Outcome<T> => ({ ok: false, timedOut: false, err: new Error("stopped") }));
    return await Promise.race([settled, timeout, cancel]);
  } finally {
    clearTimeout(timer);
  }
}
