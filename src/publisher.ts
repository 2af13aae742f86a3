import type { Broker } from "./broker/broker.ts";
import type { Channel } from "./channel.ts";
import { serializeWithin } from "./data-size.ts";
import type { ChannelHistory } from "./history/channel-history.ts";
import type { IdempotencyKey, MaybePromise, Position } from "./history/history.ts";
import type { Logger } from "./log.ts";
import type { Metrics } from "./metrics.ts";
import type { NewMessage, StoredMessage } from "./store/chat-store.ts";

export type { Position } from "./history/history.ts";

/** The client that sent a publication with a WebSocket `publish` frame: `from` in its `pub` frame. */
export interface PublishedBy {
  /** The token's `sub`. */
  user: string;
  /** The connection id (the `client` of its welcome). */
  client: string;
  /** The token's `name` claim, when it has one. */
  name?: string;
}

export interface PublishOptions {
  /** Stored in the publication's own commit (durable channels): a retry finds it (see PublishService). */
  key?: IdempotencyKey;
  /** Set only for a client's own publication; REST, chat, feeds and the server publish without. */
  from?: PublishedBy;
}

/**
 * Told of every publication made on this node after its fan-out, with the sockets it reached on
 * this node (the dashboard's activity counts); other nodes count what they deliver themselves
 * (see Broker, "Counting").
 */
export type PublishObserver = (channel: Channel, event: string, reached: number) => void;

/**
 * The one path every publication takes (WebSocket publish, REST publish, chat, notifications,
 * room announcements, locks, the MongoDB feeds): check its size, sequence and keep it in the
 * channel's history, serialize once, fan out, count. Fan-out happens inside the history's
 * `deliver` call, and the broker hands a publication to this node's hub before `publish` returns,
 * so every subscriber gets a channel's publications in offset order whatever path each took (see
 * HistoryStore and Broker). The publication and this node's deliveries are counted here.
 */
export class Publisher {
  private readonly observers: PublishObserver[] = [];

  constructor(
    readonly history: ChannelHistory,
    private readonly broker: Broker,
    private readonly metrics: Metrics,
    /** Largest `data` of a publication, as serialized JSON bytes (MAX_FRAME_BYTES): past it payload_too_large. */
    private readonly maxDataBytes = 64 * 1024,
    private readonly logger?: Logger,
  ) {}

  /** Calls `observer` after every publication, durable or ephemeral. */
  observe(observer: PublishObserver): void {
    this.observers.push(observer);
  }

  /**
   * Keeps the publication in history, then fans it out. For channels whose history is in memory
   * both happen synchronously, before the returned promise settles: a caller that updates its
   * own state in the same step (the feeds' snapshot cache) stays consistent with the positions
   * that subscribe replies report. Durable channels fan out once the publication is committed.
   * `from` is part of the kept frame, so a replay shows who published too.
   */
  async publish(channel: Channel, event: string, data: unknown, options: PublishOptions = {}): Promise<Position> {
    const ts = Date.now();
    const json = this.serialize(data, "data");
    const from = options.from === undefined ? null : fromJson(options.from);
    const kept = this.history.append(
      channel,
      (p) => pubFrame(channel, event, json, p, ts, from),
      (p, frame, sent) => this.fanOut(channel, event, frame, p, sent),
      options.key,
    );
    return (kept instanceof Promise ? await kept : kept).position;
  }

  /**
   * A publication nobody awaits (a join, a leave, a lock's expiry): a failure (a room whose commit
   * fails: disk full, I/O error) is logged with its code and counted in
   * `sinal_background_failures_total{source}`, never left as an unhandled rejection, which would
   * stop the process and drop every connection.
   */
  publishInBackground(channel: Channel, event: string, data: unknown, source: string): void {
    this.publish(channel, event, data).catch((err: unknown) => this.backgroundFailed(err, source, channel));
  }

  /** Logs (code `<source>_failed`) and counts a failure of work nobody awaits (see publishInBackground). */
  backgroundFailed(err: unknown, source: string, channel?: Channel): void {
    this.metrics.backgroundFailed(source);
    this.logger?.error({ err, code: `${source}_failed`, source, channel: channel?.name }, "background work failed");
  }

  /**
   * A chat message: stored together with its `new_message` publication on the room (one commit),
   * then fanned out. A repeated client_msg_id returns the first copy and publishes nothing.
   */
  async publishMessage(channel: Channel, message: NewMessage, view: (stored: StoredMessage) => unknown): Promise<{ message: StoredMessage; duplicate: boolean }> {
    this.serialize(message.content, "content");
    const committed = await this.history.appendMessage(
      channel,
      message,
      (p, stored) => pubFrame(channel, "new_message", JSON.stringify(view(stored)), p, message.createdAt, null),
      (p, frame) => this.fanOut(channel, "new_message", frame, p),
    );
    if (committed.duplicate) return { message: committed.message, duplicate: true };
    return { message: committed.message!, duplicate: false };
  }

  private serialize(data: unknown, field: string): string {
    return serializeWithin(data, this.maxDataBytes, field);
  }

  /**
   * Runs inside the history's `deliver`, possibly for every entry of a commit in turn: it must not
   * throw, or the publications after it would not be fanned out (and a committed one would look failed).
   * `sent`: the history already sent it to the other nodes (see Deliver).
   */
  private fanOut(channel: Channel, event: string, frame: string, position: Position, sent = false): void {
    try {
      const reached = this.broker.publish(channel.topic, frame, undefined, position, sent);
      this.metrics.published(channel.tenant, reached);
      for (const observe of this.observers) observe(channel, event, reached);
    } catch (err) {
      this.logger?.error({ err, channel: channel.name }, "fan-out failed");
    }
  }

  /**
   * An ephemeral event (typing, presence changes): no offset, no epoch, never in history, and no
   * gap in the channel's offsets. `exceptClient` is the sending client (its `Connection.id`),
   * whose socket must not get its own event, on whichever node it is connected.
   */
  publishEphemeral(channel: Channel, event: string, data: unknown, exceptClient?: string): void {
    const frame = JSON.stringify({ type: "pub", channel: channel.name, event, data, ts: Date.now() });
    const reached = this.broker.publish(channel.topic, frame, exceptClient);
    this.metrics.delivered(channel.tenant, reached);
    for (const observe of this.observers) observe(channel, event, reached);
  }

  /** A new epoch at offset 0 for this channel only (see HistoryStore.reset). */
  resetEpoch(channel: Channel): MaybePromise<Position> {
    return this.history.reset(channel);
  }
}

/**
 * A `pub` frame, serialized once; `json` is the data already serialized, `from` too (or null).
 * Keys in this order always: type, channel, event, data, from (when set), offset, epoch, ts.
 */
function pubFrame(channel: Channel, event: string, json: string, p: Position, ts: number, from: string | null): string {
  const by = from === null ? "" : `,"from":${from}`;
  return `{"type":"pub","channel":${JSON.stringify(channel.name)},"event":${JSON.stringify(event)},"data":${json}${by},"offset":${p.offset},"epoch":"${p.epoch}","ts":${ts}}`;
}

/** `{"user","client","name"?}`, in that order; a token without a name claim gives no `name` key. */
function fromJson(by: PublishedBy): string {
  const fields: PublishedBy = { user: by.user, client: by.client };
  if (by.name !== undefined) fields.name = by.name;
  return JSON.stringify(fields);
}
