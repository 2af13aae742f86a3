import { SinalError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { DeliveredPositions, Kept, Position } from "../history/history.ts";
import type { Redis } from "../redis/redis-client.ts";
import type { RedisKeys } from "../redis/keys.ts";
import type { Broker, PublicationSink } from "./broker.ts";

/** Reads kept publications of a topic for a server-side recovery (the channel's history page). */
export type ReadKept = (topic: string, epoch: string, after: number, upTo: number) => Promise<Kept[] | null>;
/** Reads where a topic stands in its shared history (a position check). */
export type ReadPosition = (topic: string) => Promise<Position>;

export interface RedisBrokerOptions {
  /** This node's id: its own publications coming back from Redis are skipped. */
  nodeId: string;
  /** How long a publication that arrived ahead of a missing one waits for it before the gap is read from history. */
  reorderWindowMs: number;
  /** How many publications of one topic may wait for a missing one (past it the gap is read at once). */
  maxWaiting: number;
  /**
   * Bytes of frames waiting, all topics together: past it a frame is not kept (it is in history)
   * and its topic's gap is read at once. With the per-topic count, what a node holds for ordering
   * is bounded whatever arrives.
   */
  maxWaitingBytes: number;
  /** How long a subscribe waits for this node's subscription to the topic (Redis away: it fails). */
  subscribeTimeoutMs: number;
  /** How often every served topic's position is compared with the shared one (a lost last publication shows only so). */
  positionCheckMs: number;
}

interface Served {
  /** The last publication delivered on this node; null until the first read of the shared position (seed). */
  last: Position | null;
  /** Publications that arrived ahead of a missing one, by offset. */
  waiting: Map<number, Pending>;
  timer: ReturnType<typeof setTimeout> | null;
  /**
   * Resolves once SUBSCRIBE for the topic was acknowledged by Redis; made by the first `ready` that
   * has to wait for it (every connection serves its user's topic, which nobody waits for: a
   * promise and its two functions per idle connection saved).
   */
  subscribed: PromiseWithResolvers<void> | null;
  active: boolean;
  /** A gap is being read from history: deliveries wait for it. */
  recovering: boolean;
  /** The highest offset seen of the current epoch, kept or not (a frame past the byte bound is not kept). */
  highest: number;
}

interface Pending {
  position: Position;
  frame: string;
  except: string | undefined;
  local: boolean;
}

/**
 * The cluster's broker over Redis pub/sub: one pub/sub channel per topic, each node SUBSCRIBEd to
 * the topics it has local subscribers for (its hub says which; batched into one SUBSCRIBE or
 * UNSUBSCRIBE per turn). A publication travels as `<node>\n<except>\n<epoch>\n<offset>\n<frame>`
 * (epoch and offset empty for ephemeral events). One of a channel whose history is in Redis is
 * PUBLISHed by the history's append script, in the same step as it gets its offset (`envelope`
 * gives the script the channel and the envelope's head; its `publish` here comes with `sent`):
 * one round trip, the frame sent once. Room publications (offsets from PostgreSQL) and ephemeral
 * events are PUBLISHed here.
 *
 * Order and loss. Pub/sub may lose messages (a Redis restart, a failover, a reconnect) and two
 * nodes' publications of one topic may arrive in either order, so this node delivers each topic's
 * publications strictly in offset order, its own and its peers' alike: one at `last + 1` is
 * delivered; one further ahead waits (at most `reorderWindowMs`, at most `maxWaiting`) for those
 * before it; then the gap is read from the channel's history and delivered in order (recovered
 * server-side). A gap history no longer has, or a new epoch, is a loss this node cannot repair:
 * `onLost` closes the topic's local subscribers (4011), which reconnect with `since` and are told
 * `recovered:false` if they really missed something. A publication at or below `last` came late
 * and is dropped (it was delivered from history). After every reconnect of the subscriber
 * connection each served topic is subscribed again and its position compared with the shared
 * one; the same check runs every `positionCheckMs`, which finds a lost last publication.
 *
 * The positions subscribes are told come from here (DeliveredPositions): a topic's position is
 * read from history only after its SUBSCRIBE is acknowledged (nothing published after the read
 * can be missed). Publications arriving before that read are delivered as they come (the
 * subscribe holds them for its socket, see FrameHandlers.subscribe) and the read then answers the
 * position delivered, when it is already tracked.
 */
export class RedisBroker implements Broker, DeliveredPositions {
  private hub: PublicationSink | null = null;
  private readonly served = new Map<string, Served>();
  /** Topics whose SUBSCRIBE or UNSUBSCRIBE is due this turn. */
  private readonly changed = new Set<string>();
  private flushing = false;
  private connected = false;
  private closed = false;
  private readonly checkTimer: ReturnType<typeof setInterval>;
  private readonly prefixLength: number;
  /** Bytes of frames waiting for a missing one, all topics (see maxWaitingBytes). */
  private waitingBytes = 0;
  /** Publications that could not be sent to Redis (the publishing node delivered them locally; peers recover). */
  failedPublishes = 0;
  private lastPublishWarning = 0;
  /** Gaps repaired from history, and losses that closed subscribers (metrics, tests). */
  recovered = 0;
  lost = 0;

  constructor(
    private readonly publisher: Redis,
    private readonly subscriber: Redis,
    private readonly keys: RedisKeys,
    private readonly options: RedisBrokerOptions,
    private readonly logger?: Logger,
  ) {
    this.prefixLength = keys.topicChannel("").length;
    subscriber.on("message", (channel: string, message: string) => this.received(channel, message));
    // After every (re)connect: subscribe again to what this node serves, then look for gaps.
    subscriber.on("ready", () => this.reconnected());
    subscriber.on("close", () => {
      this.connected = false;
      for (const state of this.served.values()) {
        if (state.active) {
          state.active = false;
          state.subscribed = null;
        }
      }
    });
    this.connected = subscriber.status === "ready";
    this.checkTimer = setInterval(() => this.checkPositions(), options.positionCheckMs);
    this.checkTimer.unref?.();
  }

  attach(hub: PublicationSink): void {
    this.hub = hub;
  }

  /**
   * What a server-side recovery needs (given by createApp once the histories exist): reading kept
   * publications and shared positions, and closing a topic's local subscribers after a loss.
   */
  recoverWith(readKept: ReadKept, readPosition: ReadPosition, onLost: (topic: string) => void): void {
    this.readKept = readKept;
    this.readPosition = readPosition;
    this.onLost = onLost;
  }

  private readKept: ReadKept = async () => null;
  private readPosition: ReadPosition = async () => {
    throw new Error("no history attached");
  };
  private onLost: (topic: string) => void = () => undefined;

  publish(topic: string, frame: string, exceptClient?: string, position?: Position, sent = false): number {
    if (!sent) this.send(topic, frame, exceptClient, position);
    const state = this.served.get(topic);
    if (state === undefined) return 0;
    if (position === undefined) return this.hub?.deliver(topic, frame, exceptClient) ?? 0;
    return this.offer(topic, state, { position, frame, except: exceptClient, local: true });
  }

  /**
   * Where a publication of `topic` goes to the other nodes, and its envelope up to the position:
   * `head` is `<node>\n<except>\n`; `<epoch>\n<offset>\n<frame>` follows. RedisHistory's append
   * script PUBLISHes a publication on `channel` in the same step as it sequences it, so its frame
   * goes to Redis once; `received` parses what that script and `send` publish alike.
   */
  envelope(topic: string, exceptClient?: string): { channel: string; head: string } {
    return { channel: this.keys.topicChannel(topic), head: `${this.options.nodeId}\n${exceptClient ?? ""}\n` };
  }

  private send(topic: string, frame: string, exceptClient: string | undefined, position: Position | undefined): void {
    const { channel, head } = this.envelope(topic, exceptClient);
    this.publisher.publish(channel, `${head}${position?.epoch ?? ""}\n${position?.offset ?? ""}\n${frame}`).catch((err: unknown) => {
      this.failedPublishes++;
      // At most one line every 5 s: while Redis is away every room message lands here.
      const now = Date.now();
      if (now - this.lastPublishWarning < 5000) return;
      this.lastPublishWarning = now;
      this.logger?.warn({ err, code: "redis_publish_failed", topic, failed: this.failedPublishes }, "publications could not reach the other nodes; they recover them from history");
    });
  }

  subscribe(topic: string): void {
    if (!this.served.has(topic)) {
      this.served.set(topic, { last: null, waiting: new Map(), timer: null, subscribed: null, active: false, recovering: false, highest: 0 });
    }
    this.changed.add(topic);
    this.scheduleFlush();
  }

  unsubscribe(topic: string): void {
    const state = this.served.get(topic);
    if (state === undefined) return;
    if (state.timer !== null) clearTimeout(state.timer);
    this.clearWaiting(state);
    this.served.delete(topic);
    state.subscribed?.reject(new Error("unsubscribed"));
    this.changed.add(topic);
    this.scheduleFlush();
  }

  isReady(): boolean {
    return this.connected && this.publisher.status === "ready" && !this.closed;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.checkTimer);
    for (const state of this.served.values()) if (state.timer !== null) clearTimeout(state.timer);
    this.served.clear();
  }

  // DeliveredPositions

  get(topic: string): Position | undefined {
    return this.served.get(topic)?.last ?? undefined;
  }

  ready(topic: string): Promise<void> {
    const state = this.served.get(topic);
    // Not served here (no local subscriber): nothing to wait for, nothing tracked.
    if (state === undefined || state.active) return Promise.resolve();
    // Bounded: while Redis is away a subscribe fails (unavailable) instead of waiting for its return.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new SinalError("unavailable", "the cluster's Redis is not reachable; try again")), this.options.subscribeTimeoutMs);
    });
    if (state.subscribed === null) {
      state.subscribed = Promise.withResolvers();
      state.subscribed.promise.catch(() => undefined);
    }
    return Promise.race([state.subscribed.promise, timeout]).finally(() => clearTimeout(timer));
  }

  seed(topic: string, position: Position): Position {
    const state = this.served.get(topic);
    if (state === undefined) return position;
    if (state.last === null) {
      state.last = position;
      this.drain(topic, state);
    }
    return state.last ?? position;
  }

  reset(topic: string, position: Position): Position {
    const state = this.served.get(topic);
    if (state !== undefined) {
      state.last = position;
      state.highest = position.offset;
      this.clearWaiting(state);
    }
    return position;
  }

  /** Publications waiting for a missing one, over all topics (tests, metrics). */
  get waitingCount(): number {
    let n = 0;
    for (const state of this.served.values()) n += state.waiting.size;
    return n;
  }

  // Receiving

  private received(channel: string, message: string): void {
    const topic = channel.slice(this.prefixLength);
    const state = this.served.get(topic);
    if (state === undefined) return;
    const parts = splitEnvelope(message);
    if (parts === null || parts.node === this.options.nodeId) return;
    if (parts.epoch === "") {
      this.hub?.deliverFromPeer(topic, parts.frame, parts.except || undefined);
      return;
    }
    this.offer(topic, state, { position: { epoch: parts.epoch, offset: parts.offset }, frame: parts.frame, except: parts.except || undefined, local: false });
  }

  /** Delivers a publication in offset order (see the class comment); returns the local sockets reached now. */
  private offer(topic: string, state: Served, pending: Pending): number {
    const { last } = state;
    const { position } = pending;
    if (last === null) {
      // Nobody here was told a position yet (a user's own channel; or a subscribe whose read is
      // still running, which holds the live frames for its socket and drops those its reply covers).
      return this.deliverNow(topic, state, pending);
    }
    if (state.recovering) {
      // A gap is being read from history: wait behind it (bounded).
      this.hold(topic, state, pending);
      return 0;
    }
    if (position.epoch !== last.epoch) {
      // A new epoch: a reset, or Redis lost the channel's state. Subscribers hold offsets of the old one.
      this.lose(topic, state, position, "epoch changed");
      return 0;
    }
    if (position.offset <= last.offset) return 0;
    if (position.offset > last.offset + 1) {
      this.hold(topic, state, pending);
      return 0;
    }
    const reached = this.deliverNow(topic, state, pending);
    this.drain(topic, state);
    return reached;
  }

  private deliverNow(topic: string, state: Served, pending: Pending): number {
    state.last = pending.position;
    state.highest = Math.max(state.highest, pending.position.offset);
    const hub = this.hub;
    if (hub === null) return 0;
    if (pending.local) return hub.deliver(topic, pending.frame, pending.except);
    hub.deliverFromPeer(topic, pending.frame, pending.except);
    return 0;
  }

  /** Delivers the waiting publications that are now next in line. */
  private drain(topic: string, state: Served): void {
    for (;;) {
      const last = state.last;
      if (last === null) return;
      for (const offset of state.waiting.keys()) if (offset <= last.offset) this.unwait(state, offset);
      const next = state.waiting.get(last.offset + 1);
      if (next === undefined) break;
      this.unwait(state, last.offset + 1);
      if (next.position.epoch !== last.epoch) {
        this.lose(topic, state, next.position, "epoch changed");
        return;
      }
      // Delivered later than its publish returned: counted where it lands (see Broker, "Counting").
      this.deliverNow(topic, state, { ...next, local: false });
    }
    if (state.waiting.size === 0 && state.timer !== null) {
      clearTimeout(state.timer);
      state.timer = null;
    }
  }

  private hold(topic: string, state: Served, pending: Pending): void {
    state.highest = Math.max(state.highest, pending.position.offset);
    if (this.waitingBytes + pending.frame.length > this.options.maxWaitingBytes) {
      // Not kept: it is in history, and the repair reads up to the shared position.
      this.repair(topic);
      return;
    }
    if (!state.waiting.has(pending.position.offset)) {
      state.waiting.set(pending.position.offset, pending);
      this.waitingBytes += pending.frame.length;
    }
    if (state.waiting.size > this.options.maxWaiting) {
      this.repair(topic);
      return;
    }
    state.timer ??= setTimeout(() => {
      state.timer = null;
      this.repair(topic);
    }, this.options.reorderWindowMs);
  }

  /**
   * Reads the gap before the waiting publications (or up to the shared position) from history and
   * delivers it in order; a gap history no longer has is a loss.
   */
  private async repair(topic: string, upTo?: Position): Promise<void> {
    const state = this.served.get(topic);
    if (state === undefined || state.recovering) return;
    if (state.timer !== null) {
      clearTimeout(state.timer);
      state.timer = null;
    }
    state.recovering = true;
    try {
      if (state.last === null) {
        // Never seeded (the subscribe's read failed): start from the shared position.
        state.last = await this.readPosition(topic);
      }
      const last = state.last;
      const waitingTop = Math.max(0, ...state.waiting.keys());
      const target = upTo ?? (waitingTop > 0 ? { epoch: state.waiting.get(waitingTop)!.position.epoch, offset: waitingTop } : await this.readPosition(topic));
      // What history says stands: nothing seen beyond it is waited for.
      if (upTo === undefined && waitingTop === 0) state.highest = Math.min(state.highest, target.offset);
      if (target.epoch !== last.epoch) {
        state.recovering = false;
        this.lose(topic, state, target, "epoch changed");
        return;
      }
      let after = last.offset;
      while (after < target.offset - (upTo === undefined && waitingTop > 0 ? 1 : 0)) {
        if (state.waiting.has(after + 1)) break;
        const kept = await this.readKept(topic, last.epoch, after, target.offset);
        if (this.served.get(topic) !== state) return;
        if (kept === null || kept.length === 0) {
          state.recovering = false;
          this.lose(topic, state, target, "gap no longer in history");
          return;
        }
        for (const entry of kept) {
          if (entry.offset <= after) continue;
          if (state.waiting.has(entry.offset)) break;
          this.deliverNow(topic, state, { position: { epoch: last.epoch, offset: entry.offset }, frame: entry.frame, except: undefined, local: false });
          after = entry.offset;
        }
        this.recovered++;
      }
    } catch (err) {
      this.logger?.warn({ err, code: "redis_recovery_failed", topic }, "reading a gap from history failed; the next check tries again");
    } finally {
      if (this.served.get(topic) === state) {
        state.recovering = false;
        this.drain(topic, state);
        // Frames not kept (past the byte bound): read on up to them now.
        const behind = state.last !== null && state.highest > state.last.offset;
        if (behind && state.waiting.size === 0) queueMicrotask(() => void this.repair(topic));
        else if (state.waiting.size > 0 && state.timer === null) {
          state.timer = setTimeout(() => {
            state.timer = null;
            this.repair(topic);
          }, this.options.reorderWindowMs);
        }
      }
    }
  }

  private unwait(state: Served, offset: number): void {
    const pending = state.waiting.get(offset);
    if (pending === undefined) return;
    state.waiting.delete(offset);
    this.waitingBytes -= pending.frame.length;
  }

  private clearWaiting(state: Served): void {
    for (const pending of state.waiting.values()) this.waitingBytes -= pending.frame.length;
    state.waiting.clear();
  }

  private lose(topic: string, state: Served, position: Position, why: string): void {
    this.lost++;
    state.last = position;
    state.highest = position.offset;
    this.clearWaiting(state);
    if (state.timer !== null) {
      clearTimeout(state.timer);
      state.timer = null;
    }
    this.logger?.warn({ code: "publications_lost", topic, why }, "publications of a topic were lost between nodes; its subscribers here reconnect and recover");
    this.onLost(topic);
  }

  // Subscriptions

  private scheduleFlush(): void {
    if (this.flushing) return;
    this.flushing = true;
    queueMicrotask(() => {
      this.flushing = false;
      this.flush();
    });
  }

  private flush(): void {
    if (!this.connected || this.closed) return;
    const add: string[] = [];
    const drop: string[] = [];
    for (const topic of this.changed) {
      const state = this.served.get(topic);
      if (state === undefined) drop.push(topic);
      else if (!state.active) add.push(topic);
    }
    this.changed.clear();
    if (drop.length > 0) this.subscriber.unsubscribe(...drop.map((t) => this.keys.topicChannel(t))).catch(() => undefined);
    if (add.length > 0) this.subscribeAll(add);
  }

  private subscribeAll(topics: string[]): void {
    this.subscriber.subscribe(...topics.map((t) => this.keys.topicChannel(t))).then(
      () => {
        for (const topic of topics) {
          const state = this.served.get(topic);
          if (state === undefined || state.active) continue;
          state.active = true;
          state.subscribed?.resolve();
          state.subscribed = null;
        }
      },
      (err: unknown) => {
        // Redis is away (`reconnected` subscribes everything served once it is back), or the
        // command timed out on a live connection: tried again in a second either way.
        this.logger?.warn({ err, code: "redis_subscribe_failed", topics: topics.length }, "subscribing to topics failed; trying again");
        setTimeout(() => {
          for (const topic of topics) if (this.served.get(topic)?.active === false) this.changed.add(topic);
          this.scheduleFlush();
        }, 1000).unref?.();
      },
    );
  }

  private reconnected(): void {
    this.connected = true;
    const topics = [...this.served.keys()];
    this.changed.clear();
    for (let i = 0; i < topics.length; i += 1000) this.subscribeAll(topics.slice(i, i + 1000));
    // Anything published while the connection was away is found by comparing positions.
    this.checkPositions();
  }

  /**
   * Compares each served topic's delivered position with the shared one. The shared offset is
   * ahead by whatever is still on its way (assigned, not yet published or received), so a topic
   * behind is repaired only if it is still behind that position a reorder window later.
   */
  private checkPositions(): void {
    if (!this.connected || this.closed) return;
    for (const [topic, state] of this.served) {
      if (state.last === null || state.recovering) continue;
      this.readPosition(topic).then(
        (shared) => {
          if (this.served.get(topic) !== state || state.last === null) return;
          if (shared.epoch !== state.last.epoch) {
            this.lose(topic, state, shared, "epoch changed");
            return;
          }
          if (shared.offset <= state.last.offset) return;
          setTimeout(() => {
            if (this.served.get(topic) !== state || state.last === null || state.recovering) return;
            if (state.last.epoch === shared.epoch && state.last.offset < shared.offset && state.waiting.size === 0) void this.repair(topic, shared);
          }, this.options.reorderWindowMs).unref?.();
        },
        () => undefined,
      );
    }
  }
}

function splitEnvelope(message: string): { node: string; except: string; epoch: string; offset: number; frame: string } | null {
  const a = message.indexOf("\n");
  const b = message.indexOf("\n", a + 1);
  const c = message.indexOf("\n", b + 1);
  const d = message.indexOf("\n", c + 1);
  if (a < 0 || b < 0 || c < 0 || d < 0) return null;
  return { node: message.slice(0, a), except: message.slice(a + 1, b), epoch: message.slice(b + 1, c), offset: Number(message.slice(c + 1, d)), frame: message.slice(d + 1) };
}
