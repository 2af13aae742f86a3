import { isIP } from "node:net";
import { dirname, resolve } from "node:path";
import { parseMongoConfig, type MongoConfig } from "./feeds/feed-config.ts";
import { NamespaceError, Namespaces, parseNamespaces, type Namespace } from "./namespaces.ts";

/**
 * Configuration from the environment (docs/configuration.md; docs/protocol.md "Running"), validated once at start-up.
 * A bad value throws a ConfigError naming the variable; main.ts prints it and exits 1.
 */

export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(`${variable}: ${message}`);
    this.name = "ConfigError";
  }
}

export interface Limits {
  /** Largest accepted client frame in bytes; larger frames close the socket with 1009. */
  maxFrameBytes: number;
  /** Token bucket refill rate, frames per second per connection. */
  ratePerSec: number;
  /** Token bucket size (burst). */
  rateBurst: number;
  /** Rejected (rate limited) frames within `rejectWindowMs` that close the connection with 4008. */
  maxRejected: number;
  rejectWindowMs: number;
  maxSubscriptions: number;
  maxConnectionsPerUser: number;
  maxConnectionsPerTenant: number;
  /** Bytes queued for one socket past which it is closed as a slow consumer (4009). */
  slowConsumerBytes: number;
  /** Bytes queued past which a socket's typing, presence and feed updates are conflated (ws/slow-lane.ts). */
  conflateBytes: number;
  /** Largest REST request body in bytes. */
  maxBodyBytes: number;
  /** A REST body must arrive within this time, or the request ends with 408. */
  bodyTimeoutMs: number;
  /** REST requests one credential may have in flight at once; past it 429. */
  maxRestConcurrentPerClient: number;
  /** Deepest nesting of arrays and objects accepted in any JSON (REST bodies, WebSocket frames). */
  maxJsonDepth: number;
  /** Channels with in-memory state (history, position) on this node, all tenants together. */
  maxChannels: number;
  /** The same, per tenant. */
  maxChannelsPerTenant: number;
  /** Edit locks one user may hold at once. */
  maxLocksPerUser: number;
}

export interface Config {
  port: number;
  host: string;
  /**
   * HS256 secret, or a PEM public key (RS256/ES256); `dev` when neither is set: the secret is kept
   * in `secretFile` beside the sqlite file (null for `sqlite::memory:`), read or made by
   * auth/dev-secret.ts when a command needs it.
   */
  jwt: { kind: "secret"; secret: string } | { kind: "public-key"; pem: string } | { kind: "dev"; secretFile: string | null };
  /**
   * `synchronous`: FULL (default) fsyncs every commit, so an acknowledged message survives a power
   * loss; NORMAL survives a process crash only and commits faster.
   */
  database:
    | { kind: "sqlite"; path: string; synchronous: "full" | "normal" }
    /** PostgreSQL (src/store/pg-store.ts), for several nodes sharing one database. */
    | { kind: "postgres"; url: string; poolSize: number; statementTimeoutMs: number };
  /** Keys from SINAL_API_KEYS, accepted besides stored ones. */
  envApiKeys: { tenant: string; key: string }[];
  /** null: same-origin only; ["*"]: any origin; else the exact origins allowed. */
  allowedOrigins: string[] | null;
  logLevel: string;
  pingIntervalMs: number;
  idleTimeoutSec: number;
  idempotencyTtlSec: number;
  /** How often connections are checked for expired tokens and slow consumption. */
  sweepIntervalMs: number;
  metricsTopTenants: number;
  shutdownTimeoutMs: number;
  limits: Limits;
  chat: {
    /** At most one `typing:true` per user and room in this window. */
    typingThrottleMs: number;
    /** A typist without a repeat for this long gets `typing:false`. */
    typingTimeoutMs: number;
  };
  /** Least time between two group commits under load (chat messages, idempotency keys); 0: every turn. */
  commitIntervalMs: number;
  presence: {
    /** A user with no frame on any connection for this long is `away`. */
    awayAfterMs: number;
    /**
     * How long a user stays a member of its tenant, or of a channel, after its last connection
     * left it; a return within it announces nothing (src/presence/presence.ts). 0: leave at once.
     */
    leaveGraceMs: number;
    /**
     * How long a live connection's presence entries last unless its node refreshes them: a node
     * that dies has its members gone within this (PRESENCE_MEMBER_TTL_MS).
     */
    memberTtlMs: number;
    /** How often a node refreshes its live connections' entries (PRESENCE_REFRESH_MS). */
    refreshEveryMs: number;
  };
  locks: { ttlMs: number };
  audit: { retentionDays: number };
  /**
   * Whole days chat messages and notifications are kept, pruned hourly (store/retention.ts);
   * null: kept for good (MESSAGE_RETENTION_DAYS / NOTIFICATION_RETENTION_DAYS unset or empty).
   */
  retention: { messageDays: number | null; notificationDays: number | null };
  /**
   * What each kind of channel keeps for recovery (`HISTORY_<KIND>=<size>,<age>` or `off`), and
   * the bound on all in-memory history together. Rooms keep theirs in the store.
   */
  history: { memoryMaxBytes: number; tenantMaxBytes: number };
  /**
   * Channel namespaces: the built-ins (their history from HISTORY_<NAME>) and those of
   * SINAL_NAMESPACES / SINAL_NAMESPACES_FILE (src/namespaces.ts).
   */
  namespaces: Namespace[];
  /** MongoDB change-stream feeds (src/feeds/); null when MONGODB_URI is unset. */
  mongo: MongoConfig | null;
  /**
   * Several nodes (REDIS_URL): fan-out, history of non-durable channels, presence, locks,
   * idempotency claims and connection counts shared through Redis (src/redis/); null: one node.
   */
  redis: RedisConfig | null;
}

