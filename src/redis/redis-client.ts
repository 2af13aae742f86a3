import Redis from "ioredis";
import type { Logger } from "../log.ts";

export type { Redis };

/** How sinal talks to Redis (REDIS_URL and its companions, src/config.ts). */
export interface RedisSettings {
  /** redis://[user:password@]host:port[/db], or rediss:// for TLS. */
  url: string;
  /** A command not answered within this long fails (REDIS_COMMAND_TIMEOUT_MS): never a 30 s hang. */
  commandTimeoutMs: number;
  /** Keys are prefixed with this (REDIS_PREFIX), so several deployments can share one Redis. */
  prefix: string;
}

/**
 * One connection to Redis, through ioredis. Chosen over Bun's built-in RedisClient (bun 1.4.5) for
 * what a cluster needs when Redis restarts or moves:
 * - after a reconnect Bun's client is subscribed to nothing and says nothing (every later message
 *   is lost), and it gives up for good after ~31 s of retries, with queued commands hanging;
 * - ioredis reconnects for ever (the backoff below), tells us each time (`ready`), fails a command
 *   at once while disconnected (no offline queue) or after `commandTimeoutMs`, and speaks Sentinel.
 * Pub/sub loses messages across a reconnect whatever the client: the broker checks offsets and
 * recovers from the streams (src/redis/redis-broker.ts); this connection only has to say when.
 * test/redis-client.test.ts pins each of these behaviours against a real redis-server.
 *
 * `subscriber`: a connection that will SUBSCRIBE (Redis forbids other commands on it). Its
 * subscriptions are the broker's to restore after a reconnect (autoResubscribe is off: the broker
 * resubscribes every topic it serves on `ready` and then checks each one for a gap).
 */
export function connectRedis(settings: RedisSettings, name: string, logger?: Logger, subscriber = false): Redis {
  const redis = new Redis(settings.url, {
    connectionName: `sinal:${name}`,
    lazyConnect: true,
    enableOfflineQueue: false,
    enableAutoPipelining: !subscriber,
    autoResubscribe: false,
    commandTimeout: settings.commandTimeoutMs,
    connectTimeout: Math.max(1000, settings.commandTimeoutMs),
    maxRetriesPerRequest: 0,
    // 50 ms doubling to 2 s, for ever: a Redis back after an hour is found within 2 s.
    retryStrategy: (attempt) => Math.min(50 * 2 ** Math.min(attempt, 6), 2000),
  });
  let lastLogged = 0;
  redis.on("error", (err: Error) => {
    // Every failed reconnect emits one: logged at most every 5 s.
    const now = Date.now();
    if (now - lastLogged < 5000) return;
    lastLogged = now;
    logger?.warn({ err, code: "redis_unreachable", connection: name }, "Redis connection failed; retrying");
  });
  return redis;
}

/** Connects, or throws after `timeoutMs` naming what failed (start-up: a wrong REDIS_URL should say so, not hang). */
export async function openRedis(redis: Redis, timeoutMs: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      redis.connect(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
  } catch (err) {
    redis.disconnect();
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

/** A Redis URL without its password, for logs and errors. */
export function redisLabel(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password !== "") parsed.password = "***";
    return parsed.toString();
  } catch {
    return "(unparsable REDIS_URL)";
  }
}

/**
 * Whether `err` is Redis being unreachable or unable to serve (ioredis: no connection, a command
 * timed out; Redis: out of memory under noeviction, loading, a read-only replica): the request
 * may succeed later, so the client is told `unavailable` (503), never `internal`.
 */
export function isRedisUnavailable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  if (err.name === "ReplyError") return /^(OOM|LOADING|BUSY|MASTERDOWN|READONLY|TRYAGAIN|CLUSTERDOWN)\b/.test(err.message);
  return /Stream isn't writeable|Command timed out|Connection is closed|connect ECONNREFUSED|ECONNRESET|max retries per request/i.test(err.message);
}
