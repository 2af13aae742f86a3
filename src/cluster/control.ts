import type { Logger } from "../log.ts";
import type { Redis } from "../redis/redis-client.ts";
import type { RedisKeys } from "../redis/keys.ts";

/** What one node asks of every node (itself included). */
export type ControlMessage =
  /** Close every connection of the user, wherever it is connected (4001: it must come back with a new token). */
  | { kind: "disconnect"; tenant: string; user: string }
  /** A room's members changed: forget what was read of them, so access is decided on the new list at once. */
  | { kind: "room_changed"; tenant: string; room: string };

export type ControlHandler = (message: ControlMessage) => void;

/**
 * Messages to every node of the deployment: `send` resolves once the message is on its way to all
 * of them (on one node: handled already). Delivery is at most once per node and best effort
 * across nodes (Redis pub/sub): a node that is disconnected from Redis at that moment misses it,
 * so a control message only ever speeds up what a bound guarantees anyway (a room's member cache
 * is re-read within 5 s; a user's token expires).
 */
export interface ClusterControl {
  send(message: ControlMessage): Promise<void>;
  /** The handler of this node (createApp gives it once). */
  handle(handler: ControlHandler): void;
}

/** One node: the message is handled here, at once. */
export class LocalControl implements ClusterControl {
  private handler: ControlHandler = () => undefined;

  async send(message: ControlMessage): Promise<void> {
    this.handler(message);
  }

  handle(handler: ControlHandler): void {
    this.handler = handler;
  }
}

/**
 * Several nodes: one pub/sub channel every node subscribes to (again after each reconnect), on the
 * subscriber connection the broker uses; messages are JSON.
 */
export class RedisControl implements ClusterControl {
  private handler: ControlHandler = () => undefined;
  private readonly channel: string;

  constructor(
    private readonly redis: Redis,
    subscriber: Redis,
    keys: RedisKeys,
    private readonly logger?: Logger,
  ) {
    this.channel = keys.controlChannel();
    subscriber.on("message", (channel: string, message: string) => {
      if (channel === this.channel) this.received(message);
    });
    const subscribe = () =>
      subscriber.subscribe(this.channel).catch((err: unknown) => this.logger?.warn({ err, code: "redis_subscribe_failed" }, "subscribing to the control channel failed; retried when Redis is back"));
    subscriber.on("ready", subscribe);
    if (subscriber.status === "ready") void subscribe();
  }

  async send(message: ControlMessage): Promise<void> {
    await this.redis.publish(this.channel, JSON.stringify(message));
  }

  handle(handler: ControlHandler): void {
    this.handler = handler;
  }

  private received(text: string): void {
    try {
      this.handler(JSON.parse(text) as ControlMessage);
    } catch (err) {
      this.logger?.warn({ err, code: "control_message_failed" }, "a control message could not be handled");
    }
  }
}
