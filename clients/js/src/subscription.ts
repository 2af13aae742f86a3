import { Cursor } from "./cursor.ts";
import { Emitter } from "./emitter.ts";
import { SinalError } from "./errors.ts";
import type { ReplyCallback } from "./requests.ts";
import type { GapReason, Position, Publication, SubscribeReply } from "./types.ts";

/** `gap`: publications were missed and cannot be replayed; reload the channel's state. */
export interface GapEvent {
  reason: GapReason;
  /** The position the client asked to resume from (null when the gap was seen live). */
  since: Position | null;
  /** Where the stream continues from: the next publication has `offset + 1`. */
  epoch: string;
  offset: number;
  /** Oldest offset the server still keeps, when it said so. */
  historyFrom?: number;
}

/** `recovered`: everything missed since `since` was replayed, `replayed` publications. */
export interface RecoveredEvent {
  since: Position;
  epoch: string;
  offset: number;
  replayed: number;
}

/** Events of a {@link Subscription}. */
export interface SubscriptionEvents {
  /** A publication, each offset once and in order (ephemeral ones as they come). */
  publication: Publication;
  /** Every successful (re)subscribe, with the server's reply (`presence`, `snapshot` included). */
  subscribed: SubscribeReply;
  recovered: RecoveredEvent;
  gap: GapEvent;
  /** The server refused the subscription (`forbidden`, `unknown_channel`, ...); it is over. */
  error: SinalError;
  unsubscribed: void;
}

export type SubscriptionState = "subscribing" | "subscribed" | "unsubscribed";

/** What a subscription needs from its client (internal). */
export interface SubscriptionHost {
  /** Sends a request now; false when not connected (the subscription is sent again on the next welcome). */
  sendNow(frame: Record<string, unknown>, callback: ReplyCallback): boolean;
  /** The id of the current connection, to tell a late reply from a stale one. */
  readonly connectionId: number;
  /** Drops the subscription from the client, and tells the server when `tellServer`. */
  remove(sub: Subscription, tellServer: boolean): Promise<void>;
  /** A publication handed to the app (for the client's own `publication` event). */
  delivered(pub: Publication): void;
  /** Delay before retrying a subscribe answered `rate_limited`. */
  readonly retryDelayMs: number;
}

/** Codes after which a subscribe is tried again on the same connection. */
const isRetryable = (code: string) => code === "rate_limited" || code === "timeout";

/**
 * One channel the client is subscribed to; made by `client.subscribe(channel)`. It is sent again
 * after every reconnect with `since` set to the last position seen, and says how that went:
 * `recovered` (nothing lost) or `gap` (reload the state). Publications arrive once each, in
 * offset order.
 *
 * @example
 * const sub = client.subscribe("room:42");
 * sub.on("publication", (pub) => render(pub));
 * sub.on("gap", () => reloadRoom());
 * await sub.ready;
 */
export class Subscription extends Emitter<SubscriptionEvents> {
  /**
   * Resolves with the first subscribe reply; rejects if the server refuses the channel.
   *
   * @example
   * const { epoch, offset } = await client.subscribe("room:42").ready;
   */
  readonly ready: Promise<SubscribeReply>;
  private settleReady: { resolve: (r: SubscribeReply) => void; reject: (e: SinalError) => void } | null = null;
  private current: SubscriptionState = "subscribing";
  private readonly cursor = new Cursor();
  /** A subscribe is on the wire on this connection. */
  private inFlight = false;
  /** A recovery whose replay has not fully arrived yet. */
  private recovering: { since: Position; target: number; replayed: number } | null = null;

  /** @internal Made by `SinalClient.subscribe`. */
  constructor(
    readonly channel: string,
    private readonly host: SubscriptionHost,
  ) {
    super();
    this.ready = new Promise((resolve, reject) => (this.settleReady = { resolve, reject }));
    // Apps that never await `ready` must not get an unhandled rejection from it.
    this.ready.catch(() => {});
  }

  /**
   * `subscribing` (waiting for a reply, or for the connection), `subscribed` or `unsubscribed`.
   *
   * @example
   * if (sub.state === "subscribed") showLive();
   */
  get state(): SubscriptionState {
    return this.current;
  }

  /**
   * The last `{epoch, offset}` seen, sent as `since` on resubscribe; null before the first reply.
   *
   * @example
   * localStorage.setItem("room:42", JSON.stringify(sub.position));
   */
  get position(): Position | null {
    return this.cursor.position;
  }

