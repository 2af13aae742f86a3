import { bigint, bigserial, index, jsonb, pgTable, primaryKey, text, uniqueIndex } from "drizzle-orm/pg-core";

/**
 * The PostgreSQL schema: the same tables, columns and keys as schema.sqlite.ts (read that file for
 * what each holds), for several nodes sharing one database. Differences, by design:
 * - times stay milliseconds since the epoch, as `bigint` (mode number: exact below 2^53), so both
 *   stores hand the same numbers to the code above them;
 * - JSON values are `jsonb` (rooms' meta, notifications' data, audit details, muted categories):
 *   queryable, and checked by the driver test (test/postgres-driver.test.ts) to be stored as
 *   objects, not strings;
 * - increasing ids are `bigserial`.
 * Migrations: `npm run db:generate:pg` writes drizzle/pg from this file.
 */

const ms = (name: string) => bigint(name, { mode: "number" });

export const apiKeys = pgTable(
  "api_keys",
  {
    id: text("id").primaryKey(),
    tenant: text("tenant").notNull(),
    secretHash: text("secret_hash").notNull(),
    createdAt: ms("created_at").notNull(),
    revokedAt: ms("revoked_at"),
  },
  (t) => [index("api_keys_tenant_idx").on(t.tenant)],
);

export const idempotency = pgTable(
  "idempotency",
  {
    tenant: text("tenant").notNull(),
    key: text("key").notNull(),
    response: text("response").notNull(),
    createdAt: ms("created_at").notNull(),
  },
  (t) => [primaryKey({ columns: [t.tenant, t.key] }), index("idempotency_created_idx").on(t.createdAt)],
);

export const rooms = pgTable(
  "rooms",
  {
    tenant: text("tenant").notNull(),
    id: text("id").notNull(),
    status: text("status", { enum: ["open", "closed"] }).notNull().default("open"),
    assignedAgent: text("assigned_agent"),
    meta: jsonb("meta"),
    createdAt: ms("created_at").notNull(),
    updatedAt: ms("updated_at").notNull(),
  },
  (t) => [primaryKey({ columns: [t.tenant, t.id] })],
);

export const roomMembers = pgTable(
  "room_members",
  {
    tenant: text("tenant").notNull(),
    room: text("room").notNull(),
    user: text("user").notNull(),
    joinedAt: ms("joined_at").notNull(),
  },
  (t) => [primaryKey({ columns: [t.tenant, t.room, t.user] })],
);

export const messages = pgTable(
  "messages",
  {
    id: bigserial("id", { mode: "number" }).primaryKey(),
    tenant: text("tenant").notNull(),
    room: text("room").notNull(),
    sender: text("sender").notNull(),
    content: text("content").notNull(),
    clientMsgId: text("client_msg_id"),
    createdAt: ms("created_at").notNull(),
  },
  (t) => [
    index("messages_room_idx").on(t.tenant, t.room, t.id),
    uniqueIndex("messages_client_msg_idx").on(t.tenant, t.room, t.sender, t.clientMsgId),
  ],
);

export const readReceipts = pgTable(
  "read_receipts",
  {
    tenant: text("tenant").notNull(),
    room: text("room").notNull(),
    user: text("user").notNull(),
    messageId: bigint("message_id", { mode: "number" }).notNull(),
    updatedAt: ms("updated_at").notNull(),
  },
  (t) => [primaryKey({ columns: [t.tenant, t.room, t.user] })],
);

export const notifications = pgTable(
  "notifications",
  {
    id: bigserial("id", { mode: "number" }).primaryKey(),
    tenant: text("tenant").notNull(),
    user: text("user").notNull(),
    category: text("category").notNull(),
    title: text("title").notNull(),
    message: text("message").notNull(),
    data: jsonb("data"),
    action: text("action"),
    createdAt: ms("created_at").notNull(),
    deliveredAt: ms("delivered_at"),
    readAt: ms("read_at"),
  },
  (t) => [index("notifications_user_idx").on(t.tenant, t.user, t.id)],
);

export const preferences = pgTable(
  "preferences",
  {
    tenant: text("tenant").notNull(),
    user: text("user").notNull(),
    mutedCategories: jsonb("muted_categories").$type<string[]>().notNull().default([]),
    updatedAt: ms("updated_at").notNull(),
  },
  (t) => [primaryKey({ columns: [t.tenant, t.user] })],
);

export const auditLog = pgTable(
  "audit_log",
  {
    id: bigserial("id", { mode: "number" }).primaryKey(),
    tenant: text("tenant").notNull(),
    at: ms("at").notNull(),
    kind: text("kind").notNull(),
    actor: text("actor").notNull(),
    detail: jsonb("detail"),
  },
  (t) => [index("audit_tenant_idx").on(t.tenant, t.id), index("audit_at_idx").on(t.at)],
);

export const feedPositions = pgTable("feed_positions", {
  feed: text("feed").primaryKey(),
  source: text("source").notNull(),
  token: text("token").notNull(),
  updatedAt: ms("updated_at").notNull(),
  fence: bigint("fence", { mode: "number" }).notNull().default(0),
});

export const channelPositions = pgTable("channel_positions", {
  topic: text("topic").primaryKey(),
  epoch: text("epoch").notNull(),
  offset: bigint("offset", { mode: "number" }).notNull(),
});

export const channelLog = pgTable(
  "channel_log",
  {
    topic: text("topic").notNull(),
    offset: bigint("offset", { mode: "number" }).notNull(),
    frame: text("frame").notNull(),
    at: ms("at").notNull(),
  },
  (t) => [primaryKey({ columns: [t.topic, t.offset] }), index("channel_log_at_idx").on(t.at)],
);