export interface RedisConfig {
  url: string;
  /** Key prefix (REDIS_PREFIX): several deployments can share one Redis. */
  prefix: string;
  /** A Redis command not answered within this fails (REDIS_COMMAND_TIMEOUT_MS). */
  commandTimeoutMs: number;
  /** How long a publication ahead of a missing one waits for it before the gap is read from history. */
  reorderWindowMs: number;
  /** How often each served channel's position is compared with the shared one. */
  positionCheckMs: number;
  /** How long a feed's lease lasts unless renewed (FEED_LEASE_TTL_MS): a dead leader's feeds move on within about 1.25 times this. */
  feedLeaseTtlMs: number;
}

export const TENANT_RE = /^[a-z0-9][a-z0-9_-]{0,63}$/;

type Env = Record<string, string | undefined>;

function int(env: Env, name: string, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  if (!/^\d+$/.test(raw.trim())) throw new ConfigError(name, `expected a whole number, got "${raw}"`);
  const value = Number(raw.trim());
  if (value < min || value > max) throw new ConfigError(name, `expected a number from ${min} to ${max}, got ${value}`);
  return value;
}

/** `int` for a feature that is off unless set: null when the variable is unset or empty. */
function optionalInt(env: Env, name: string, min: number, max: number): number | null {
  const raw = env[name];
  if (raw === undefined || raw === "") return null;
  return int(env, name, min, min, max);
}

/**
 * Room history older than the messages would let recovery replay `new_message` publications of
 * messages already pruned from the store: refused.
 */
function parseMessageRetention(env: Env, namespaces: Namespace[]): number | null {
  const days = optionalInt(env, "MESSAGE_RETENTION_DAYS", 1, 3650);
  const roomHistoryMs = namespaces.find((ns) => ns.name === "room")?.history.ttlMs ?? 0;
  if (days !== null && roomHistoryMs > days * 86_400_000) {
    throw new ConfigError(
      "MESSAGE_RETENTION_DAYS",
      `${days} day(s) is shorter than the age room history keeps (${roomHistoryMs / 3_600_000} h, HISTORY_ROOM or the room namespace's history): recovery would replay pruned messages`,
    );
  }
  return days;
}

function parsePresence(env: Env): Config["presence"] {
  const memberTtlMs = int(env, "PRESENCE_MEMBER_TTL_MS", 60_000, 1000, 3_600_000);
  const refreshEveryMs = int(env, "PRESENCE_REFRESH_MS", Math.min(25_000, Math.floor(memberTtlMs / 2)), 100, 3_600_000);
  if (refreshEveryMs * 2 > memberTtlMs) throw new ConfigError("PRESENCE_REFRESH_MS", `must be at most half of PRESENCE_MEMBER_TTL_MS (${memberTtlMs}), or a live member can expire between two refreshes`);
  return { awayAfterMs: int(env, "PRESENCE_AWAY_AFTER_MS", 300_000, 100), leaveGraceMs: int(env, "PRESENCE_LEAVE_GRACE_MS", 5_000, 0), memberTtlMs, refreshEveryMs };
}

