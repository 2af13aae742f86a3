import { readMigrationFiles } from "drizzle-orm/migrator";
import { join } from "node:path";

/**
 * Runs at bundle/transpile time (imported `with { type: "macro" }`), so the SQL of drizzle/sqlite
 * is inlined into the program and `migrate` works from a compiled binary with no folder beside it.
 */
export function sqliteMigrations() {
  return readMigrationFiles({ migrationsFolder: join(import.meta.dir, "../../drizzle/sqlite") });
}

/** The same for drizzle/pg: the PostgreSQL store's migrations, inlined at bundle time. */
export function pgMigrations() {
  return readMigrationFiles({ migrationsFolder: join(import.meta.dir, "../../drizzle/pg") });
}
