import type { Server } from "bun";
import type { ConnectionCounts } from "../claims/connection-counts.ts";
import { randomBytes } from "node:crypto";
import { TokenError, tokenFromRequest, type Claims, type TokenVerifier } from "../auth/tokens.ts";
import { userChannel } from "../channel.ts";
import type { Limits } from "../config.ts";
import type { LocalHub } from "../hub/local-hub.ts";
import { Close, errorBody, SinalError, type ErrorCode } from "../errors.ts";
import { isRedisUnavailable } from "../redis/redis-client.ts";
import type { Logger } from "../log.ts";
import type { Metrics } from "../metrics.ts";
import type { Publisher } from "../publisher.ts";
import { Connection, type ConnectionEvents } from "./connection.ts";
import { isParseFailure, parseFrame } from "./frames.ts";
import { FrameHandlers, REPLIED, type ChannelAccess, type FeatureHandlers, type HandlerResult, type ReplyFields, type SubscribeExtra } from "./handlers.ts";
import { Listeners } from "./hooks.ts";
import type { PeerListener } from "../peer.ts";
import { isOriginAllowed } from "../http/origin.ts";
import { recordRejection, takeToken } from "./rate-limit.ts";
import { SlowLane, type LaneOwner } from "./slow-lane.ts";
import type { Namespaces } from "../namespaces.ts";

/** Distinct latest-value keys a slow client may be behind on before it counts as a slow consumer. */
const MAX_CONFLATED_KEYS = 1000;

