import type { Channel } from "../channel.ts";
import type { PeerListener } from "../peer.ts";
import type { Connection } from "./connection.ts";

/**
 * Fans a call out to every listener that implements it. The listener interface lives in peer.ts
 * (features learn of peers, not of sockets); a Connection is a Peer, so it is what they receive.
 */
export class Listeners {
  constructor(
    private readonly all: readonly PeerListener[],
    private readonly onError: (err: unknown, hook: string) => void,
  ) {}

  private each(hook: keyof PeerListener, call: (l: PeerListener) => void): void {
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
    this.each("closed", (l) => l.closed!(conn, code, conn.topics));
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
