/**
 * Wire shapes of the sinal v1 contract (docs/protocol.md) as the client sees them, and the options of
 * the client. Wire objects keep the contract's snake_case field names; objects the SDK makes
 * itself (events such as `gap`) use camelCase.
 */

/** A channel's position: its history `epoch` and the last `offset` seen in it. */
export interface Position {
  epoch: string;
  offset: number;
}

/** The first frame after the upgrade. `expires_at` is the token's expiry in unix seconds. */
export interface Welcome {
  type: "welcome";
  client: string;
  user: string;
  tenant: string;
  ping_interval_ms: number;
  expires_at: number;
}

/** The client that published (a `publish` frame): its user, connection id and the token's `name`. */
export interface PublishedBy {
  user: string;
  /** The publisher's connection id (the `client` of its welcome). */
  client: string;
  name?: string;
}

/**
 * One event on one channel. Kept publications carry `offset` and `epoch`; ephemeral ones
 * (`typing`, `presence` changes) carry neither. `conflated` is set when the server replaced
 * queued updates for a slow client on purpose: that many offsets were skipped without a gap.
 */
export interface Publication<T = unknown> {
  channel: string;
  event: string;
  data: T;
  /** Set when a client published it with `publish`; absent for the server's own events and backend publications. */
  from?: PublishedBy;
  offset?: number;
  epoch?: string;
  /** Server time of the publication, unix milliseconds. */
  ts?: number;
  conflated?: number;
}

/** Why the server could not replay what a client missed (the app must reload its state). */
export type GapReason = "epoch_changed" | "trimmed" | "no_history" | "ahead" | (string & {});

/** A successful reply: `ok:true` and the flat result fields. */
export interface Reply {
  type: "reply";
  id: number | string;
  ok: true;
  [field: string]: unknown;
}

/** The reply to `subscribe`, with extra fields some channels add (`presence`, `snapshot`). */
export interface SubscribeReply extends Reply {
  channel: string;
  epoch: string;
  offset: number;
  recovered: boolean;
  /** Set when `recovered` is false after a `since`. */
  reason?: GapReason;
  /** Oldest offset the server still keeps, when it says so. */
  history_from?: number;
}

/** A stored chat message (`new_message` data, `message` reply). */
export interface ChatMessage {
  id: number;
  room: string;
  sender: string;
  content: string;
  created_at: string | number;
  client_msg_id?: string;
}

/** A page of a room's messages, newest first; `next_before` is the `before` of the next (older) page, null at the oldest. */
export interface MessagePage {
  messages: ChatMessage[];
  next_before: number | null;
}

/** An edit lock (`lock` reply, `lock`/`unlock` data, the `locked` error's context). */
export interface Lock {
  resource: string;
  user: string;
  since: string | number;
  expires_at?: string | number;
}

/** A status a client may choose; `offline` is only ever reported by the server. */
export type PresenceStatus = "online" | "away" | "busy";

/**
 * The part of the standard WebSocket API the client uses. Browsers, Bun and Node 22 provide it
 * as the global `WebSocket`; tests inject a fake.
 */
export interface WebSocketLike {
  readonly readyState: number;
  // Handlers take `any`: each runtime types its own event classes, all with `data` / `code` / `reason`.
  onopen: ((event: any) => unknown) | null;
  onmessage: ((event: any) => unknown) | null;
  onclose: ((event: any) => unknown) | null;
  onerror: ((event: any) => unknown) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

/** `new WebSocket(url, protocols)`. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;
