import type { Server } from "bun";
import { randomBytes } from "node:crypto";
import { TokenError, tokenFromRequest, type Claims, type TokenVerifier } from "../auth/tokens.ts";
import type { Broker } from "../broker/broker.ts";
import { userChannel } from "../channel.ts";
import type { Limits } from "../config.ts";
import { Close, errorBody, SinalError, type ErrorCode } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { Metrics } from "../metrics.ts";
import type { Publisher } from "../publisher.ts";
import { Connection, type ConnectionEvents } from "./connection.ts";
import { isParseFailure, parseFrame } from "./frames.ts";
import { FrameHandlers, REPLIED, type FeatureHandlers, type HandlerResult, type ReplyFields, type SubscribeExtra } from "./handlers.ts";
import { Listeners, type ConnectionListener } from "./hooks.ts";
import { isOriginAllowed } from "../http/origin.ts";
import { recordRejection, takeToken } from "./rate-limit.ts";

export interface GatewayDeps {
  limits: Limits;
  allowedOrigins: string[] | null;
  pingIntervalMs: number;
  verifier: TokenVerifier;
  publisher: Publisher;
  broker: Broker;
  metrics: Metrics;
  logger: Logger;
  /** Frame handlers of the features (chat, presence, locks). */
  features?: FeatureHandlers;
  listeners?: readonly ConnectionListener[];
  subscribeExtras?: readonly SubscribeExtra[];
}

const SUBPROTOCOL = "sinal.v1";

/**
 * The WebSocket edge: authenticates upgrades, owns the open connections, enforces the limits,
 * and routes frames to FrameHandlers. Close codes come from errors.ts `Close`.
 */
export class Gateway implements ConnectionEvents {
  private readonly connections = new Set<Connection>();
  private readonly perUser = new Map<string, number>();
  private readonly handlers: FrameHandlers;
  private readonly listeners: Listeners;
  private draining = false;
  private onEmpty: (() => void) | null = null;

  /** Bun's backpressureLimit: past it, Bun skips the socket when publishing (see app.ts). */
  static dropLimitFor(limits: Limits): number {
    return Math.max(limits.slowConsumerBytes * 4, 4 * 1024 * 1024);
  }
  private readonly dropLimit: number;

  constructor(private readonly deps: GatewayDeps) {
    this.dropLimit = Gateway.dropLimitFor(deps.limits);
    this.listeners = new Listeners(deps.listeners ?? [], (err, hook) => deps.logger.error({ err, hook }, "connection listener failed"));
    this.handlers = new FrameHandlers(
      {
        respond: { reply: (conn, id, fields) => this.reply(conn, id, fields), sendFrame: (conn, frame) => this.sendText(conn, frame) },
        verifier: deps.verifier,
        publisher: deps.publisher,
        broker: deps.broker,
        metrics: deps.metrics,
        listeners: this.listeners,
        maxSubscriptions: deps.limits.maxSubscriptions,
        subscribeExtras: deps.subscribeExtras ?? [],
      },
      deps.features ?? {},
    );
  }

  get size(): number {
    return this.connections.size;
  }

  /** Open connections of one user on this node. */
  userConnections(tenant: string, user: string): number {
    return this.perUser.get(`${tenant}\u0000${user}`) ?? 0;
  }