function parseRedis(env: Env, database: Config["database"]): RedisConfig | null {
  const url = env.REDIS_URL;
  const commandTimeoutMs = int(env, "REDIS_COMMAND_TIMEOUT_MS", 2_000, 50, 60_000);
  const reorderWindowMs = int(env, "REDIS_REORDER_WINDOW_MS", 100, 1, 10_000);
  const positionCheckMs = int(env, "REDIS_POSITION_CHECK_MS", 5_000, 100, 600_000);
  const feedLeaseTtlMs = int(env, "FEED_LEASE_TTL_MS", 10_000, 1_000, 600_000);
  const prefix = env.REDIS_PREFIX === undefined || env.REDIS_PREFIX === "" ? "sinal" : env.REDIS_PREFIX;
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(prefix)) throw new ConfigError("REDIS_PREFIX", "expected 1 to 64 of A-Z a-z 0-9 _ . -");
  if (url === undefined || url === "") return null;
  if (!url.startsWith("redis://") && !url.startsWith("rediss://")) {
    const scheme = /^[a-z][a-z0-9+.-]*:/i.exec(url)?.[0] ?? "no scheme";
    throw new ConfigError("REDIS_URL", `expected redis://host:port[/db] or rediss://..., got ${scheme}`);
  }
  try {
    if (new URL(url).hostname === "") throw new Error("no host");
  } catch {
    throw new ConfigError("REDIS_URL", "expected redis://[user:password@]host:port[/db]");
  }
  // Every node must see the same rooms, messages and offsets: a file of its own per node would not.
  if (database.kind !== "postgres") throw new ConfigError("REDIS_URL", "several nodes need one shared database: set DATABASE_URL=postgres://... too");
  return { url, prefix, commandTimeoutMs, reorderWindowMs, positionCheckMs, feedLeaseTtlMs };
}

function parseDatabase(env: Env): Config["database"] {
  const raw = env.DATABASE_URL;
  const synchronous = env.SQLITE_SYNCHRONOUS;
  // Read whatever the store: a wrong value is refused even before it matters.
  const poolSize = int(env, "PG_POOL_SIZE", 10, 1, 1000);
  const statementTimeoutMs = int(env, "PG_STATEMENT_TIMEOUT_MS", 30_000, 0, 3_600_000);
  const sync = synchronous === undefined || synchronous === "" ? "full" : synchronous.toLowerCase();
  if (sync !== "full" && sync !== "normal") throw new ConfigError("SQLITE_SYNCHRONOUS", `expected full or normal, got "${synchronous}"`);
  const url = raw && raw !== "" ? raw : "sqlite:./data/sinal.db";
  if (url.startsWith("sqlite:")) {
    const path = url.slice("sqlite:".length).replace(/^\/\/(?=\/)/, "");
    if (path === "") throw new ConfigError("DATABASE_URL", "sqlite: needs a file path, e.g. sqlite:./data/sinal.db");
    return { kind: "sqlite", path, synchronous: sync };
  }
  if (url.startsWith("postgres://") || url.startsWith("postgresql://")) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new ConfigError("DATABASE_URL", "expected postgres://user:password@host:port/database");
    }
    if (parsed.hostname === "" || parsed.pathname.length <= 1) throw new ConfigError("DATABASE_URL", "expected postgres://user:password@host:port/database (a host and a database)");
    return { kind: "postgres", url, poolSize, statementTimeoutMs };
  }
  // Only the scheme is echoed: the rest of a URL may hold a password.
  const scheme = /^[a-z][a-z0-9+.-]*:/i.exec(url)?.[0] ?? "no scheme";
  throw new ConfigError("DATABASE_URL", `expected sqlite:<path> or postgres://..., got ${scheme}`);
}

/**
 * An IPv4 or IPv6 address, or a host name, checked for form only: whether it is an address of
 * this machine (or resolves) shows at listen, which names HOST too (cli/serve.ts).
 */
