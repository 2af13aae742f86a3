import { statSync } from "node:fs";
import { resolve } from "node:path";
import type { Broker } from "./broker/broker.ts";
import { MemoryBroker } from "./broker/memory-broker.ts";
import { MemoryConnectionCounts, type ConnectionCounts } from "./claims/connection-counts.ts";
import { MemoryKeyClaims, type KeyClaims } from "./claims/key-claims.ts";
import { MemoryPresenceStore } from "./presence/memory-presence-store.ts";
import { MemoryLocks } from "./locks/memory-locks.ts";
import type { Locks } from "./locks/locks.ts";
import type { PresenceStore } from "./presence/presence-store.ts";
import { ConfigError, type Config, type RedisConfig } from "./config.ts";
import { RedisBroker } from "./broker/redis-broker.ts";
import { RedisKeys } from "./redis/keys.ts";
import { RedisPresenceStore } from "./redis/redis-presence-store.ts";
import { RedisConnectionCounts } from "./redis/redis-connection-counts.ts";
import { RedisKeyClaims } from "./redis/redis-key-claims.ts";
import { RedisLocks } from "./redis/redis-locks.ts";
import { RedisLeases } from "./redis/redis-leases.ts";
import type { Leases } from "./cluster/lease.ts";
import { connectRedis, openRedis, redisLabel, type Redis } from "./redis/redis-client.ts";
import type { Logger } from "./log.ts";
import { openPgStore } from "./store/pg-store.ts";
import { openSqliteStore } from "./store/sqlite-store.ts";
import type { Store } from "./store/store.ts";

/**
 * Every backend of a deployment, chosen from the configuration in this one place: the store from
 * DATABASE_URL (sqlite, or PostgreSQL for several nodes); the broker, connection counts,
 * idempotency claims, presence and locks in process (one node). The multi-node step fills these
 * seams from REDIS_URL here, so the server and the CLI never build a backend themselves;
 * createApp takes them as dependencies (each defaults to its memory implementation).
 */
export interface Backends {
  store: Store;
  broker: Broker;
  counts: ConnectionCounts;
  claims: KeyClaims;
  presence: PresenceStore;
  locks: Locks;
  /** Several nodes (REDIS_URL): the Redis connections the cluster's parts share; null on one node. */
  cluster: Cluster | null;
}

/** What a cluster node holds besides its seams: its id and its Redis connections. */
export interface Cluster {
  nodeId: string;
  config: RedisConfig;
  keys: RedisKeys;
  /** Commands (pipelined). */
  redis: Redis;
  /** Pub/sub only (Redis forbids other commands on a subscribed connection). */
  subscriber: Redis;
  /** Leases (the MongoDB feeds' leader per feed). */
  leases: Leases;
  /** Runs `task` first when the cluster closes (a part that must give back what it holds in Redis). */
  onClose(task: () => Promise<void>): void;
  close(): Promise<void>;
}

/** How long start-up waits for Redis before it gives up naming REDIS_URL. */
const REDIS_OPEN_TIMEOUT_MS = 10_000;

/** Opens the configured backends; a store that cannot be opened is a ConfigError naming DATABASE_URL. */
export async function createBackends(config: Config, logger?: Logger): Promise<Backends> {
  const cluster = config.redis === null ? null : await openCluster(config.redis, logger);
  let store: Store;
  try {
    store = await openConfiguredStore(config.database);
  } catch (err) {
    await cluster?.close();
    throw err;
  }
  const local = { counts: new MemoryConnectionCounts(), claims: new MemoryKeyClaims(), presence: new MemoryPresenceStore(), locks: new MemoryLocks() };
  if (cluster === null) return { store, broker: new MemoryBroker(), ...local, cluster };
  const broker = new RedisBroker(cluster.redis, cluster.subscriber, cluster.keys, {
    nodeId: cluster.nodeId,
    reorderWindowMs: cluster.config.reorderWindowMs,
    maxWaiting: 1000,
    maxWaitingBytes: 8 * 1024 * 1024,
    positionCheckMs: cluster.config.positionCheckMs,
    subscribeTimeoutMs: cluster.config.commandTimeoutMs,
  }, logger?.child({ component: "broker" }));
  const counts = new RedisConnectionCounts(cluster.redis, cluster.keys, { nodeId: cluster.nodeId, logger: logger?.child({ component: "connection-counts" }) });
  counts.start();
  cluster.onClose(() => counts.close());
  return {
    store,
    broker,
    counts,
    claims: new RedisKeyClaims(cluster.redis, cluster.keys, logger?.child({ component: "key-claims" })),
    presence: new RedisPresenceStore(cluster.redis, cluster.keys),
    locks: new RedisLocks(cluster.redis, cluster.keys),
    cluster,
  };
}

