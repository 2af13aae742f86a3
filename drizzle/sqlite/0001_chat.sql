CREATE TABLE `audit_log` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`tenant` text NOT NULL,
	`at` integer NOT NULL,
	`kind` text NOT NULL,
	`actor` text NOT NULL,
	`detail` text
);
--> statement-breakpoint
CREATE INDEX `audit_tenant_idx` ON `audit_log` (`tenant`,`id`);--> statement-breakpoint
CREATE INDEX `audit_at_idx` ON `audit_log` (`at`);--> statement-breakpoint
CREATE TABLE `messages` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`tenant` text NOT NULL,
	`room` text NOT NULL,
	`sender` text NOT NULL,
	`content` text NOT NULL,
	`client_msg_id` text,
	`created_at` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `messages_room_idx` ON `messages` (`tenant`,`room`,`id`);--> statement-breakpoint
CREATE UNIQUE INDEX `messages_client_msg_idx` ON `messages` (`tenant`,`room`,`sender`,`client_msg_id`);--> statement-breakpoint
CREATE TABLE `notifications` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`tenant` text NOT NULL,
	`user` text NOT NULL,
	`category` text NOT NULL,
	`title` text NOT NULL,
	`message` text NOT NULL,
	`data` text,
	`action` text,
	`created_at` integer NOT NULL,
	`delivered_at` integer,
	`read_at` integer
);
--> statement-breakpoint
CREATE INDEX `notifications_user_idx` ON `notifications` (`tenant`,`user`,`id`);--> statement-breakpoint
CREATE TABLE `preferences` (
	`tenant` text NOT NULL,
	`user` text NOT NULL,
	`muted_categories` text DEFAULT '[]' NOT NULL,
	`updated_at` integer NOT NULL,
	PRIMARY KEY(`tenant`, `user`)
);
--> statement-breakpoint
CREATE TABLE `read_receipts` (
	`tenant` text NOT NULL,
	`room` text NOT NULL,
	`user` text NOT NULL,
	`message_id` integer NOT NULL,
	`updated_at` integer NOT NULL,
	PRIMARY KEY(`tenant`, `room`, `user`)
);
--> statement-breakpoint
CREATE TABLE `room_members` (
	`tenant` text NOT NULL,
	`room` text NOT NULL,
	`user` text NOT NULL,
	`joined_at` integer NOT NULL,
	PRIMARY KEY(`tenant`, `room`, `user`)
);
--> statement-breakpoint
CREATE TABLE `rooms` (
	`tenant` text NOT NULL,
	`id` text NOT NULL,
	`status` text DEFAULT 'open' NOT NULL,
	`assigned_agent` text,
	`meta` text,
	`created_at` integer NOT NULL,
	`updated_at` integer NOT NULL,
	PRIMARY KEY(`tenant`, `id`)
);
