import type { Kept, MaybePromise, Position } from "../history/history.ts";
import type { LocalHub } from "../hub/local-hub.ts";
import type { Metrics } from "../metrics.ts";
import type { Connection } from "./connection.ts";

interface Pending {
  /** The frame as it will be written (with `"conflated": n` once it replaced older ones). */
  frame: string;
  /** How many older updates this one replaced. */
  replaced: number;
}

export interface LaneLimits {
  /** The lane writes while the socket has less than this queued (CONFLATE_AFTER_BYTES). */
  writeBelowBytes: number;
  /** Frames waiting (live, replayed and conflated together) past this many bytes make the client a slow consumer (SLOW_CONSUMER_BYTES). */
  maxWaitingBytes: number;
  /** Distinct latest-value keys a client may be behind on. */
  maxKeys: number;
}

/** A recovery larger than one page, read from history as the client takes it (see SlowLane.replay). */
export interface Replay {
  topic: string;
  epoch: string;
  /** Offset of the last replayed frame queued so far. */
  last: number;
  /** Offset of the last publication to replay (the subscribe reply's offset). */
  upTo: number;
  /** Live frames of the topic that arrived meanwhile, in order: written once the replay is done. */
  held: string[];
  /** The next page after `after` of at most `maxBytes` (HistoryStore.page); null: no longer kept. */
  fetch(after: number, maxBytes: number): MaybePromise<Kept[] | null>;
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
 * - typing, presence changes and publications of latest-value namespaces (`latest_value`: built-in
 *   roulette, strategy, presence) wait, and a
 *   newer one for the same key replaces the waiting one (counted as conflated); the client gets
 *   the latest value, marked `"conflated": n` so an offset jump on a feed channel is not
 *   mistaken for a gap;
 * - everything else (chat, notifications, user and other channels) is never dropped: it waits in
 *   order. A replay waits the same way, after what was queued before it.
 * Every waiting byte counts toward one bound, `maxWaitingBytes`, whatever it is (live, replayed or
 * conflated): past it the client is closed with 4009, so it reconnects and recovers from history.
 * The subscribe path refuses a replay that would not fit (see FrameHandlers.subscribe). Memory
 * stays bounded whatever the client reads: at most `maxWaitingBytes` here, at most `maxKeys` keys,
 * and the lane writes to Bun only while its send buffer is below `writeBelowBytes`.
 */
export class SlowLane {
  private readonly pending = new Map<string, Pending>();
  /** Frames that must not be dropped, in order: replays and live ones. */
  private queue: string[] = [];
  private head = 0;
  private waitingBytes = 0;
  private timer: Timer | null = null;
  private ended = false;
  /** Recoveries in progress, one per topic, replayed one after the other (the first is being read). */
  private replays: (Replay & { fetching: boolean })[] = [];

  constructor(
    private readonly conn: Connection,
    private readonly hub: LocalHub,
    private readonly metrics: Metrics,
    private readonly owner: LaneOwner,
    /** Whether a namespace's publications are all latest values (conflated while the client is behind). */
    private readonly isLatestValue: (kind: string) => boolean,
    private readonly limits: LaneLimits,
  ) {
    // A topic held by a subscribe that is reading history joins the lane when that subscribe ends.
    for (const topic of conn.topics) if (!conn.holding?.has(topic)) this.add(topic);
    metrics.slowClients++;
  }

  /** Routes one more of the connection's topics through the lane. */
  add(topic: string): void {
    this.hub.divert(this.conn.ws, topic, (frame) => this.offer(frame, topic));
  }

  /**
   * Replays the rest of a recovery page by page, each read only once the client took the one
   * before (so the lane never holds more than its bound); live frames of that topic wait behind
   * it. Recoveries of several topics go one after the other. A page no longer kept (trimmed meanwhile) closes the client with 4009: it reconnects
   * with the last offset it got and learns what is lost.
   */
  replay(replay: Replay): void {
    if (this.ended) return;
    this.replays.push({ ...replay, fetching: false });
    for (const frame of replay.held) this.waitingBytes += frame.length;
    if (this.waitingBytes > this.limits.maxWaitingBytes) this.end(true);
    else this.pump();
  }

  /** Bytes waiting in the lane: live, replayed and conflated frames together. */
  get bytes(): number {
    return this.waitingBytes;
  }

  /** A replay (or frames held during one): written in order at the client's pace, counted like live frames. */
  enqueue(frames: readonly string[]): void {
    if (this.ended) return;
    for (const frame of frames) {
      this.queue.push(frame);
      this.waitingBytes += frame.length;
    }
    if (this.waitingBytes > this.limits.maxWaitingBytes) this.end(true);
    else this.pump();
  }

  /** The client left `topic`: the rest of its replay, and the live frames held behind it, are dropped. */
  forget(topic: string): void {
    const at = this.replays.findIndex((r) => r.topic === topic);
    if (at < 0) return;
    const [gone] = this.replays.splice(at, 1);
    for (const frame of gone!.held) this.waitingBytes -= frame.length;
    this.pump();
  }

