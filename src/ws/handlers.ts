import type { TokenVerifier } from "../auth/tokens.ts";
import type { Broker } from "../broker/broker.ts";
import { mayPublish, maySubscribe, parseChannel, type Channel } from "../channel.ts";
import { SinalError } from "../errors.ts";
import type { Metrics } from "../metrics.ts";
import type { Publisher } from "../publisher.ts";
import type { Connection } from "./connection.ts";
import type { AnyFrame, Frame, FrameType } from "./frames.ts";
import type { Listeners } from "./hooks.ts";

/** Result fields of a successful reply (flat, PROTOCOL.md). */
export type ReplyFields = Record<string, unknown>;

/** Handles one frame type; throws SinalError for the client to see. */
export type FrameHandler<T extends FrameType> = (conn: Connection, frame: Extract<AnyFrame, { type: T }>) => ReplyFields | Promise<ReplyFields>;
/** Handlers that features (chat, presence, locks) add for their frame types. */
export type FeatureHandlers = { [T in FrameType]?: FrameHandler<T> };

export interface HandlerDeps {
  verifier: TokenVerifier;
  publisher: Publisher;
  broker: Broker;
  metrics: Metrics;
  listeners: Listeners;
  maxSubscriptions: number;
  /** Extra reply fields for a subscribe (e.g. the presence snapshot), from the features. */
  subscribeExtras: readonly SubscribeExtra[];
}

/** Adds fields to a subscribe reply for the channels a feature owns; null when not its channel. */
export type SubscribeExtra = (conn: Connection, channel: Channel) => ReplyFields | null;

/** The core frames (subscribe, unsubscribe, publish, refresh, ping) plus the features' ones. */
export class FrameHandlers {
  private readonly table: FeatureHandlers;

  constructor(
    private readonly deps: HandlerDeps,
    features: FeatureHandlers,
  ) {
    this.table = {
      subscribe: (conn, frame) => this.subscribe(conn, frame),
      unsubscribe: (conn, frame) => this.unsubscribe(conn, frame),
      publish: (conn, frame) => this.publish(conn, frame),
      refresh: (conn, frame) => this.refresh(conn, frame),
      ping: () => ({}),
      ...features,
    };
  }

  handle(conn: Connection, frame: AnyFrame): ReplyFields | Promise<ReplyFields> {
    const handler = this.table[frame.type] as FrameHandler<FrameType> | undefined;
    if (handler === undefined) throw new SinalError("unknown_type", `frame type "${frame.type}" is not served here`);
    return handler(conn, frame);
  }

  private subscribe(conn: Connection, frame: Frame<"subscribe">): ReplyFields {
    const channel = parseChannel(conn.tenant, frame.channel);
    if (!maySubscribe(conn.user, conn.claims.subChannels, channel)) {
      this.deps.listeners.denied(conn, channel.name, "forbidden");
      throw new SinalError("forbidden", `not allowed to subscribe to "${channel.name}"`);
    }
    if (!conn.topics.includes(channel.topic)) {
      if (conn.subscriptions >= this.deps.maxSubscriptions) {
        this.deps.listeners.denied(conn, channel.name, "too_many_subscriptions");
        throw new SinalError("too_many_subscriptions", `at most ${this.deps.maxSubscriptions} subscriptions per connection`);
      }
      this.deps.broker.subscribe(conn.ws, channel.topic);
      conn.topics.push(channel.topic);
      this.deps.metrics.tenant(conn.tenant).subscriptions++;
      // After the reply, which the gateway writes as soon as this synchronous handler returns:
      // a subscriber sees its reply before any publication the subscribe causes (user_joined).
      queueMicrotask(() => this.deps.listeners.subscribed(conn, channel));
    }
    const position = this.deps.publisher.position(channel);
    // No history is kept yet: recovery succeeds only when the client missed nothing.
    const since = frame.since;
    const recovered = since !== undefined && since.epoch === position.epoch && since.offset === position.offset;
    const reply: ReplyFields = { channel: channel.name, epoch: position.epoch, offset: position.offset, recovered };
    for (const extra of this.deps.subscribeExtras) Object.assign(reply, extra(conn, channel));
    return reply;
  }

  private unsubscribe(conn: Connection, frame: Frame<"unsubscribe">): ReplyFields {
    const channel = parseChannel(conn.tenant, frame.channel);
    if (channel.name !== `user:${conn.user}` && conn.topics.includes(channel.topic)) {
      this.deps.broker.unsubscribe(conn.ws, channel.topic);
      conn.topics.splice(conn.topics.indexOf(channel.topic), 1);
      this.deps.metrics.tenant(conn.tenant).subscriptions--;
      this.deps.listeners.unsubscribed(conn, channel);
    }
    return { channel: channel.name };
  }

  private async publish(conn: Connection, frame: Frame<"publish">): Promise<ReplyFields> {
    const channel = parseChannel(conn.tenant, frame.channel);
    if (!mayPublish(conn.user, conn.claims.pubChannels, channel)) {
      throw new SinalError("forbidden", `not allowed to publish to "${channel.name}"`);
    }
    if (frame.data === undefined) throw new SinalError("bad_request", "data: required");
    const { offset, epoch } = await this.deps.publisher.publish(channel, frame.event, frame.data);
    return { offset, epoch };
  }

  private refresh(conn: Connection, frame: Frame<"refresh">): ReplyFields {
    const claims = this.deps.verifier.verify(frame.token);
    if (claims.user !== conn.user || claims.tenant !== conn.tenant) {
      throw new SinalError("forbidden", "a refresh token must be for the same sub and tid");
    }
    conn.claims = claims;
    return { expires_at: claims.expiresAt };
  }
}
