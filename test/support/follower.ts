/** A channel position, as a subscribe reply and a `pub` frame carry it. */
export interface Position {
  epoch: string;
  offset: number;
}

/** What a follower saw, in the order it saw it. */
export type FollowEvent =
  /** A subscribe answered ok; `since` is what the follower sent (none on its first); `snapshot` on a feed channel. */
  | { type: "subscribed"; epoch: string; offset: number; recovered: boolean; reason?: string; since?: Position; snapshot?: unknown }
  /** A subscribe answered with an error (e.g. 503 `unavailable` while Redis is away); it tries again. */
  | { type: "refused"; code: string }
  | { type: "pub"; epoch: string; offset: number; event: string; data: unknown }
  /** An ephemeral event of the channel (`user_joined`, `user_left`, ...): no offset. */
  | { type: "ephemeral"; event: string; data: unknown }
  | { type: "closed"; code: number; reason: string };

export interface FollowerOptions {
  /** Where each (re)connection goes, with its token (e.g. the balancer's ws URL). */
  url: () => string;
  channel: string;
  /** How long it waits after a close or a refused subscribe before it tries again. Default 50 ms. */
  retryDelayMs?: number;
  /** At most this many connections and subscribes in all; past it the follower gives up (and says so). Default 40. */
  maxAttempts?: number;
}

/**
 * A client that follows one channel as a well-behaved SDK would, over a raw WebSocket: it
 * subscribes; when its connection closes (a killed node, a 4011) it connects again, through
 * whatever `url()` names, and subscribes with `since` = the last position it saw (the last `pub`,
 * or the last subscribe reply). Every frame of the channel, every reply and every close is kept in
 * `events`, in order, so a test can check the offsets it got and what it was told about the rest.
 * Bounded: after `maxAttempts` connections and subscribes it stops and records why in `gaveUp`.
 *
 * @example
 * const follower = new Follower({ url: () => `${cluster.wsUrl}?token=${token}`, channel: "dept:a" });
 * await follower.start();
 * await follower.until((f) => f.last?.offset === 10, 5000);
 * follower.stop();
 */
export class Follower {
  readonly events: FollowEvent[] = [];
  /** The last position seen: the last `pub`, or the last subscribe reply. */
  last: Position | null = null;
  /** Why it stopped trying (attempts exhausted, a connection that could not open), or null. */
  gaveUp: string | null = null;
  private socket: WebSocket | null = null;
  private stopped = false;
  private attempts = 0;
  private nextId = 1;
  private pendingId = 0;
  private watchers: (() => void)[] = [];
  private firstSubscribe: PromiseWithResolvers<void> | null = null;

  constructor(private readonly options: FollowerOptions) {}

  get channel(): string {
    return this.options.channel;
  }

  /** Connects and subscribes; resolves once the first subscribe was answered ok (rejects if it was not). */
  start(): Promise<void> {
    this.firstSubscribe = Promise.withResolvers<void>();
    this.connect();
    return this.firstSubscribe.promise;
  }

  /** Closes the connection and stops reconnecting. */
  stop(): void {
    this.stopped = true;
    this.socket?.close();
    this.notify();
  }

  /** The offsets of the `pub` frames received, in order. */
  get offsets(): number[] {
    return this.events.flatMap((e) => (e.type === "pub" ? [e.offset] : []));
  }

  /** Resolves once `condition` holds (checked after every event); rejects after `ms`, naming the channel and the last position. */
  until(condition: (follower: Follower) => boolean, ms: number): Promise<void> {
    if (condition(this)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = () => {
        if (!condition(this)) return false;
        clearTimeout(timer);
        resolve();
        return true;
      };
      const timer = setTimeout(() => {
        this.watchers = this.watchers.filter((w) => w !== watcher);
        reject(new Error(`${this.options.channel}: condition not met within ${ms} ms (last ${JSON.stringify(this.last)}, gave up: ${this.gaveUp})`));
      }, ms);
      const watcher = () => {
        if (check()) this.watchers = this.watchers.filter((w) => w !== watcher);
      };
      this.watchers.push(watcher);
    });
  }

  private record(event: FollowEvent): void {
    this.events.push(event);
    this.notify();
  }

  private notify(): void {
    for (const watcher of [...this.watchers]) watcher();
  }

  private attempt(): boolean {
    if (this.stopped) return false;
    if (++this.attempts > (this.options.maxAttempts ?? 40)) {
      this.giveUp(`more than ${this.options.maxAttempts ?? 40} attempts`);
      return false;
    }
    return true;
  }

  private giveUp(why: string): void {
    this.gaveUp = why;
    this.stopped = true;
    this.socket?.close();
    this.firstSubscribe?.reject(new Error(`${this.options.channel}: ${why}`));
    this.notify();
  }

  private retryLater(what: () => void): void {
    // prevents the timer from keeping a finished test's process alive
    setTimeout(what, this.options.retryDelayMs ?? 50).unref?.();
  }

  private connect(): void {
    if (!this.attempt()) return;
    const socket = new WebSocket(this.options.url());
    this.socket = socket;
    let welcomed = false;
    socket.onmessage = (message) => {
      const frame = JSON.parse(String(message.data)) as Record<string, any>;
      if (!welcomed) {
        if (frame.type !== "welcome") return this.giveUp(`expected welcome, got ${String(message.data).slice(0, 200)}`);
        welcomed = true;
        this.subscribe();
        return;
      }
      this.received(frame);
    };
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.record({ type: "closed", code: event.code, reason: event.reason });
      if (!this.stopped) this.retryLater(() => this.connect());
    };
  }

  private subscribe(): void {
    if (!this.attempt()) return;
    const id = this.nextId++;
    this.pendingId = id;
    const since = this.last ?? undefined;
    this.socket?.send(JSON.stringify({ type: "subscribe", id, channel: this.options.channel, ...(since ? { since } : {}) }));
  }

  private received(frame: Record<string, any>): void {
    if (frame.type === "reply" && frame.id === this.pendingId) {
      const since = this.last ?? undefined;
      this.pendingId = 0;
      if (!frame.ok) {
        this.record({ type: "refused", code: String(frame.error?.code) });
        this.retryLater(() => this.socket !== null && this.subscribe());
        return;
      }
      // Recovered: the missed publications follow the reply, so the position stays the last one
      // seen until they arrive (a close in between must not skip them on the next `since`).
      if (since === undefined || !frame.recovered) this.last = { epoch: frame.epoch, offset: frame.offset };
      this.record({ type: "subscribed", epoch: frame.epoch, offset: frame.offset, recovered: frame.recovered, ...(frame.reason ? { reason: frame.reason } : {}), ...(since ? { since } : {}), ...("snapshot" in frame ? { snapshot: frame.snapshot } : {}) });
      this.firstSubscribe?.resolve();
      return;
    }
    if (frame.type !== "pub" || frame.channel !== this.options.channel) return;
    if (frame.offset === undefined) {
      this.record({ type: "ephemeral", event: frame.event, data: frame.data });
      return;
    }
    this.last = { epoch: frame.epoch, offset: frame.offset };
    this.record({ type: "pub", epoch: frame.epoch, offset: frame.offset, event: frame.event, data: frame.data });
  }
}
