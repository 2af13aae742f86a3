import type { TokenVerifier } from "../auth/tokens.ts";
import { maySubscribe, mayPublish, parseChannel } from "../channel.ts";
import type { Broker } from "../broker/broker.ts";
import { SinalError } from "../errors.ts";
import type { Metrics } from "../metrics.ts";
import type { Publisher } from "../publisher.ts";
import type { Connection } from "./connection.ts";
import type { AnyFrame, Frame } from "./frames.ts";

/** Result fields of a successful reply (flat, PROTOCOL.md), or null for "answer with pong". */
export type ReplyFields = Record<string, unknown>;

export interface HandlerDeps {
  verifier: TokenVerifier;
  publisher: Publisher;
  broker: Broker;
  metrics: Metrics;
  maxSubscriptions: number;
}

/** One function per client frame type; each throws SinalError for the client to see. */
export class FrameHandlers {
  constructor(private readonly deps: HandlerDeps) {}

  handle(conn: Connection, frame: AnyFrame): ReplyFields | Promise<ReplyFields> {
    switch (frame.type) {
      case "subscribe":
        return this.subscribe(conn, frame);
      case "unsubscribe":
        return this.unsubscribe(conn, frame);
      case "publish":
        return this.publish(conn, frame);
      case "refresh":
        return this.refresh(conn, frame);
      case "ping":
        return {};
    }
  }

  private subscribe(conn: Connection, frame: Frame<"subscribe">): ReplyFields {
    const channel = parseChannel(conn.tenant, frame.channel);
    if (!maySubscribe(conn.user, conn.claims.subChannels, channel)) {
      throw new SinalError("forbidden", `not allowed to subscribe to "${channel.name}"`);
    }
    if (!conn.ws.isSubscribed(channel.topic)) {
      if (conn.subscriptions >= this.deps.maxSubscriptions) {
        throw new SinalError("too_many_subscriptions", `at most ${this.deps.maxSubscriptions} subscriptions per connection`);
      }
      this.deps.broker.subscribe(conn.ws, channel.topic);
      conn.topics.push(channel.topic);
      this.deps.metrics.tenant(conn.tenant).subscriptions++;
    }
    const position = this.deps.publisher.position(channel);
    // No history is kept yet: recovery succeeds only when the client missed nothing.
    const since = frame.since;
    const recovered = since !== undefined && since.epoch === position.epoch && since.offset === position.offset;
    return { channel: channel.name, epoch: position.epoch, offset: position.offset, recovered };
  }

  private unsubscribe(conn: Connection, frame: Frame<"unsubscribe">): ReplyFields {
    const channel = parseChannel(conn.tenant, frame.channel);
    if (conn.ws.isSubscribed(channel.topic) && channel.name !== `user:${conn.user}`) {
      this.deps.broker.unsubscribe(conn.ws, channel.topic);
      conn.topics.splice(conn.topics.indexOf(channel.topic), 1);
      this.deps.metrics.tenant(conn.tenant).subscriptions--;
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