  /**
   * Leaves the channel. Resolves once the server confirmed (or at once when offline).
   *
   * @example
   * await sub.unsubscribe();
   */
  unsubscribe(): Promise<void> {
    if (this.current === "unsubscribed") return Promise.resolve();
    this.end();
    this.emit("unsubscribed", undefined);
    return this.host.remove(this, true);
  }

  /** @internal Sends the subscribe (with `since` once a position is known). */
  send(): void {
    if (this.current === "unsubscribed" || this.inFlight) return;
    const since = this.cursor.position;
    const frame: Record<string, unknown> = { type: "subscribe", channel: this.channel };
    if (since !== null) frame.since = since;
    const connection = this.host.connectionId;
    this.inFlight = this.host.sendNow(frame, (err, reply) => {
      if (connection !== this.host.connectionId) return; // that connection is gone; the next one subscribes anew
      this.inFlight = false;
      if (this.current === "unsubscribed") return; // unsubscribed while the reply was on its way
      if (err !== null) this.failed(err);
      else this.subscribed(reply as SubscribeReply, since);
    });
  }

  /** @internal The connection closed: subscribe again on the next one. */
  connectionLost(): void {
    if (this.current === "unsubscribed") return;
    this.current = "subscribing";
    this.inFlight = false;
    this.recovering = null;
    // Anything held came after a hole on the old connection; the replay will bring it again.
    this.cursor.clearHeld();
  }

  /** @internal A `pub` frame for this channel. */
  publication(pub: Publication): void {
    if (this.current === "unsubscribed") return;
    let offer = this.cursor.offer(pub);
    if (offer.epochChanged) {
      const position = { epoch: pub.epoch!, offset: pub.offset! - 1 };
      this.recovering = null;
      this.cursor.reset(position);
      this.emit("gap", { reason: "epoch_changed", since: null, ...position });
      offer = this.cursor.offer(pub);
    }
    this.deliver(offer.deliver);
    // A hole nobody announced: ask the server for what is missing.
    if (offer.jumped && this.current === "subscribed") this.send();
  }

  private subscribed(reply: SubscribeReply, since: Position | null): void {
    this.current = "subscribed";
    const position = { epoch: reply.epoch, offset: reply.offset };
    let gap: GapEvent | null = null;
    if (since !== null && reply.recovered) {
      // The replay follows this reply: `recovered` fires once it has all arrived.
      this.recovering = { since, target: reply.offset, replayed: 0 };
    } else {
      if (since !== null) {
        gap = { reason: reply.reason ?? "unknown", since, ...position };
        if (typeof reply.history_from === "number") gap.historyFrom = reply.history_from;
      }
      this.recovering = null;
    }
    const drained = gap !== null || since === null ? this.cursor.reset(position) : [];
    this.settleReady?.resolve(reply);
    this.settleReady = null;
    this.emit("subscribed", reply);
    if (gap !== null) this.emit("gap", gap);
    this.deliver(drained);
    this.checkRecovered();
    // Publications still held after a fresh start mean a hole right after the reply.
    if (this.recovering === null && this.cursor.holding) this.send();
  }

  private failed(err: SinalError): void {
    if (err.code === "disconnected" || err.code === "closed") return; // the next welcome subscribes again
    if (isRetryable(err.code)) {
      const connection = this.host.connectionId;
      setTimeout(() => {
        if (connection === this.host.connectionId) this.send();
      }, err.code === "timeout" ? 0 : this.host.retryDelayMs);
      return;
    }
    this.end();
    this.settleReady?.reject(err);
    this.settleReady = null;
    void this.host.remove(this, false);
    this.emit("error", err);
  }

  private end(): void {
    this.current = "unsubscribed";
    this.recovering = null;
    this.cursor.clearHeld();
  }

  private deliver(pubs: Publication[]): void {
    for (const pub of pubs) {
      const recovering = this.recovering;
      const isReplayed = recovering !== null && pub.offset !== undefined && pub.offset <= recovering.target;
      if (isReplayed) recovering.replayed++;
      this.emit("publication", pub);
      this.host.delivered(pub);
      // A conflated publication may jump past the target: the replay is over all the same.
      if (recovering !== null && this.recovering === recovering && pub.offset !== undefined && pub.offset >= recovering.target) this.finishRecovery(pub.offset);
    }
  }

  /** After a reply: the replay may already be complete (nothing was missed). */
  private checkRecovered(): void {
    const position = this.cursor.position;
    if (this.recovering !== null && position !== null && position.offset >= this.recovering.target) this.finishRecovery(position.offset);
  }

  private finishRecovery(offset: number): void {
    const recovering = this.recovering!;
    this.recovering = null;
    this.emit("recovered", { since: recovering.since, epoch: this.cursor.position!.epoch, offset, replayed: recovering.replayed });
  }
}
