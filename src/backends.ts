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
import { ConfigError, type Config } from "./config.ts";
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
}

/** Opens the configured backends; a store that cannot be opened is a ConfigError naming DATABASE_URL. */
export async function createBackends(config: Config): Promise<Backends> {
  return { store: await openConfiguredStore(config.database), broker: new MemoryBroker(), counts: new MemoryConnectionCounts(), claims: new MemoryKeyClaims(), presence: new MemoryPresenceStore(), locks: new MemoryLocks() };
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
