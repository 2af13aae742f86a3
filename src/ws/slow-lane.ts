import type { Broker } from "../broker/broker.ts";
import type { ChannelKind } from "../channel.ts";
import type { Metrics } from "../metrics.ts";
import type { Connection } from "./connection.ts";

/** Kinds whose every publication is a "latest value": a newer one for the same key replaces an unsent older one. */
const LATEST_VALUE_KINDS: ReadonlySet<string> = new Set<ChannelKind>(["roulette", "strategy", "presence"]);

/** A topic (`<tenant>/<channel>`) whose publications are all latest values: never a reason for 4009. */
export function isLatestValueTopic(topic: string): boolean {
  return LATEST_VALUE_KINDS.has(topic.slice(topic.indexOf("/") + 1).split(":", 1)[0]!);
}

interface Pending {
  frame: string;
  /** How many older updates this one replaced. */
  replaced: number;
}

export interface LaneLimits {
  /** The lane writes while the socket has less than this queued (CONFLATE_AFTER_BYTES). */
  writeBelowBytes: number;
  /** Live frames waiting past this many bytes make the client a slow consumer (SLOW_CONSUMER_BYTES). */
  maxWaitingBytes: number;
  /** Distinct latest-value keys a client may be behind on. */
  maxKeys: number;
}

export interface LaneOwner {
  /** Writes one frame to the socket. */
  write(conn: Connection, frame: string): void;
  /** The client cannot keep up with frames that must not be dropped: close it with 4009. */
  tooSlow(conn: Connection): void;
  /** Everything waiting was written and the socket caught up: the lane is gone. */
  caughtUp(conn: Connection): void;
}

/**
 * Backpressure for one connection that fell behind (its send buffer passed CONFLATE_AFTER_BYTES,
 * or it asked for a replay larger than that). While the lane exists every frame meant for the
 * connection comes through here instead of Bun's pub/sub, and is written at the pace the client
 * reads (whenever its send buffer is below `writeBelowBytes`):
 * - typing, presence changes and feed updates (roulette, strategy, presence channels) wait, and a
 *   newer one for the same key replaces the waiting one (counted as conflated); the client gets
 *   the latest value, marked `"conflated": n` so an offset jump on a feed channel is not
 *   mistaken for a gap;
 * - everything else (chat, notifications, user and other channels) is never dropped: it waits in
 *   order, and a client with more than `maxWaitingBytes` of live frames waiting is closed with
 *   4009, so it reconnects and recovers from history. A replay does not count toward that bound
 *   (it is history the client asked for), but is written at the client's pace too.
 * Memory stays bounded: at most one waiting frame per key, at most `maxKeys` keys, and live
 * frames up to `maxWaitingBytes`.
 */
export class SlowLane {
  private readonly pending = new Map<string, Pending>();
  /** Frames that must not be dropped, in order: replays and live ones. */
  private queue: string[] = [];
  private head = 0;
  private waitingBytes = 0;
  private timer: Timer | null = null;
  private ended = false;

  constructor(
    private readonly conn: Connection,
    private readonly broker: Broker,
    private readonly metrics: Metrics,
    private readonly owner: LaneOwner,
    private readonly limits: LaneLimits,
  ) {
    // A topic held by a subscribe that is reading history joins the lane when that subscribe ends.
    for (const topic of conn.topics) if (!conn.holding?.has(topic)) this.add(topic);
    metrics.slowClients++;
  }

  /** Routes one more of the connection's topics through the lane. */
  add(topic: string): void {
    this.broker.divert(this.conn.ws, topic, (frame) => this.offer(frame));
  }

  /** A replay (or frames held during one): written in order at the client's pace, not counted as waiting. */
  enqueue(frames: readonly string[]): void {
    for (const frame of frames) this.queue.push(frame);
    this.pump();
  }