/** Connects to the cluster's Redis, or fails naming REDIS_URL. */
async function openCluster(config: RedisConfig, logger?: Logger): Promise<Cluster> {
  const nodeId = crypto.randomUUID();
  const settings = { url: config.url, commandTimeoutMs: config.commandTimeoutMs, prefix: config.prefix };
  const redis = connectRedis(settings, "commands", logger);
  const subscriber = connectRedis(settings, "subscriber", logger, true);
  try {
    await Promise.all([openRedis(redis, REDIS_OPEN_TIMEOUT_MS), openRedis(subscriber, REDIS_OPEN_TIMEOUT_MS)]);
  } catch (err) {
    redis.disconnect();
    subscriber.disconnect();
    throw new ConfigError("REDIS_URL", `cannot reach Redis at ${redisLabel(config.url)}: ${err instanceof Error ? err.message : String(err)}`);
  }
  const closing: (() => Promise<void>)[] = [];
  return {
    nodeId,
    config,
    keys: new RedisKeys(config.prefix),
    redis,
    subscriber,
    leases: new RedisLeases(redis, new RedisKeys(config.prefix)),
    onClose: (task) => closing.push(task),
    close: async () => {
      for (const task of closing.splice(0)) await task().catch(() => undefined);
      subscriber.disconnect();
      await redis.quit().catch(() => redis.disconnect());
    },
  };
}

/** The database for logs and messages: a sqlite path, or a PostgreSQL URL without its password. */
export function databaseLabel(database: Config["database"]): string {
  if (database.kind === "sqlite") return database.path;
  const url = new URL(database.url);
  if (url.password !== "") url.password = "***";
  return url.toString();
}

/**
 * The store of DATABASE_URL for a command. A path sqlite cannot open (a directory, a directory
 * this user may not write, a file that is no database) is a ConfigError naming DATABASE_URL and
 * the path, rather than sqlite's bare "unable to open database file".
 */
export async function openConfiguredStore(database: Config["database"]): Promise<Store> {
  if (database.kind === "postgres") {
    try {
      return await openPgStore(database.url, { poolSize: database.poolSize, statementTimeoutMs: database.statementTimeoutMs });
    } catch (err) {
      // drizzle wraps the driver's error; the reason (refused, bad password, no database) is in its cause.
      const cause = (err as { cause?: unknown }).cause ?? err;
      throw new ConfigError("DATABASE_URL", `cannot open the PostgreSQL database ${databaseLabel(database)}: ${cause instanceof Error ? cause.message : String(cause)}`);
    }
  }
  try {
    return openSqliteStore(database.path, database.synchronous);
  } catch (err) {
    const absolute = resolve(database.path);
    const shown = absolute === database.path ? database.path : `${database.path} (${absolute})`;
    throw new ConfigError("DATABASE_URL", `cannot open the sqlite database ${shown}: ${reason(absolute, err)}`);
  }
}

function reason(path: string, err: unknown): string {
  if (isDirectory(path)) return `it is a directory; name a file in it, e.g. sqlite:${path.replace(/\/$/, "")}/sinal.db`;
  const message = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  // sqlite says only "unable to open database file" whether the directory is read-only or missing.
  return /unable to open database file/.test(message) ? `${message} (can this user create and write files in its directory?)` : message;
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}
