import type { Server, ServerWebSocket } from "bun";

/**
 * Fan-out of serialized frames to the sockets subscribed to a topic (`<tenant>/<channel>`).
 *
 * Guarantees every implementation keeps:
 * - Frames published to one topic through one broker reach each subscriber in publish order.
 * - `publish` never throws for a topic without subscribers; it returns 0.
 * - A socket receives a topic's frames from the moment `subscribe` returns until `unsubscribe`
 *   or its close; never a frame of a topic it is not subscribed to (tenant isolation rests on it).
 * Offsets are not the broker's business: the Publisher assigns them before calling `publish`.
 */
export interface Broker {
  /** Gives the broker the listening server, once, before any publish. */
  attach(server: Server<unknown>): void;
  /**
   * Hands `frame` to every subscriber of `topic` but `except` (the sending socket, for events not
   * echoed to their sender); returns how many local subscribers it was handed to.
   */
  publish(topic: string, frame: string, except?: ServerWebSocket<unknown>): number;
  subscribe(ws: ServerWebSocket<unknown>, topic: string): void;
  unsubscribe(ws: ServerWebSocket<unknown>, topic: string): void;
  /**
   * From now on the socket's frames of `topic` go to `sink` instead of the socket, subscribing it
   * first if it is not (a later `unsubscribe` or close ends it too). Used while a subscribe reads
   * history asynchronously (the reply and the replay must come before any live frame), and for a
   * slow client whose frames are conflated. A second divert of the same pair replaces the sink.
   */
  divert(ws: ServerWebSocket<unknown>, topic: string, sink: (frame: string) => void): void;
  /** Ends a divert: later frames of `topic` go to the socket directly again. */
  undivert(ws: ServerWebSocket<unknown>, topic: string): void;
  /** A socket closed while subscribed to `topics` (the runtime may already have dropped it from them). */
  socketClosed(ws: ServerWebSocket<unknown>, topics: readonly string[]): void;
  /** Topics with at least one local subscriber. */
  channelCount(): number;
  /** True while the broker can deliver (for /ready). */
  isReady(): boolean;
  close(): Promise<void>;
}
