CREATE TABLE "api_keys" (
	"id" text PRIMARY KEY NOT NULL,
	"tenant" text NOT NULL,
	"secret_hash" text NOT NULL,
	"created_at" bigint NOT NULL,
	"revoked_at" bigint
);
--> statement-breakpoint
CREATE TABLE "audit_log" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"tenant" text NOT NULL,
	"at" bigint NOT NULL,
	"kind" text NOT NULL,
	"actor" text NOT NULL,
	"detail" jsonb
);
--> statement-breakpoint
CREATE TABLE "channel_log" (
	"topic" text NOT NULL,
	"offset" bigint NOT NULL,
	"frame" text NOT NULL,
	"at" bigint NOT NULL,
	CONSTRAINT "channel_log_topic_offset_pk" PRIMARY KEY("topic","offset")
);
--> statement-breakpoint
CREATE TABLE "channel_positions" (
	"topic" text PRIMARY KEY NOT NULL,
	"epoch" text NOT NULL,
	"offset" bigint NOT NULL
);
--> statement-breakpoint
CREATE TABLE "feed_positions" (
	"feed" text PRIMARY KEY NOT NULL,
	"source" text NOT NULL,
	"token" text NOT NULL,
	"updated_at" bigint NOT NULL
);
--> statement-breakpoint
CREATE TABLE "idempotency" (
	"tenant" text NOT NULL,
	"key" text NOT NULL,
	"response" text NOT NULL,
	"created_at" bigint NOT NULL,
	CONSTRAINT "idempotency_tenant_key_pk" PRIMARY KEY("tenant","key")
);
--> statement-breakpoint
CREATE TABLE "messages" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"tenant" text NOT NULL,
	"room" text NOT NULL,
	"sender" text NOT NULL,
	"content" text NOT NULL,
	"client_msg_id" text,
	"created_at" bigint NOT NULL
);
--> statement-breakpoint
CREATE TABLE "notifications" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"tenant" text NOT NULL,
	"user" text NOT NULL,
	"category" text NOT NULL,
	"title" text NOT NULL,
	"message" text NOT NULL,
	"data" jsonb,
	"action" text,
	"created_at" bigint NOT NULL,
	"delivered_at" bigint,
	"read_at" bigint
);
--> statement-breakpoint
CREATE TABLE "preferences" (
	"tenant" text NOT NULL,
	"user" text NOT NULL,
	"muted_categories" jsonb DEFAULT '[]'::jsonb NOT NULL,
	"updated_at" bigint NOT NULL,
	CONSTRAINT "preferences_tenant_user_pk" PRIMARY KEY("tenant","user")
);
--> statement-breakpoint
CREATE TABLE "read_receipts" (
	"tenant" text NOT NULL,
	"room" text NOT NULL,
	"user" text NOT NULL,
	"message_id" bigint NOT NULL,
	"updated_at" bigint NOT NULL,
	CONSTRAINT "read_receipts_tenant_room_user_pk" PRIMARY KEY("tenant","room","user")
);
--> statement-breakpoint
CREATE TABLE "room_members" (
	"tenant" text NOT NULL,
	"room" text NOT NULL,
	"user" text NOT NULL,
	"joined_at" bigint NOT NULL,
	CONSTRAINT "room_members_tenant_room_user_pk" PRIMARY KEY("tenant","room","user")
);
--> statement-breakpoint
CREATE TABLE "rooms" (
	"tenant" text NOT NULL,
	"id" text NOT NULL,
	"status" text DEFAULT 'open' NOT NULL,
	"assigned_agent" text,
	"meta" jsonb,
	"created_at" bigint NOT NULL,
	"updated_at" bigint NOT NULL,
	CONSTRAINT "rooms_tenant_id_pk" PRIMARY KEY("tenant","id")
);
--> statement-breakpoint
CREATE INDEX "api_keys_tenant_idx" ON "api_keys" USING btree ("tenant");--> statement-breakpoint
CREATE INDEX "audit_tenant_idx" ON "audit_log" USING btree ("tenant","id");--> statement-breakpoint
CREATE INDEX "audit_at_idx" ON "audit_log" USING btree ("at");--> statement-breakpoint
CREATE INDEX "channel_log_at_idx" ON "channel_log" USING btree ("at");--> statement-breakpoint
CREATE INDEX "idempotency_created_idx" ON "idempotency" USING btree ("created_at");--> statement-breakpoint
CREATE INDEX "messages_room_idx" ON "messages" USING btree ("tenant","room","id");--> statement-breakpoint
CREATE UNIQUE INDEX "messages_client_msg_idx" ON "messages" USING btree ("tenant","room","sender","client_msg_id");--> statement-breakpoint
CREATE INDEX "notifications_user_idx" ON "notifications" USING btree ("tenant","user","id");