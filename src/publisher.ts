import type { ServerWebSocket } from "bun";
import type { Broker } from "./broker/broker.ts";
import type { Channel } from "./channel.ts";
import type { ChannelHistory } from "./history/channel-history.ts";
import type { MaybePromise, Position } from "./history/history.ts";
import type { Metrics } from "./metrics.ts";
import type { NewMessage, StoredMessage } from "./store/chat-store.ts";

export type { Position } from "./history/history.ts";

/** Told of every publication after its fan-out (the dashboard's activity counts). */
export type PublishObserver = (channel: Channel, event: string, reached: number) => void;

/**
 * The one path every publication takes (WebSocket publish, REST publish, chat, the MongoDB
 * feeds): sequence and keep it in the channel's history, serialize once, fan out, count.
 */
export class Publisher {
  private readonly observers: PublishObserver[] = [];

  constructor(
    readonly history: ChannelHistory,
    private readonly broker: Broker,
    private readonly metrics: Metrics,
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
   */
  async publish(channel: Channel, event: string, data: unknown): Promise<Position> {
    const ts = Date.now();
    const json = JSON.stringify(data) ?? "null";
    const kept = this.history.append(channel, (p) => pubFrame(channel, event, json, p, ts));
    const { position, frame } = kept instanceof Promise ? await kept : kept;
    this.fanOut(channel, event, frame);
    return position;
  }

  /**
   * A chat message: stored together with its `new_message` publication on the room (one commit),
   * then fanned out. A repeated client_msg_id returns the first copy and publishes nothing.
   */
  async publishMessage(channel: Channel, message: NewMessage, view: (stored: StoredMessage) => unknown): Promise<{ message: StoredMessage; duplicate: boolean }> {
    const committed = await this.history.appendMessage(channel, message, (p, stored) => pubFrame(channel, "new_message", JSON.stringify(view(stored)), p, message.createdAt));
    if (committed.duplicate) return { message: committed.message, duplicate: true };
    this.fanOut(channel, "new_message", committed.frame);
    return { message: committed.message!, duplicate: false };
  }

  private fanOut(channel: Channel, event: string, frame: string): void {
    const reached = this.broker.publish(channel.topic, frame);
    this.metrics.published(channel.tenant, reached);
    for (const observe of this.observers) observe(channel, event, reached);
  }

  /**
   * An ephemeral event (typing, presence changes): no offset, no epoch, never in history, and no
   * gap in the channel's offsets. `except` is a sending socket that must not get its own event.
   */
  publishEphemeral(channel: Channel, event: string, data: unknown, except?: ServerWebSocket<unknown>): void {
    const frame = JSON.stringify({ type: "pub", channel: channel.name, event, data, ts: Date.now() });
    const reached = this.broker.publish(channel.topic, frame, except);
    this.metrics.delivered(channel.tenant, reached);
    for (const observe of this.observers) observe(channel, event, reached);
  }

  /** A new epoch at offset 0 for this channel only (see HistoryStore.reset). */
  resetEpoch(channel: Channel): MaybePromise<Position> {
    return this.history.reset(channel);
  }
}

/** A `pub` frame, serialized once; `json` is the data already serialized. */
function pubFrame(channel: Channel, event: string, json: string, p: Position, ts: number): string {
  return `{"type":"pub","channel":${JSON.stringify(channel.name)},"event":${JSON.stringify(event)},"data":${json},"offset":${p.offset},"epoch":"${p.epoch}","ts":${ts}}`;
}
