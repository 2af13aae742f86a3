import { cors } from "@elysiajs/cors";
import type { Server } from "bun";
import { Elysia } from "elysia";
import { ApiKeys } from "./auth/api-keys.ts";
import { createVerifier } from "./auth/tokens.ts";
import type { Broker } from "./broker/broker.ts";
import { MemoryBroker } from "./broker/memory-broker.ts";
import { MemoryConnectionCounts, type ConnectionCounts } from "./claims/connection-counts.ts";
import { MemoryKeyClaims, type KeyClaims } from "./claims/key-claims.ts";
import { parseChannel, tenantOfTopic } from "./channel.ts";
import { LocalHub } from "./hub/local-hub.ts";
import type { Config } from "./config.ts";
import { errorBody, SinalError } from "./errors.ts";
import { isOriginAllowed } from "./http/origin.ts";
import { opsRoutes } from "./http/ops-routes.ts";
import { publishRoutes } from "./http/publish-routes.ts";
import { RestAuth } from "./http/rest-auth.ts";
import { InFlight } from "./http/in-flight.ts";
import { BodyReader } from "./http/json-body.ts";
import { requestGuards } from "./http/request-guards.ts";
import type { Logger } from "./log.ts";
import { Metrics } from "./metrics.ts";
import { PublishService } from "./publish-service.ts";
import { Publisher } from "./publisher.ts";
import { ChannelHistory } from "./history/channel-history.ts";
import { Namespaces } from "./namespaces.ts";
import { MemoryHistory } from "./history/memory-history.ts";
import { DurableHistory } from "./history/durable-history.ts";
import { RedisHistory } from "./history/redis-history.ts";
import { initialEpoch } from "./history/history.ts";
import { RedisBroker } from "./broker/redis-broker.ts";
import { isRedisUnavailable } from "./redis/redis-client.ts";
import { RedisSnapshotMirror } from "./feeds/snapshot-mirror.ts";
import type { Cluster } from "./backends.ts";
import { LocalControl, RedisControl, type ClusterControl, type ControlMessage } from "./cluster/control.ts";
import type { Store } from "./store/store.ts";
import { Retention } from "./store/retention.ts";
import { Gateway } from "./ws/gateway.ts";
import { featureFrames } from "./ws/features.ts";
import { ChatService } from "./chat/chat-service.ts";
import { RoomAccess } from "./chat/room-access.ts";
import { RoomMembers } from "./chat/room-members.ts";
import { Typing } from "./chat/typing.ts";
import { chatRoutes } from "./http/chat-routes.ts";
import { presenceRoutes } from "./http/presence-routes.ts";
import { notificationRoutes } from "./http/notification-routes.ts";
import { NotificationService } from "./notifications/notification-service.ts";
import { LockService } from "./locks/lock-service.ts";
import { MemoryLocks } from "./locks/memory-locks.ts";
import type { Locks } from "./locks/locks.ts";
import { AuditLog } from "./audit/audit-log.ts";
import { auditRoutes } from "./http/audit-routes.ts";
import { PresenceService } from "./presence/presence-service.ts";
import { MemoryPresenceStore } from "./presence/memory-presence-store.ts";
import type { PresenceStore } from "./presence/presence-store.ts";
import { FeedService } from "./feeds/feed-service.ts";
import { Activity } from "./stats/activity.ts";
import { assetRoutes } from "./http/asset-routes.ts";
import { dashboardRoutes } from "./http/dashboard-routes.ts";
import { userRoutes } from "./http/user-routes.ts";

export interface AppDeps {
  config: Config;
  store: Store;
  logger: Logger;
  /** Defaults to the in-process broker (one node). createApp builds this node's LocalHub and attaches it. */
  broker?: Broker;
  /** Connections per user and tenant; defaults to this node's count (one node). */
  counts?: ConnectionCounts;
  /** Idempotency keys being published; defaults to this node's claims (one node). */
  claims?: KeyClaims;
  /** Presence members with their TTLs; defaults to this node's store (one node). */
  presence?: PresenceStore;
  /** Edit locks; defaults to this node's (one node). */
  locks?: Locks;
  /** Several nodes: the Redis connections (backends.ts); with it `broker` must be the RedisBroker. */
  cluster?: Cluster | null;
}

export type Sinal = ReturnType<typeof createApp>;

/** How long a channel's epoch and offset stay in Redis after its last publication (a cluster). */
const REDIS_META_TTL_MS = 7 * 86_400_000;
/** The most a server-side recovery of a gap between nodes reads at once. */
const RECOVERY_PAGE_BYTES = 1024 * 1024;

