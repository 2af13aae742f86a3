import type { Channel } from "../channel.ts";
import type { Connection } from "./connection.ts";

/**
 * What features (presence, rooms, typing, locks, notifications, audit) learn about connections.
 * The gateway calls every registered listener in order; a listener must not throw (the gateway
 * logs and carries on if one does) and must be cheap: `active` runs for every accepted frame.
 */
export interface ConnectionListener {
  /** The connection was accepted and its `welcome` sent. */
  opened?(conn: Connection): void;
  /** The connection closed (any reason); its subscriptions are already gone. */
  closed?(conn: Connection, code: number): void;
  /** The client subscribed to a channel it was not subscribed to yet. */
  subscribed?(conn: Connection, channel: Channel): void;
  /** The client left a channel (by `unsubscribe`; a close reports `closed` only). */
  unsubscribed?(conn: Connection, channel: Channel): void;
  /** A subscribe was refused (for the audit log). */
  denied?(conn: Connection, channel: string, code: string): void;
  /** The client sent a frame that the rate limiter accepted (`now`: Date.now()). */
  active?(conn: Connection, now: number): void;
  /** Called every sweep interval with Date.now() (typing expiry, idle presence, lock TTLs). */
  sweep?(now: number): void;
}

/** Fans a call out to every listener that implements it. */
export class Listeners implements Required<ConnectionListener> {
  constructor(
    private readonly all: readonly ConnectionListener[],
    private readonly onError: (err: unknown, hook: string) => void,
  ) {}

  private each(hook: keyof ConnectionListener, call: (l: ConnectionListener) => void): void {
    for (const listener of this.all) {
      if (listener[hook] === undefined) continue;
      try {
        call(listener);
      } catch (err) {
        this.onError(err, hook);
      }
    }
  }

  opened(conn: Connection): void {
    this.each("opened", (l) => l.opened!(conn));
  }
  closed(conn: Connection, code: number): void {
    this.each("closed", (l) => l.closed!(conn, code));
  }
  subscribed(conn: Connection, channel: Channel): void {
    this.each("subscribed", (l) => l.subscribed!(conn, channel));
  }
  unsubscribed(conn: Connection, channel: Channel): void {
    this.each("unsubscribed", (l) => l.unsubscribed!(conn, channel));
  }
  denied(conn: Connection, channel: string, code: string): void {
    this.each("denied", (l) => l.denied!(conn, channel, code));
  }
  active(conn: Connection, now: number): void {
    this.each("active", (l) => l.active!(conn, now));
  }
  sweep(now: number): void {
    this.each("sweep", (l) => l.sweep!(now));
  }
}
