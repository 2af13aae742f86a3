import type { Channel } from "../channel.ts";
import type { Peer, PeerListener } from "../peer.ts";
import type { Publisher } from "../publisher.ts";

interface Typist {
  channel: Channel;
  user: string;
  /** The connection (client id) that typed last: its own events are not echoed to it. */
  client: string;
  lastPublishedAt: number;
  expiresAt: number;
}

/**
 * Typing indicators: ephemeral `typing` events on the room, never stored, not echoed to the
 * typing connection. At most one `typing:true` per user and room every `throttleMs`; a
 * `typing:false` goes out when `expireMs` pass without a repeat or when the typing connection closes.
 */
export class Typing implements PeerListener {
  private readonly typists = new Map<string, Typist>();

  constructor(
    private readonly publisher: Publisher,
    private readonly throttleMs = 2000,
    private readonly expireMs = 6000,
  ) {}

  update(peer: Peer, channel: Channel, typing: boolean, now: number): void {
    const key = `${channel.topic}\u0000${peer.user}`;
    const current = this.typists.get(key);
    if (!typing) {
      if (current) {
        current.client = peer.client;
        this.stop(key, current);
      }
      return;
    }
    if (current && now - current.lastPublishedAt < this.throttleMs) {
      current.expiresAt = now + this.expireMs;
      current.client = peer.client;
      return;
    }
    this.typists.set(key, { channel, user: peer.user, client: peer.client, lastPublishedAt: now, expiresAt: now + this.expireMs });
    this.publisher.publishEphemeral(channel, "typing", { room: channel.id, user: peer.user, typing: true }, peer.client);
  }

  sweep(now: number): void {
    for (const [key, typist] of this.typists) if (typist.expiresAt <= now) this.stop(key, typist);
  }

  closed(peer: Peer): void {
    for (const [key, typist] of this.typists) if (typist.client === peer.client) this.stop(key, typist);
  }

  private stop(key: string, typist: Typist): void {
    this.typists.delete(key);
    // Not echoed to the typing connection (a closed one is no longer subscribed: the hub skips nothing then).
    this.publisher.publishEphemeral(typist.channel, "typing", { room: typist.channel.id, user: typist.user, typing: false }, typist.client);
  }
}