  /** Answers GET /ws: an HTTP error before the upgrade, or undefined once upgraded. */
  upgrade(request: Request, server: Server<unknown>): Response | undefined {
    if (this.draining) return json(503, errorBody("unavailable", "server is shutting down"));
    const url = new URL(request.url);
    const origin = request.headers.get("origin");
    if (origin !== null && !isOriginAllowed(origin, request, this.deps.allowedOrigins)) {
      this.deps.metrics.authFailed("origin");
      return json(403, errorBody("forbidden", `origin ${origin} is not allowed`));
    }
    const offered = (request.headers.get("sec-websocket-protocol") ?? "").split(",").map((p) => p.trim());
    const token = tokenFromRequest(request, url);
    if (token === null || token === "") {
      this.deps.metrics.authFailed("missing");
      return json(401, errorBody("unauthorized", "a token is required (Authorization header, bearer.<jwt> subprotocol or ?token=)"));
    }
    let claims: Claims;
    try {
      claims = this.deps.verifier.verify(token);
    } catch (err) {
      if (!(err instanceof TokenError)) throw err;
      this.deps.metrics.authFailed(err.reason);
      return json(401, errorBody("unauthorized", err.message));
    }
    const headers: Record<string, string> = {};
    if (offered.includes(SUBPROTOCOL)) {
      headers["Sec-WebSocket-Protocol"] = SUBPROTOCOL;
    } else if (offered.some((p) => p.startsWith("bearer."))) {
      // Bun would echo the first offered entry, the token itself; a client offering only the bearer entry gets a clear refusal.
      return json(400, errorBody("bad_request", `offer "${SUBPROTOCOL}" together with the bearer.<jwt> subprotocol`));
    }
    const conn = new Connection(randomBytes(9).toString("base64url"), claims, this, this.deps.limits.rateBurst, performance.now());
    if (server.upgrade(request, { data: conn, headers })) return undefined;
    return json(400, errorBody("bad_request", "expected a WebSocket upgrade request"));
  }

  onOpen(conn: Connection): void {
    const { limits, metrics } = this.deps;
    const tenantStats = metrics.tenant(conn.tenant);
    const userKey = `${conn.tenant}\u0000${conn.user}`;
    const userCount = this.perUser.get(userKey) ?? 0;
    if (this.draining) {
      conn.ws.close(Close.goingAway, "server is shutting down");
      return;
    }
    if (userCount >= limits.maxConnectionsPerUser || tenantStats.connections >= limits.maxConnectionsPerTenant) {
      const which = userCount >= limits.maxConnectionsPerUser ? "user" : "tenant";
      conn.ws.close(Close.tooManyConnections, `too many connections for this ${which}`);
      return;
    }
    conn.registered = true;
    this.perUser.set(userKey, userCount + 1);
    tenantStats.connections++;
    this.connections.add(conn);
    const ownTopic = userChannel(conn.tenant, conn.user).topic;
    this.deps.broker.subscribe(conn.ws, ownTopic);
    conn.topics.push(ownTopic);
    this.send(conn, {
      type: "welcome",
      client: conn.id,
      user: conn.user,
      tenant: conn.tenant,
      ping_interval_ms: this.deps.pingIntervalMs,
      expires_at: conn.claims.expiresAt,
    });
    this.deps.logger.debug({ client: conn.id, tenant: conn.tenant, user: conn.user }, "connected");
    this.listeners.opened(conn);
  }

  onClose(conn: Connection, code: number, reason: string): void {
    conn.closing = true;
    if (!conn.registered) return;
    conn.registered = false;
    this.connections.delete(conn);
    const userKey = `${conn.tenant}\u0000${conn.user}`;
    const left = (this.perUser.get(userKey) ?? 1) - 1;
    if (left <= 0) this.perUser.delete(userKey);
    else this.perUser.set(userKey, left);
    const stats = this.deps.metrics.tenant(conn.tenant);
    stats.connections--;
    stats.subscriptions -= conn.subscriptions;
    this.deps.broker.socketClosed(conn.ws, conn.topics);
    this.listeners.closed(conn, code);
    this.deps.logger.debug({ client: conn.id, tenant: conn.tenant, user: conn.user, code, reason }, "disconnected");
    if (this.connections.size === 0) this.onEmpty?.();
  }

