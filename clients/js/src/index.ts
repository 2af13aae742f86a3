/**
 * sinal client SDK: one WebSocket connection to a sinal server that reconnects, refreshes its
 * token, resubscribes with `since` and reports `recovered` / `gap` per channel. No dependencies;
 * runs in browsers, Bun and Node 22 (global WebSocket).
 */
export { SinalClient } from "./client.ts";
export type { SinalClientOptions, ConnectionState, CloseInfo, ClientEvents, PublishResult, LockResult } from "./client.ts";
export { Subscription } from "./subscription.ts";
export type { SubscriptionEvents, SubscriptionState, GapEvent, RecoveredEvent } from "./subscription.ts";
export { SinalError, CloseCode } from "./errors.ts";
export type { ClientErrorCode } from "./errors.ts";
export { Backoff } from "./backoff.ts";
export type { BackoffOptions } from "./backoff.ts";
export type { GetToken } from "./token-source.ts";
export type { Listener } from "./emitter.ts";
export type {
  Position,
  Welcome,
  Publication,
  GapReason,
  Reply,
  SubscribeReply,
  ChatMessage,
  MessagePage,
  PublishedBy,
  Lock,
  PresenceStatus,
  WebSocketLike,
  WebSocketConstructor,
} from "./types.ts";