function parseHost(raw: string | undefined): string {
  if (raw === undefined || raw === "") return "0.0.0.0";
  const bad = (want: string) => new ConfigError("HOST", `expected ${want}, got "${raw}"`);
  if (/^[0-9.]+$/.test(raw)) {
    if (isIP(raw) !== 4) throw bad("an IPv4 address (four numbers from 0 to 255)");
  } else if (raw.includes(":")) {
    if (isIP(raw) !== 6) throw bad("an IPv6 address, without brackets");
  } else if (!HOST_NAME_RE.test(raw)) {
    throw bad("an address or a host name");
  }
  return raw;
}
// Labels of letters, digits, `-` and `_` (container names have underscores), joined by dots.
const HOST_NAME_RE = /^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?)*$/;

function parseApiKeys(raw: string | undefined): Config["envApiKeys"] {
  if (!raw || raw.trim() === "") return [];
  return raw.split(",").map((entry, i) => {
    const at = entry.indexOf(":");
    const tenant = entry.slice(0, at).trim();
    const key = entry.slice(at + 1).trim();
    if (at < 1 || !TENANT_RE.test(tenant) || key.length < 16) {
      throw new ConfigError("SINAL_API_KEYS", `entry ${i + 1} must be tenant:key with a valid tenant id and a key of at least 16 characters`);
    }
    return { tenant, key };
  });
}

function parseOrigins(raw: string | undefined): string[] | null {
  if (raw === undefined || raw.trim() === "") return null;
  const origins = raw.split(",").map((o) => o.trim()).filter(Boolean);
  for (const origin of origins) {
    if (origin === "*") continue;
    let parsed: URL;
    try {
      parsed = new URL(origin);
    } catch {
      throw new ConfigError("ALLOWED_ORIGINS", `"${origin}" is not an origin like https://app.example.com`);
    }
    if (parsed.origin !== origin.replace(/\/$/, "")) {
      throw new ConfigError("ALLOWED_ORIGINS", `"${origin}" must be a bare origin (scheme://host[:port]) without a path`);
    }
  }
  return origins.map((o) => o.replace(/\/$/, ""));
}

function parseJwt(env: Env, database: Config["database"]): Config["jwt"] {
  const secret = env.JWT_SECRET;
  const pem = env.JWT_PUBLIC_KEY;
  if (secret && pem) throw new ConfigError("JWT_SECRET", "set JWT_SECRET or JWT_PUBLIC_KEY, not both");
  if (pem) {
    if (!pem.includes("-----BEGIN PUBLIC KEY-----")) {
      throw new ConfigError("JWT_PUBLIC_KEY", "expected a PEM public key (-----BEGIN PUBLIC KEY-----)");
    }
    return { kind: "public-key", pem: pem.replace(/\\n/g, "\n") };
  }
  if (secret !== undefined && secret !== "") {
    if (secret.length < 32) throw new ConfigError("JWT_SECRET", "must be at least 32 characters for HS256");
    return { kind: "secret", secret };
  }
  // Dev mode. Only the file's name here: loading the configuration writes nothing.
  if (database.kind === "postgres") return { kind: "dev", secretFile: resolve("data", "dev-secret") };
  return { kind: "dev", secretFile: database.path === ":memory:" ? null : resolve(dirname(database.path), "dev-secret") };
}

