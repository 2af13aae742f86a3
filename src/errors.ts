/**
 * Stable error codes and WebSocket close codes: the single table clients code against
 * (docs/protocol.md "Error codes" and "Close codes"). Handlers refer to these names, never to literal numbers.
 */

export type ErrorCode =
  | "bad_request"
  | "unknown_type"
  | "unknown_channel"
  | "unauthorized"
  | "forbidden"
  | "rate_limited"
  | "too_many_subscriptions"
  | "payload_too_large"
  | "request_timeout"
  | "quota_exceeded"
  | "not_found"
  | "conflict"
  | "locked"
  | "unavailable"
  | "internal";

const statusOf: Record<ErrorCode, number> = {
  bad_request: 400,
  unknown_type: 400,
  unknown_channel: 400,
  unauthorized: 401,
  forbidden: 403,
  rate_limited: 429,
  too_many_subscriptions: 429,
  payload_too_large: 413,
  request_timeout: 408,
  quota_exceeded: 429,
  not_found: 404,
  conflict: 409,
  locked: 409,
  unavailable: 503,
  internal: 500,
};

/** An error a client may see: a stable code, a human message and the HTTP status that fits it. */
export class SinalError extends Error {
  readonly status: number;
  constructor(
    readonly code: ErrorCode,
    message: string,
    /** Machine-readable context sent beside code and message (e.g. the holder of a lock). */
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.name = "SinalError";
    this.status = statusOf[code];
  }

  toJSON(): { code: ErrorCode; message: string } & Record<string, unknown> {
    return { code: this.code, message: this.message, ...this.details };
  }
}

/** The body of every REST error answer. */
export function errorBody(code: ErrorCode, message: string): { error: { code: ErrorCode; message: string } } {
  return { error: { code, message } };
}

/** Close codes with their reconnect meaning for clients. */
export const Close = {
  /** Server going away (shutdown or drain): reconnect, possibly elsewhere. */
  goingAway: 1001,
  /** Binary frame or another policy violation: fix the client, do not retry blindly. */
  policy: 1008,
  /** Frame larger than the configured limit. */
  tooLarge: 1009,
  /** Token missing, invalid or expired: reconnect with a new token. */
  tokenExpired: 4001,
  /** Forbidden. */
  forbidden: 4003,
  /** Rate limit exceeded for too long: back off before reconnecting. */
  rateLimited: 4008,
  /** Send buffer past its bound: reconnect and recover with `since`. */
  slowConsumer: 4009,
  /** Too many connections for this user or tenant. */
  tooManyConnections: 4010,
  /** Publications of a subscribed channel were lost between nodes (a cluster): reconnect and recover with `since`. */
  resync: 4011,
} as const;
