import type { SQL } from "bun";
import type { BunSQLDatabase } from "drizzle-orm/bun-sql";

/**
 * The drizzle database of the PostgreSQL store, over Bun.SQL opened with `prepare: false` (with
 * Bun.SQL's default `prepare: true`, drizzle 0.45 stores a jsonb object as a JSON string:
 * test/postgres-driver.test.ts). Each sub-store (chat, notifications, ...) takes this.
 */
export type PgDb = BunSQLDatabase<Record<string, never>> & { $client: SQL };
