import { index, integer, primaryKey, sqliteTable, text } from "drizzle-orm/sqlite-core";

/** Tenant API keys. Only the SHA-256 of the secret part is kept, never the key. */
export const apiKeys = sqliteTable(
  "api_keys",
  {
    id: text("id").primaryKey(),
    tenant: text("tenant").notNull(),
    secretHash: text("secret_hash").notNull(),
    createdAt: integer("created_at").notNull(),
    revokedAt: integer("revoked_at"),
  },
  (t) => [index("api_keys_tenant_idx").on(t.tenant)],
);

/** First answers of idempotent publishes, per tenant and key. */
export const idempotency = sqliteTable(
  "idempotency",
  {
    tenant: text("tenant").notNull(),
    key: text("key").notNull(),
    response: text("response").notNull(),
    createdAt: integer("created_at").notNull(),
  },
  (t) => [primaryKey({ columns: [t.tenant, t.key] }), index("idempotency_created_idx").on(t.createdAt)],
);