/** Reads and validates the whole configuration; throws ConfigError on the first bad variable. */
export function loadConfig(env: Env = process.env): Config {
  const host = parseHost(env.HOST);
  const database = parseDatabase(env);
  const redis = parseRedis(env, database);
  const ratePerSec = int(env, "RATE_LIMIT_PER_SEC", 50, 1);
  const pingIntervalMs = int(env, "PING_INTERVAL_MS", 25_000, 1000);
  const idleTimeoutSec = int(env, "IDLE_TIMEOUT_S", 60, 2, 960);
  if (idleTimeoutSec * 1000 <= pingIntervalMs) {
    throw new ConfigError("IDLE_TIMEOUT_S", `must be longer than PING_INTERVAL_MS (${pingIntervalMs} ms), or clients that ping on time get cut off`);
  }
  const slowConsumerBytes = int(env, "SLOW_CONSUMER_BYTES", 1024 * 1024, 1024);
  const namespaces = namespacesFrom(env);
  const conflateBytes = int(env, "CONFLATE_AFTER_BYTES", Math.min(64 * 1024, Math.floor(slowConsumerBytes / 4)), 256);
  if (conflateBytes >= slowConsumerBytes) throw new ConfigError("CONFLATE_AFTER_BYTES", `must be below SLOW_CONSUMER_BYTES (${slowConsumerBytes})`);
  return {
    port: int(env, "PORT", 3000, 0, 65535),
    host,
    jwt: parseJwt(env, database),
    database,
    redis,
    envApiKeys: parseApiKeys(env.SINAL_API_KEYS),
    allowedOrigins: parseOrigins(env.ALLOWED_ORIGINS),
    logLevel: parseLogLevel(env.LOG_LEVEL),
    pingIntervalMs,
    idleTimeoutSec,
    idempotencyTtlSec: int(env, "IDEMPOTENCY_TTL_S", 86_400, 60),
    sweepIntervalMs: int(env, "SWEEP_INTERVAL_MS", 250, 10, 60_000),
    metricsTopTenants: int(env, "METRICS_TOP_TENANTS", 10, 0, 1000),
    shutdownTimeoutMs: int(env, "SHUTDOWN_TIMEOUT_MS", 8_000, 100, 60_000),
    chat: {
      typingThrottleMs: int(env, "TYPING_THROTTLE_MS", 2_000, 0),
      typingTimeoutMs: int(env, "TYPING_TIMEOUT_MS", 6_000, 100),
    },
    presence: parsePresence(env),
    commitIntervalMs: int(env, "COMMIT_INTERVAL_MS", 4, 0, 1000),
    locks: { ttlMs: int(env, "LOCK_TTL_MS", 60_000, 100) },
    audit: { retentionDays: int(env, "AUDIT_RETENTION_DAYS", 30, 1, 3650) },
    retention: { messageDays: parseMessageRetention(env, namespaces), notificationDays: optionalInt(env, "NOTIFICATION_RETENTION_DAYS", 1, 3650) },
    namespaces,
    history: {
      memoryMaxBytes: int(env, "HISTORY_MEMORY_MAX_BYTES", 256 * 1024 * 1024, 0),
      tenantMaxBytes: int(env, "HISTORY_TENANT_MAX_BYTES", 64 * 1024 * 1024, 0),
    },
    mongo: parseMongoConfig(env, int(env, "MONGODB_RETRY_MAX_MS", 30_000, 100, 600_000), new Namespaces(namespaces)),
    limits: {
      maxFrameBytes: int(env, "MAX_FRAME_BYTES", 64 * 1024, 256, 16 * 1024 * 1024),
      ratePerSec,
      rateBurst: int(env, "RATE_LIMIT_BURST", 100, 1),
      maxRejected: int(env, "RATE_LIMIT_MAX_REJECTED", 100, 1),
      rejectWindowMs: int(env, "RATE_LIMIT_WINDOW_MS", 10_000, 100),
      maxSubscriptions: int(env, "MAX_SUBSCRIPTIONS", 200, 1),
      maxConnectionsPerUser: int(env, "MAX_CONNECTIONS_PER_USER", 20, 1),
      maxConnectionsPerTenant: int(env, "MAX_CONNECTIONS_PER_TENANT", 50_000, 1),
      slowConsumerBytes,
      conflateBytes,
      maxBodyBytes: int(env, "MAX_BODY_BYTES", 8 * 1024 * 1024, 1024),
      bodyTimeoutMs: int(env, "BODY_TIMEOUT_MS", 10_000, 100, 600_000),
      maxRestConcurrentPerClient: int(env, "REST_MAX_CONCURRENT_PER_CLIENT", 32, 1),
      maxJsonDepth: int(env, "MAX_JSON_DEPTH", 64, 2, 512),
      maxChannels: int(env, "MAX_CHANNELS", 200_000, 100),
      maxChannelsPerTenant: int(env, "MAX_CHANNELS_PER_TENANT", 20_000, 10),
      maxLocksPerUser: int(env, "MAX_LOCKS_PER_USER", 100, 1),
    },
  };
}

/** The namespaces, as a ConfigError naming the variable when one is wrong. */
function namespacesFrom(env: Env): Namespace[] {
  try {
    return parseNamespaces(env);
  } catch (err) {
    if (err instanceof NamespaceError) throw new ConfigError(err.variable, err.message);
    throw err;
  }
}

const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];
function parseLogLevel(raw: string | undefined): string {
  if (raw === undefined || raw === "") return "info";
  if (!LOG_LEVELS.includes(raw)) throw new ConfigError("LOG_LEVEL", `expected one of ${LOG_LEVELS.join(", ")}`);
  return raw;
}