export interface GatewayDeps {
  limits: Limits;
  /** Connections per user and tenant, admitted at the upgrade (shared by every node in a cluster). */
  counts: ConnectionCounts;
  /** The deployment's channel namespaces (parsing, grants, latest-value channels). */
  namespaces: Namespaces;
  allowedOrigins: string[] | null;
  pingIntervalMs: number;
  verifier: TokenVerifier;
  publisher: Publisher;
  /** This node's sockets and their topics. */
  hub: LocalHub;
  metrics: Metrics;
  logger: Logger;
  /** Frame handlers of the features (chat, presence, locks). */
  features?: FeatureHandlers;
  listeners?: readonly PeerListener[];
  subscribeExtras?: readonly SubscribeExtra[];
  /** Who may subscribe and publish (private rooms); the grant patterns alone when omitted. */
  access?: ChannelAccess;
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
        respond: {
          reply: (conn, id, fields) => this.reply(conn, id, fields),
          sendFrames: (conn, frames) => this.sendFrames(conn, frames),
          budget: (conn) => this.budget(conn),
          overflow: (conn) => this.closeSlow(conn, this.queuedBytes(conn), "frames held during a history read past SLOW_CONSUMER_BYTES"),
          replay: (conn, replay) => this.slowLane(conn).replay(replay),
        },
        verifier: deps.verifier,
        publisher: deps.publisher,
        hub: deps.hub,
        metrics: deps.metrics,
        namespaces: deps.namespaces,
        listeners: this.listeners,
        maxSubscriptions: deps.limits.maxSubscriptions,
        subscribeExtras: deps.subscribeExtras ?? [],
        access: deps.access,
      },
      deps.features ?? {},
    );
  }

  get size(): number {
    return this.connections.size;
  }

  /** Closes every connection of the user on this node (4001: it must come back with a new token); how many. */
  disconnectUser(tenant: string, user: string, reason: string): number {
    return this.closeWhere((conn) => conn.tenant === tenant && conn.user === user, Close.tokenExpired, reason);
  }

  /** Closes every open connection `matches` picks with `code`; how many. */
  private closeWhere(matches: (conn: Connection) => boolean, code: number, reason: string): number {
    let closed = 0;
    for (const conn of this.connections) {
      if (conn.closing || !matches(conn)) continue;
      this.closeWith(conn, code, reason);
      closed++;
    }
    return closed;
  }


  /** Open connections of one user on this node. */
  userConnections(tenant: string, user: string): number {
    return this.perUser.get(`${tenant}\u0000${user}`) ?? 0;
  }

  /**
   * Answers GET /ws: an HTTP error before the upgrade, or undefined once upgraded. A connection
   * past MAX_CONNECTIONS_PER_USER/_TENANT is still upgraded, then closed with 4010 naming the bound
   * (docs/protocol.md); one admitted is counted until its close.
   */
  async upgrade(request: Request, server: Server<unknown>): Promise<Response | undefined> {
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
    const { limits } = this.deps;
    try {
      conn.refusal = await this.deps.counts.admit(claims.tenant, claims.user, { perUser: limits.maxConnectionsPerUser, perTenant: limits.maxConnectionsPerTenant });
    } catch (err) {
      if (!isRedisUnavailable(err)) throw err;
      // A cluster's shared counts unreachable (Redis away): the bounds cannot be checked.
      this.deps.logger.warn({ err, code: "connection_count_failed" }, "a connection could not be counted; refused");
      return json(503, errorBody("unavailable", "the connection cannot be counted right now; try again"));
    }
    if (server.upgrade(request, { data: conn, headers })) return undefined;
    this.release(conn);
    return json(400, errorBody("bad_request", "expected a WebSocket upgrade request"));
  }

  /** Gives back a connection's admitted slot, once (at its close, or when its upgrade failed). */
  private release(conn: Connection): void {
    if (conn.refusal !== null) return;
    conn.refusal = "released";
    this.deps.counts.release(conn.tenant, conn.user).catch((err: unknown) => this.deps.logger.error({ err, code: "connection_release_failed" }, "releasing a connection's count failed"));
  }

  onOpen(conn: Connection): void {
    const { metrics } = this.deps;
    const tenantStats = metrics.tenant(conn.tenant);
    const userKey = `${conn.tenant}\u0000${conn.user}`;
    const userCount = this.perUser.get(userKey) ?? 0;
    if (this.draining) {
      conn.ws.close(Close.goingAway, "server is shutting down");
      return;
    }
    if (conn.refusal === "user" || conn.refusal === "tenant") {
      conn.ws.close(Close.tooManyConnections, `too many connections for this ${conn.refusal}`);
      return;
    }
    // Registered together: every registered connection runs onClose's cleanup, which forgets both.
    conn.registered = true;
    this.deps.hub.opened(conn.ws, conn.id);
    this.perUser.set(userKey, userCount + 1);
    tenantStats.connections++;
    this.connections.add(conn);
    const ownTopic = userChannel(conn.tenant, conn.user).topic;
    this.deps.hub.subscribe(conn.ws, ownTopic);
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
    this.release(conn);
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
    this.deps.hub.socketClosed(conn.ws, conn.id, conn.topics);
    conn.slow?.end(false);
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
    const frame = parseFrame(message, this.deps.limits.maxJsonDepth);
    if (!takeToken(conn, this.deps.limits, now)) {
      this.reject(conn, isParseFailure(frame) ? frame.id : frame.id, new SinalError("rate_limited", "too many frames; slow down"));
      if (recordRejection(conn, this.deps.limits, now)) this.closeWith(conn, Close.rateLimited, "rate limit exceeded");
      return;
    }
    // A keepalive `ping` is not activity: presence goes `away` for a user who only keeps its socket open.
    if (isParseFailure(frame) || frame.type !== "ping") this.listeners.active(conn, Date.now());
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

  /**
   * Called every sweep interval: closes expired connections and slow consumers (4009), moves a
   * client that falls behind into its SlowLane (conflation) and back out once it caught up.
   */
  sweep(nowMs: number): void {
    this.listeners.sweep(nowMs);
    const nowSec = nowMs / 1000;
    const { slowConsumerBytes, conflateBytes } = this.deps.limits;
    for (const conn of this.connections) {
      if (conn.closing) continue;
      if (conn.claims.expiresAt <= nowSec) {
        this.closeWith(conn, Close.tokenExpired, "token expired");
        continue;
      }
      const buffered = conn.ws.getBufferedAmount();
      const mustNotDrop = buffered > slowConsumerBytes && conn.topics.some((topic, i) => i > 0 && !this.isLatestValueTopic(topic));
      if (mustNotDrop || buffered >= this.dropLimit) {
        // A burst outran the sweep: past the bound for frames that must not be dropped, or at Bun's
        // own limit, where it skips the socket. The client reconnects and recovers from history.
        this.closeSlow(conn, buffered, "send buffer past SLOW_CONSUMER_BYTES");
      } else if (conn.slow !== null) {
        conn.slow.pump();
      } else if (buffered > conflateBytes) {
        this.slowLane(conn);
      }
    }
  }

  /**
   * Publications of `topic` were lost between nodes and could not be read back from history: its
   * subscribers on this node are closed (4011) and reconnect with `since`, so each learns whether
   * it missed anything (`recovered:false` with the reason) instead of skipping it silently.
   */
  closeSubscribers(topic: string): number {
    return this.closeWhere((conn) => conn.topics.includes(topic), Close.resync, "publications of a channel were lost between nodes; reconnect and recover");
  }


  /** A topic whose publications are all latest values (its namespace's `latest_value`): never a reason for 4009. */
  private isLatestValueTopic(topic: string): boolean {
    return this.deps.namespaces.ofTopic(topic)?.latestValue === true;
  }

  onDrain(conn: Connection): void {
    conn.slow?.pump();
  }

  /** Everything queued for one connection: Bun's send buffer and what waits in its lane. */
  private queuedBytes(conn: Connection): number {
    return conn.ws.getBufferedAmount() + (conn.slow?.bytes ?? 0);
  }

  /** What a connection may still have queued before SLOW_CONSUMER_BYTES (a replay must fit in it). */
  private budget(conn: Connection): number {
    return Math.max(0, this.deps.limits.slowConsumerBytes - this.queuedBytes(conn));
  }

  /** Frames after a reply (a replay): written at once when small, else at the client's pace in its lane. */
  private sendFrames(conn: Connection, frames: readonly string[]): void {
    let bytes = 0;
    for (const frame of frames) bytes += frame.length;
    if (conn.slow === null && bytes <= this.deps.limits.conflateBytes) {
      for (const frame of frames) this.sendText(conn, frame);
      return;
    }
    this.slowLane(conn).enqueue(frames);
  }

  private slowLane(conn: Connection): SlowLane {
    const { limits, hub, metrics } = this.deps;
    conn.slow ??= new SlowLane(conn, hub, metrics, this.laneOwner, (kind) => this.deps.namespaces.get(kind)?.latestValue === true, {
      writeBelowBytes: limits.conflateBytes,
      maxWaitingBytes: limits.slowConsumerBytes,
      maxKeys: MAX_CONFLATED_KEYS,
    });
    return conn.slow;
  }

  private readonly laneOwner: LaneOwner = {
    write: (conn, frame) => this.sendText(conn, frame),
    tooSlow: (conn) => {
      conn.slow = null;
      this.closeSlow(conn, conn.ws.getBufferedAmount(), "frames waiting past SLOW_CONSUMER_BYTES");
    },
    caughtUp: (conn) => {
      conn.slow = null;
    },
  };

  private closeSlow(conn: Connection, buffered: number, why: string): void {
    this.deps.logger.info({ client: conn.id, tenant: conn.tenant, user: conn.user, buffered, why }, "slow consumer closed (4009)");
    // Past Bun's own limit, publishes to this socket were skipped: at least one was lost.
    if (buffered > this.dropLimit) this.deps.metrics.dropped(conn.tenant);
    this.deps.metrics.slowConsumerClosed();
    this.closeWith(conn, Close.slowConsumer, "slow consumer");
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
    if (isRedisUnavailable(err)) return new SinalError("unavailable", "the cluster's Redis is not reachable; try again");
    this.deps.logger.error({ err }, "frame handler failed");
    return new SinalError("internal" satisfies ErrorCode, "internal error");
  }

  private send(conn: Connection, frame: object): void {
    this.sendText(conn, JSON.stringify(frame));
  }

  private sendText(conn: Connection, frame: string): void {
    if (conn.closing) return;
    // -1 only means the frame was queued (as soon as anything is buffered, measured on bun 1.4.5);
    // 0 means Bun dropped it (past backpressureLimit): the client missed a frame and must recover.
    if (conn.ws.send(frame) === 0) {
      this.deps.metrics.dropped(conn.tenant);
      this.closeSlow(conn, conn.ws.getBufferedAmount(), "frame dropped past Bun's backpressure limit");
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