  offer(frame: string, topic?: string): void {
    if (this.ended) return;
    const replaying = this.replays.length === 0 ? undefined : this.replays.find((r) => r.topic === topic);
    if (replaying !== undefined) {
      replaying.held.push(frame);
      this.waitingBytes += frame.length;
      if (this.waitingBytes > this.limits.maxWaitingBytes) this.end(true);
      return;
    }
    const key = conflationKey(frame, this.isLatestValue);
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
      this.waitingBytes -= older.frame.length;
      this.metrics.conflate(this.conn.tenant, key.kind);
    } else if (this.pending.size >= this.limits.maxKeys) {
      this.end(true);
      return;
    }
    const replaced = older === undefined ? 0 : older.replaced + 1;
    const marked = replaced === 0 ? frame : `${frame.slice(0, -1)},"conflated":${replaced}}`;
    // Re-inserted: the map's order is the order of the latest updates.
    this.pending.set(key.key, { frame: marked, replaced });
    this.waitingBytes += marked.length;
    if (this.waitingBytes > this.limits.maxWaitingBytes) this.end(true);
    else this.pump();
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
        this.waitingBytes -= frame.length;
        this.owner.write(this.conn, frame);
        wrote = true;
        if (this.conn.closing) return this.end(false);
        continue;
      }
      if (this.replays.length > 0 && this.nextPage()) continue;
      const next = this.pending.entries().next();
      if (next.done) break;
      const [key, { frame }] = next.value;
      this.pending.delete(key);
      this.waitingBytes -= frame.length;
      this.owner.write(this.conn, frame);
      wrote = true;
      if (this.conn.closing) return this.end(false);
    }
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    const idle = this.head === this.queue.length && this.pending.size === 0 && this.replays.length === 0;
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

  /**
   * With the queue empty: queues the replay's next page, or, once it is all queued, the live frames
   * held behind it that it did not cover. True when frames were queued now; false while a page is
   * being read (it pumps again when it arrives).
   */
  private nextPage(): boolean {
    const replay = this.replays[0]!;
    if (replay.fetching) return false;
    if (replay.last >= replay.upTo) {
      this.replays.shift();
      const through = { epoch: replay.epoch, offset: replay.last };
      for (const frame of replay.held) {
        if (isCovered(frame, through)) this.waitingBytes -= frame.length;
        else this.queue.push(frame);
      }
      return true;
    }
    replay.fetching = true;
    const maxBytes = Math.max(this.limits.writeBelowBytes, this.limits.maxWaitingBytes - this.waitingBytes);
    const take = (page: Kept[] | null): boolean => {
      replay.fetching = false;
      if (this.ended || this.replays[0] !== replay) return false;
      if (page === null || page.length === 0) {
        this.end(true);
        return false;
      }
      for (const kept of page) {
        this.queue.push(kept.frame);
        this.waitingBytes += kept.frame.length;
      }
      replay.last = page.at(-1)!.offset;
      if (this.waitingBytes <= this.limits.maxWaitingBytes) return true;
      this.end(true);
      return false;
    };
    const page = replay.fetch(replay.last, maxBytes);
    if (!(page instanceof Promise)) return take(page);
    page.then(
      (got) => take(got) && this.pump(),
      () => take(null),
    );
    return false;
  }

  /** Ends the lane: frames go back to Bun's pub/sub, or the client is closed as too slow. */
  end(tooSlow: boolean): void {
    if (this.ended) return;
    this.ended = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.metrics.slowClients--;
    this.queue = [];
    this.pending.clear();
    this.replays = [];
    this.waitingBytes = 0;
    if (tooSlow) {
      this.owner.tooSlow(this.conn);
      return;
    }
    if (!this.conn.closing) {
      for (const topic of this.conn.topics) if (!this.conn.holding?.has(topic)) this.hub.undivert(this.conn.ws, topic);
    }
    this.owner.caughtUp(this.conn);
  }
}

/** What a newer frame replaces, or null for a frame that must be delivered. */
function conflationKey(frame: string, isLatestValue: (kind: string) => boolean): { key: string; kind: string } | null {
  const pub = JSON.parse(frame) as { type?: string; channel?: string; event?: string; offset?: number; data?: Record<string, unknown> | null };
  if (pub.type !== "pub" || pub.channel === undefined) return null;
  const kind = pub.channel.split(":", 1)[0]!;
  const data = typeof pub.data === "object" && pub.data !== null ? pub.data : {};
  if (pub.offset === undefined) {
    // Ephemeral: typing and presence changes, one latest value per user.
    return { key: `${pub.channel}\u0000${pub.event}\u0000${String(data.user ?? "")}`, kind: pub.event === "typing" ? "typing" : kind };
  }
  if (!isLatestValue(kind)) return null;
  // A feed channel may be fed by several documents: one latest value per document.
  return { key: `${pub.channel}\u0000${pub.event}\u0000${String(data._id ?? data.id ?? "")}`, kind };
}

/** A frame the position already covers (its offset was replayed or predates it). */
export function isCovered(frame: string, position: Position): boolean {
  const pub = JSON.parse(frame) as { offset?: number; epoch?: string };
  return pub.offset !== undefined && pub.epoch === position.epoch && pub.offset <= position.offset;
}
