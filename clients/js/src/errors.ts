/**
 * Errors the client hands to the app, and the close codes with their reconnect meaning
 * (docs/protocol.md "Close codes"), in one table.
 */

/**
 * Codes made by the client itself, beside the server's (`forbidden`, `locked`, `rate_limited`, ...):
 * - `timeout`: no reply within the request timeout;
 * - `disconnected`: the socket closed before the reply came (the request may or may not have been applied);
 * - `closed`: the client was closed (`close()`, or a 4003 close) and sends nothing more;
 * - `token`: `getToken` failed or returned something that is not a token;
 * - `network`: an HTTP call (`roomMessages`, `unread`) got no answer from the server.
 */
export type ClientErrorCode = "timeout" | "disconnected" | "closed" | "token" | "network";

/**
 * An error with a stable `code`: a server error reply (`ok:false`), an `error` frame, or one of
 * the client's own {@link ClientErrorCode}s. `details` holds the context the server sent beside
 * code and message (for `locked`: `{ lock }`).
 *
 * @example
 * try {
 *   await client.lock("customer:77");
 * } catch (err) {
 *   if (err instanceof SinalError && err.code === "locked") console.log("held by", err.details.lock);
 * }
 */
export class SinalError extends Error {
  constructor(
    readonly code: ClientErrorCode | (string & {}),
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = "SinalError";
  }
}

/**
 * Close codes the client acts on. Every close reconnects with backoff except `forbidden`, and
 * `unauthorized` when there is no `getToken` to get a new token from.
 *
 * @example
 * client.on("close", ({ code }) => {
 *   if (code === CloseCode.forbidden) showSignIn();
 * });
 */
export const CloseCode = {
  /** Closed by the client (`close()`). */
  normal: 1000,
  /** The server is going away (restart, deploy): reconnect, elsewhere if there is an elsewhere. */
  goingAway: 1001,
  /** The connection dropped without a close frame (network, refused upgrade). */
  abnormal: 1006,
  /** Binary frame or other policy violation. */
  policy: 1008,
  /** A frame was too large. */
  tooLarge: 1009,
  /** Closed by the client: no `welcome` within `connectTimeoutMs`, or no ping reply within `pongTimeoutMs`. */
  timeout: 4000,
  /** Token missing, invalid or expired: reconnect with a new token. */
  unauthorized: 4001,
  /** Forbidden: never reconnect. */
  forbidden: 4003,
  /** Too many rejected frames. */
  rateLimited: 4008,
  /** The client read too slowly: reconnect and recover. */
  slowConsumer: 4009,
  /** Too many connections for this user or tenant. */
  tooManyConnections: 4010,
  /** Publications were lost between the nodes of a cluster: reconnect and recover. */
  resync: 4011,
} as const;