  onMessage(conn: Connection, message: string | Buffer): void {
    if (conn.closing) return;
    if (typeof message !== "string") {
      this.deps.metrics.rejected("binary");
      this.closeWith(conn, Close.policy, "binary frames are not accepted");
      return;
    }
    const now = performance.now();
    const frame = parseFrame(message);
    if (!takeToken(conn, this.deps.limits, now)) {
      this.reject(conn, isParseFailure(frame) ? frame.id : frame.id, new SinalError("rate_limited", "too many frames; slow down"));
      if (recordRejection(conn, this.deps.limits, now)) this.closeWith(conn, Close.rateLimited, "rate limit exceeded");
      return;
    }
    this.listeners.active(conn, Date.now());
    if (isParseFailure(frame)) {
      this.reject(conn, frame.id, frame.error);
      return;
    }
    if (frame.type === "ping" && frame.id === undefined) {
      this.send(conn, { type: "pong" });
      return;
    }
    let result: HandlerResult | Promise<HandlerResult>;
    try {
      result = this.handlers.handle(conn, frame);
    } catch (err) {
      this.reject(conn, frame.id, this.asClientError(err));
      return;
    }
    if (result instanceof Promise) {
      result.then(
        (fields) => this.reply(conn, frame.id, fields),
        (err) => this.reject(conn, frame.id, this.asClientError(err)),
      );
    } else {
      this.reply(conn, frame.id, result);
    }
  }

  /** Closes expired and slow connections; called every sweep interval. */
  sweep(nowMs: number): void {
    this.listeners.sweep(nowMs);
    const nowSec = nowMs / 1000;
    const bound = this.deps.limits.slowConsumerBytes;
    for (const conn of this.connections) {
      if (conn.closing) continue;
      if (conn.claims.expiresAt <= nowSec) {
        this.closeWith(conn, Close.tokenExpired, "token expired");
      } else if (conn.ws.getBufferedAmount() > bound) {
        // Past Bun's own limit, publishes to this socket were skipped: at least one was lost.
        if (conn.ws.getBufferedAmount() > this.dropLimit) this.deps.metrics.dropped(conn.tenant);
        this.deps.metrics.slowConsumerClosed();
        this.closeWith(conn, Close.slowConsumer, "slow consumer");
      }
    }
  }

  /**
   * Refuses new upgrades, closes every connection with 1001 and resolves once all have closed
   * (so the close frames are on the wire before the server stops) or after `timeoutMs`.
   */
  async shutdown(timeoutMs: number): Promise<void> {
    this.draining = true;
    if (this.connections.size === 0) return;
    const allClosed = new Promise<void>((resolve) => (this.onEmpty = resolve));
    for (const conn of this.connections) this.closeWith(conn, Close.goingAway, "server shutting down");
    let timer: Timer | undefined;
    const deadline = new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)));
    await Promise.race([allClosed, deadline]);
    clearTimeout(timer);
  }

  private reply(conn: Connection, id: number | string | undefined, fields: HandlerResult): void {
    if (id === undefined || fields === REPLIED) return;
    this.send(conn, { type: "reply", id, ok: true, ...fields });
  }

  private reject(conn: Connection, id: number | string | undefined, error: SinalError): void {
    this.deps.metrics.rejected(error.code);
    const body = error.toJSON();
    this.send(conn, id === undefined ? { type: "error", error: body } : { type: "reply", id, ok: false, error: body });
  }

  private asClientError(err: unknown): SinalError {
    if (err instanceof SinalError) return err;
    this.deps.logger.error({ err }, "frame handler failed");
    return new SinalError("internal" satisfies ErrorCode, "internal error");
  }

  private send(conn: Connection, frame: object): void {
    this.sendText(conn, JSON.stringify(frame));
  }

  private sendText(conn: Connection, frame: string): void {
    if (conn.closing) return;
    const result = conn.ws.send(frame);
    // 0: Bun dropped the frame; -1: queued past the backpressure limit. Either way the client is too slow.
    if (result <= 0) {
      if (result === 0) this.deps.metrics.dropped(conn.tenant);
      this.deps.metrics.slowConsumerClosed();
      this.closeWith(conn, Close.slowConsumer, "slow consumer");
    }
  }

  private closeWith(conn: Connection, code: number, reason: string): void {
    if (conn.closing) return;
    conn.closing = true;
    conn.ws.close(code, reason);
  }
}

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
}