  offer(frame: string): void {
    if (this.ended) return;
    const key = conflationKey(frame);
    if (key === null) {
      this.queue.push(frame);
      this.waitingBytes += frame.length;
      if (this.waitingBytes > this.limits.maxWaitingBytes) this.end(true);
      else this.pump();
      return;
    }
    const older = this.pending.get(key.key);
    if (older !== undefined) {
      this.pending.delete(key.key);
      this.metrics.conflate(this.conn.tenant, key.kind);
    } else if (this.pending.size >= this.limits.maxKeys) {
      this.end(true);
      return;
    }
    // Re-inserted: the map's order is the order of the latest updates.
    this.pending.set(key.key, { frame, replaced: older === undefined ? 0 : older.replaced + 1 });
    this.pump();
  }

  /**
   * Writes what the socket takes now. Called on every offer, on Bun's drain, on every sweep, and
   * every few ms while frames wait and the client keeps taking them.
   */
  pump(): void {
    if (this.ended) return;
    const { ws } = this.conn;
    let wrote = false;
    while (ws.getBufferedAmount() < this.limits.writeBelowBytes) {
      if (this.head < this.queue.length) {
        const frame = this.queue[this.head]!;
        this.queue[this.head++] = "";
        // Live frames leave the waiting count as they are written (replayed ones were never in it).
        this.waitingBytes = Math.max(0, this.waitingBytes - frame.length);
        this.owner.write(this.conn, frame);
        wrote = true;
        if (this.conn.closing) return this.end(false);
        continue;
      }
      const next = this.pending.entries().next();
      if (next.done) break;
      const [key, { frame, replaced }] = next.value;
      this.pending.delete(key);
      this.owner.write(this.conn, replaced === 0 ? frame : `${frame.slice(0, -1)},"conflated":${replaced}}`);
      wrote = true;
      if (this.conn.closing) return this.end(false);
    }
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    const idle = this.head === this.queue.length && this.pending.size === 0;
    if (idle && ws.getBufferedAmount() <= this.limits.writeBelowBytes / 2) return this.end(false);
    // Bun's drain event comes only past its own backpressure limit: poll while the client keeps
    // taking frames; a client that stopped reading is looked at by the sweep only.
    if (wrote && !idle) {
      this.timer ??= setTimeout(() => {
        this.timer = null;
        this.pump();
      }, 5);
    }
  }

  /** Ends the lane: frames go back to Bun's pub/sub, or the client is closed as too slow. */
  end(tooSlow: boolean): void {
    if (this.ended) return;
    this.ended = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.metrics.slowClients--;
    this.queue = [];
    this.pending.clear();
    if (tooSlow) {
      this.owner.tooSlow(this.conn);
      return;
    }
    if (!this.conn.closing) {
      for (const topic of this.conn.topics) if (!this.conn.holding?.has(topic)) this.broker.undivert(this.conn.ws, topic);
    }
    this.owner.caughtUp(this.conn);
  }
}

/** What a newer frame replaces, or null for a frame that must be delivered. */
function conflationKey(frame: string): { key: string; kind: string } | null {
  const pub = JSON.parse(frame) as { type?: string; channel?: string; event?: string; offset?: number; data?: Record<string, unknown> | null };
  if (pub.type !== "pub" || pub.channel === undefined) return null;
  const kind = pub.channel.split(":", 1)[0]!;
  const data = typeof pub.data === "object" && pub.data !== null ? pub.data : {};
  if (pub.offset === undefined) {
    // Ephemeral: typing and presence changes, one latest value per user.
    return { key: `${pub.channel}\u0000${pub.event}\u0000${String(data.user ?? "")}`, kind: pub.event === "typing" ? "typing" : kind };
  }
  if (!LATEST_VALUE_KINDS.has(kind)) return null;
  // A feed channel may be fed by several documents: one latest value per document.
  return { key: `${pub.channel}\u0000${pub.event}\u0000${String(data._id ?? data.id ?? "")}`, kind };
}