/**
 * Composes sinal from its parts. Never listens: main.ts (or a test) calls `app.listen`.
 * `stop()` drains: refuses new connections, closes clients with 1001, stops timers and the server.
 */
export function createApp(deps: AppDeps) {
  const { config, store, logger } = deps;
  const { limits } = config;
  const metrics = new Metrics(config.metricsTopTenants);
  const broker = deps.broker ?? new MemoryBroker();
  const { memoryMaxBytes, tenantMaxBytes } = config.history;
  const namespaces = new Namespaces(config.namespaces);
  const cluster = deps.cluster ?? null;
  // Every number this node reports (stats, dashboard, metrics) is its own, labelled with this id.
  const nodeId = cluster?.nodeId ?? crypto.randomUUID();
  metrics.nodeInfo(nodeId, cluster === null ? "single" : "cluster");
  const clusterBroker = cluster !== null && broker instanceof RedisBroker ? broker : null;
  if (cluster !== null && clusterBroker === null) throw new Error("a cluster needs the RedisBroker");
  // One node: non-durable channels keep their history in this process. A cluster: in Redis, shared.
  let memoryHistory: MemoryHistory | null = null;
  let redisHistory: RedisHistory | null = null;
  if (cluster !== null) {
    redisHistory = new RedisHistory(cluster.redis, cluster.keys, clusterBroker!, {
      maxTopicsPerTenant: limits.maxChannelsPerTenant,
      metaTtlMs: REDIS_META_TTL_MS,
      idempotencyTtlMs: config.idempotencyTtlSec * 1000,
      // The append script publishes to the other nodes itself: one round trip per publication.
      peers: clusterBroker!,
    });
  } else {
    const local = new MemoryHistory({ maxBytes: memoryMaxBytes, maxBytesPerTenant: tenantMaxBytes, maxTopics: limits.maxChannels, maxTopicsPerTenant: limits.maxChannelsPerTenant });
    metrics.countChannelsEvicted(() => local.evicted);
    memoryHistory = local;
  }
  const durableHistory = new DurableHistory(store.channelLog, config.commitIntervalMs, namespaces.get("room")!.history, limits.maxChannels, (err) => {
    metrics.backgroundFailed("history_trim");
    logger.error({ err, code: "history_trim_failed" }, "trimming room history failed; the next trim tries again");
  }, clusterBroker ?? undefined);
  const history = new ChannelHistory((memoryHistory ?? redisHistory)!, durableHistory, namespaces);
  const publisher = new Publisher(history, broker, metrics, limits.maxFrameBytes, logger);
  const activity = new Activity();
  publisher.observe((channel, event, reached) => activity.published(channel, event, reached));
  // Deliveries of publications from other nodes are counted where they land; this node's own
  // publications are counted by the Publisher (see Broker, "Counting").
  const hub = new LocalHub(broker, (topic, reached) => {
    const tenant = tenantOfTopic(topic);
    metrics.delivered(tenant, reached);
    activity.delivered(tenant, reached);
  });
  broker.attach(hub);
  if (clusterBroker !== null) {
    const channelOf = (topic: string) => parseChannel(tenantOfTopic(topic), topic.slice(topic.indexOf("/") + 1), namespaces);
    clusterBroker.recoverWith(
      async (topic, epoch, after, upTo) => history.page(channelOf(topic), epoch, after, upTo, RECOVERY_PAGE_BYTES),
      async (topic) => {
        const channel = channelOf(topic);
        if (!history.isDurable(channel)) return redisHistory!.shared(topic);
        return (await store.channelLog.position(topic)) ?? { epoch: initialEpoch(topic), offset: 0 };
      },
      (topic) => gateway.closeSubscribers(topic),
    );
  }
  const verifier = createVerifier(config.jwt);
  const apiKeys = new ApiKeys(store, config.envApiKeys);
  const inFlight = new InFlight(limits.maxRestConcurrentPerClient);
  const restAuth = new RestAuth(apiKeys, verifier, metrics, inFlight);
  const bodies = new BodyReader({ maxBytes: limits.maxBodyBytes, timeoutMs: limits.bodyTimeoutMs, maxDepth: limits.maxJsonDepth });
  const audit = new AuditLog(store.audit, logger);
  const publishService = new PublishService(publisher, store, limits.maxFrameBytes, audit, config.commitIntervalMs, namespaces, deps.claims ?? new MemoryKeyClaims());
  const typing = new Typing(publisher, config.chat.typingThrottleMs, config.chat.typingTimeoutMs);
  const roomMembers = new RoomMembers(store.chat);
  const roomAccess = new RoomAccess(roomMembers, namespaces);
  // Messages to every node: a user disconnected everywhere, a room whose members changed.
  const control: ClusterControl = cluster === null ? new LocalControl() : new RedisControl(cluster.redis, cluster.subscriber, cluster.keys, logger);
  const sendControl = (message: ControlMessage) =>
    control.send(message).catch((err: unknown) => logger.warn({ err, code: "control_send_failed" }, "a control message could not be sent to the other nodes"));
  const chat = new ChatService(store.chat, publisher, roomAccess, roomMembers, cluster === null ? undefined : (room) => void sendControl({ kind: "room_changed", tenant: room.tenant, room: room.topic }));
  // The gateway is made below; a message only arrives once the server runs.
  control.handle((message) => {
    if (message.kind === "disconnect") gateway.disconnectUser(message.tenant, message.user, "disconnected by the service");
    else if (message.kind === "room_changed" && message.room.startsWith(`${message.tenant}/`)) roomMembers.forget(message.room);
  });
  const presence = new PresenceService(deps.presence ?? new MemoryPresenceStore(), publisher, namespaces, config.presence);
  const locks = new LockService(deps.locks ?? new MemoryLocks(), publisher, config.locks.ttlMs, limits.maxLocksPerUser);
  const feeds = config.mongo
    ? new FeedService(config.mongo, {
        publisher,
        positions: store.feeds,
        registry: metrics.registry,
        logger: logger.child({ component: "feeds" }),
        // A cluster: one node watches each feed, the holder of its lease in Redis.
        ...(cluster === null
          ? {}
          : { leases: cluster.leases, nodeId: cluster.nodeId, leaseTtlMs: cluster.config.feedLeaseTtlMs, mirror: new RedisSnapshotMirror(cluster.redis, cluster.keys, logger) }),
      })
    : null;
  const counts = deps.counts ?? new MemoryConnectionCounts();
  // The gateway knows who is connected; notifications need that and the gateway needs them: late-bound.
  const notifications: NotificationService = new NotificationService(
    store.notifications,
    publisher,
    cluster === null ? (tenant, user) => gateway.userConnections(tenant, user) > 0 : async (tenant, user) => (await counts.count(tenant, user)).user > 0,
  );
  const gateway: Gateway = new Gateway({
    counts,
    namespaces,
    limits,
    allowedOrigins: config.allowedOrigins,
    pingIntervalMs: config.pingIntervalMs,
    verifier,
    publisher,
    hub,
    metrics,
    logger,
    features: featureFrames({ chat, typing, presence, locks }),
    // On close, a typist's typing:false goes out at once; its user_left, then its offline, after the
    // leave grace (presence keeps that order).
    listeners: [typing, locks, presence, notifications, audit, activity],
    subscribeExtras: feeds ? [presence.subscribeExtra(), feeds.subscribeExtra()] : [presence.subscribeExtra()],
    access: roomAccess,
  });
  let draining = false;
  const timers: Timer[] = [];

  const app = new Elysia({
    // Socket options only apply here, server-wide: Elysia type-checks the ones given per `.ws()` route but ignores them
    // (measured on elysia 1.4.30 with bun 1.4.5).
    websocket: {
      maxPayloadLength: limits.maxFrameBytes,
      idleTimeout: config.idleTimeoutSec,
      // Bun drops publishes past this; the sweep closes a socket at slowConsumerBytes, well before.
      backpressureLimit: Gateway.dropLimitFor(limits),
      closeOnBackpressureLimit: false,
      perMessageDeflate: false,
      sendPings: true,
      publishToSelf: false,
    },
    serve: {
      // Bun answers a body past this limit itself, with a bare 413 and no JSON (even a chunked one,
      // while the handler reads it). Out of reach, so BodyReader is the one limit: it streams the
      // body, stops at MAX_BODY_BYTES and answers the JSON 413.
      maxRequestBodySize: Number.MAX_SAFE_INTEGER,
      // The upgrade is a Bun route, not an Elysia one: it needs no request context, and 10,000
      // connects should not leave 10,000 of them behind as garbage.
      routes: { "/ws": (request: Request, server: Server<unknown>) => gateway.upgrade(request, server) },
    },
  })
    .use(
      cors({
        origin: (request: Request) => {
          const origin = request.headers.get("origin");
          return origin !== null && isOriginAllowed(origin, request, config.allowedOrigins);
        },
        allowedHeaders: ["authorization", "content-type"],
        methods: ["GET", "POST", "PUT", "DELETE", "OPTIONS"],
        // Bearer tokens, never cookies: no credentialed requests.
        credentials: false,
        // No Access-Control-Expose-Headers: every answer header a page reads is CORS-safelisted
        // (Content-Type). The plugin's default echoes the request's header names, `authorization`
        // among them; its types omit `false`, which is what leaves the header out (`[]` sends it empty).
        exposeHeaders: false as unknown as string[],
      }),
    )
    .use(requestGuards({ bodies, inFlight, allowedOrigins: config.allowedOrigins, metrics }))
    .onError(({ code, error, set }) => {
      set.headers["content-type"] = "application/json";
      if (error instanceof SinalError) {
        set.status = error.status;
        return { error: error.toJSON() };
      }
      if (code === "PARSE") {
        set.status = 400;
        return errorBody("bad_request", "body is not valid JSON");
      }
      if (code === "NOT_FOUND") {
        set.status = 404;
        return errorBody("not_found", "no such route");
      }
      if (code === "VALIDATION") {
        set.status = 400;
        return errorBody("bad_request", "request does not match the expected shape");
      }
      if (isRedisUnavailable(error)) {
        logger.warn({ err: error, code: "redis_unavailable" }, "request failed: Redis is not reachable");
        set.status = 503;
        return errorBody("unavailable", "the cluster's Redis is not reachable; try again");
      }
      logger.error({ err: error }, "request failed");
      set.status = 500;
      return errorBody("internal", "internal error");
    })
    .use(publishRoutes(restAuth, publishService, logger, bodies))
    .use(chatRoutes(restAuth, chat, roomAccess, bodies, limits.maxFrameBytes, namespaces))
    .use(presenceRoutes(restAuth, presence, namespaces))
    .use(userRoutes(restAuth, (tenant, user) => control.send({ kind: "disconnect", tenant, user })))
    .use(notificationRoutes(restAuth, notifications, store.notifications, audit, bodies, limits.maxFrameBytes, namespaces))
    .use(auditRoutes(restAuth, store.audit))
    .use(dashboardRoutes(restAuth, activity, metrics, nodeId))
    .use(assetRoutes())
    .use(opsRoutes({ nodeId, store, broker, hub, metrics, gateway, auth: restAuth, isDraining: () => draining, feedsDown: () => feeds?.notReady() ?? [] }))
    .onStart(({ server }) => {
      hub.attach(server!);
      // In the background: MongoDB being down never blocks start-up (/ready names the feed).
      feeds?.start();
      timers.push(setInterval(() => gateway.sweep(Date.now()), config.sweepIntervalMs));
      timers.push(setInterval(() => metrics.sample(Date.now()), 1000));
      const pruneIdempotency = () =>
        store.pruneIdempotency(Date.now() - config.idempotencyTtlSec * 1000).catch((err) => logger.error({ err }, "idempotency prune failed"));
      timers.push(setInterval(pruneIdempotency, 3_600_000));
      timers.push(setInterval(() => void audit.flush(), 200));
      const pruneAudit = () =>
        store.audit.prune(Date.now() - config.audit.retentionDays * 86_400_000).catch((err) => logger.error({ err }, "audit prune failed"));
      timers.push(setInterval(pruneAudit, 3_600_000));
      timers.push(...new Retention(store, config.retention, logger, publisher).start(() => draining));
      timers.push(setInterval(() => history.trim(Date.now()), 10_000));
      // prevents the timers from keeping a stopping process alive
      for (const timer of timers) timer.unref();
    });

  async function stop(): Promise<void> {
    if (draining) return;
    draining = true;
    for (const timer of timers) clearInterval(timer);
    // First: no feed publication during the drain, and each feed's position is saved.
    await feeds?.stop();
    const server = app.server;
    // Half the drain budget for clients to see their 1001; a quarter for REST requests in flight
    // to be answered (Bun's graceful stop waits for them; an answered publication's idempotency
    // key is stored before its answer); the rest for the store.
    await gateway.shutdown(config.shutdownTimeoutMs / 2);
    if (server) {
      let timer: Timer | undefined;
      const deadline = new Promise<void>((resolve) => (timer = setTimeout(resolve, config.shutdownTimeoutMs / 4)));
      await Promise.race([server.stop(false), deadline]);
      clearTimeout(timer);
      await server.stop(true);
    }
    await broker.close();
    await publishService.close();
    await history.close();
    await audit.flush();
  }

  return { app, apiKeys, publisher, gateway, hub, metrics, audit, feeds, stop };
}
