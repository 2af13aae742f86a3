import { index, integer, primaryKey, sqliteTable, text, uniqueIndex } from "drizzle-orm/sqlite-core";

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

/** Chat rooms (conversations) per tenant. Created on first use or announced by a backend. */
export const rooms = sqliteTable(
  "rooms",
  {
    tenant: text("tenant").notNull(),
    id: text("id").notNull(),
    status: text("status", { enum: ["open", "closed"] }).notNull().default("open"),
    assignedAgent: text("assigned_agent"),
    /** JSON object of backend-defined fields (subject, department, customer ...). */
    meta: text("meta"),
    createdAt: integer("created_at").notNull(),
    updatedAt: integer("updated_at").notNull(),
  },
  (t) => [primaryKey({ columns: [t.tenant, t.id] })],
);

export const roomMembers = sqliteTable(
  "room_members",
  {
    tenant: text("tenant").notNull(),
    room: text("room").notNull(),
    user: text("user").notNull(),
    joinedAt: integer("joined_at").notNull(),
  },
  (t) => [primaryKey({ columns: [t.tenant, t.room, t.user] })],
);

/** Chat messages; the integer id orders a room's messages and pages them (`before=<id>`). */
export const messages = sqliteTable(
  "messages",
  {
    id: integer("id").primaryKey({ autoIncrement: true }),
    tenant: text("tenant").notNull(),
    room: text("room").notNull(),
    sender: text("sender").notNull(),
    content: text("content").notNull(),
    clientMsgId: text("client_msg_id"),
    createdAt: integer("created_at").notNull(),
  },
  (t) => [
    index("messages_room_idx").on(t.tenant, t.room, t.id),
    uniqueIndex("messages_client_msg_idx").on(t.tenant, t.room, t.sender, t.clientMsgId),
  ],
);

/** The furthest message each user has read in a room. */
export const readReceipts = sqliteTable(
  "read_receipts",
  {
    tenant: text("tenant").notNull(),
    room: text("room").notNull(),
    user: text("user").notNull(),
    messageId: integer("message_id").notNull(),
    updatedAt: integer("updated_at").notNull(),
  },
  (t) => [primaryKey({ columns: [t.tenant, t.room, t.user] })],
);

/** Notifications, one row per recipient. `delivered_at` is set once pushed to a live connection. */
export const notifications = sqliteTable(
  "notifications",
  {
    id: integer("id").primaryKey({ autoIncrement: true }),
    tenant: text("tenant").notNull(),
    user: text("user").notNull(),
    category: text("category").notNull(),
    title: text("title").notNull(),
    message: text("message").notNull(),
    data: text("data"),
    action: text("action"),
    createdAt: integer("created_at").notNull(),
    deliveredAt: integer("delivered_at"),
    readAt: integer("read_at"),
  },
  (t) => [index("notifications_user_idx").on(t.tenant, t.user, t.id)],
);

export const preferences = sqliteTable(
  "preferences",
  {
    tenant: text("tenant").notNull(),
    user: text("user").notNull(),
    /** JSON array of category names. */
    mutedCategories: text("muted_categories").notNull().default("[]"),
    updatedAt: integer("updated_at").notNull(),
  },
  (t) => [primaryKey({ columns: [t.tenant, t.user] })],
);

/** Who did what: connects, disconnects, denied subscriptions, REST publishes, notifications. */
export const auditLog = sqliteTable(
  "audit_log",
  {
    id: integer("id").primaryKey({ autoIncrement: true }),
    tenant: text("tenant").notNull(),
    at: integer("at").notNull(),
    kind: text("kind").notNull(),
    actor: text("actor").notNull(),
    /** JSON object with the kind's details. */
    detail: text("detail"),
  },
  (t) => [index("audit_tenant_idx").on(t.tenant, t.id), index("audit_at_idx").on(t.at)],
);

/**
 * Where each MongoDB feed stands: the resume token after its last published change. `source`
 * is the watched `db.collection`, so a feed pointed elsewhere does not resume a foreign stream.
 * `fence` is the fencing token of the feed's lease under which the row was last written: a
 * write with a lower one (a stale leader's) is refused. A cleared position keeps its row (and
 * its fence) with an empty token.
 */
export const feedPositions = sqliteTable("feed_positions", {
  feed: text("feed").primaryKey(),
  source: text("source").notNull(),
  /** The resume token as canonical Extended JSON; empty: cleared (no position). */
  token: text("token").notNull(),
  updatedAt: integer("updated_at").notNull(),
  fence: integer("fence").notNull().default(0),
});

/** Where each durable channel (chat rooms) stands: its epoch and last offset. */
export const channelPositions = sqliteTable("channel_positions", {
  topic: text("topic").primaryKey(),
  epoch: text("epoch").notNull(),
  offset: integer("offset").notNull(),
});

/** The kept publications of durable channels, as the serialized `pub` frames clients were sent. */
export const channelLog = sqliteTable(
  "channel_log",
  {
    topic: text("topic").notNull(),
    offset: integer("offset").notNull(),
    frame: text("frame").notNull(),
    at: integer("at").notNull(),
  },
  (t) => [primaryKey({ columns: [t.topic, t.offset] }), index("channel_log_at_idx").on(t.at)],
);
