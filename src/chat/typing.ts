import type { Channel } from "../channel.ts";
import type { Publisher } from "../publisher.ts";
import type { Connection } from "../ws/connection.ts";
import type { ConnectionListener } from "../ws/hooks.ts";

interface Typist {
  channel: Channel;
  user: string;
  conn: Connection;
  lastPublishedAt: number;
  expiresAt: number;
}

/**
 * Typing indicators: ephemeral `typing` events on the room, never stored, not echoed to the
 * typing socket. At most one `typing:true` per user and room every `throttleMs`; a
 * `typing:false` goes out when `expireMs` pass without a repeat or when the typing socket closes.
 */
export class Typing implements ConnectionListener {
  private readonly typists = new Map<string, Typist>();

  constructor(
    private readonly publisher: Publisher,
    private readonly throttleMs = 2000,
    private readonly expireMs = 6000,
  ) {}

  update(conn: Connection, channel: Channel, typing: boolean, now: number): void {
    const key = `${channel.topic}\u0000${conn.user}`;
    const current = this.typists.get(key);
    if (!typing) {
      if (current) {
        current.conn = conn;
        this.stop(key, current);
      }
      return;
    }
    if (current && now - current.lastPublishedAt < this.throttleMs) {
      current.expiresAt = now + this.expireMs;
      current.conn = conn;
      return;
    }
    this.typists.set(key, { channel, user: conn.user, conn, lastPublishedAt: now, expiresAt: now + this.expireMs });
    this.publisher.publishEphemeral(channel, "typing", { room: channel.id, user: conn.user, typing: true }, conn.id);
  }

  sweep(now: number): void {
    for (const [key, typist] of this.typists) if (typist.expiresAt <= now) this.stop(key, typist);
  }

  closed(conn: Connection): void {
    for (const [key, typist] of this.typists) if (typist.conn === conn) this.stop(key, typist);
  }

  private stop(key: string, typist: Typist): void {
    this.typists.delete(key);
    // Not echoed to the typing socket; a closed one is no longer subscribed and needs no exclusion.
    const except = typist.conn.closing ? undefined : typist.conn.id;
    this.publisher.publishEphemeral(typist.channel, "typing", { room: typist.channel.id, user: typist.user, typing: false }, except);
  }
}
