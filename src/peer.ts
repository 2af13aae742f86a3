import type { Channel } from "./channel.ts";

/**
 * One connected client as the features see it: plain values, no socket. The WebSocket layer's
 * Connection has these fields itself (so passing one allocates nothing); a test or another
 * transport passes an object literal.
 */
export interface Peer {
  readonly tenant: string;
  readonly user: string;
  /** The connection's id (the `client` of `welcome`), unique on this node. */
  readonly client: string;
  /** The token's display name, if it has one. */
  readonly name?: string | undefined;
}

/**
 * How features (presence, typing, locks, notifications, audit, activity) learn about peers.
 * The WebSocket layer calls every registered listener in order; a listener must not throw (the
 * caller logs and carries on if one does) and must be cheap: `active` runs for every accepted frame.
 */
export interface PeerListener {
  /** The peer was accepted and its `welcome` sent. */
  opened?(peer: Peer): void;
  /**
   * The peer closed (any reason); its subscriptions are already gone. `topics` are those it held
   * at the close, its own user topic first.
   */
  closed?(peer: Peer, code: number, topics: readonly string[]): void;
  /** The peer subscribed to a channel it was not subscribed to yet. */
  subscribed?(peer: Peer, channel: Channel): void;
  /** The peer left a channel (by `unsubscribe`; a close reports `closed` only). */
  unsubscribed?(peer: Peer, channel: Channel): void;
  /** A subscribe was refused (for the audit log). */
  denied?(peer: Peer, channel: string, code: string): void;
  /** The peer sent a frame that the rate limiter accepted (`now`: Date.now()). */
  active?(peer: Peer, now: number): void;
  /** Called every sweep interval with Date.now() (typing expiry, idle presence, lock TTLs). */
  sweep?(now: number): void;
}
