CREATE TABLE `channel_log` (
	`topic` text NOT NULL,
	`offset` integer NOT NULL,
	`frame` text NOT NULL,
	`at` integer NOT NULL,
	PRIMARY KEY(`topic`, `offset`)
);
--> statement-breakpoint
CREATE INDEX `channel_log_at_idx` ON `channel_log` (`at`);--> statement-breakpoint
CREATE TABLE `channel_positions` (
	`topic` text PRIMARY KEY NOT NULL,
	`epoch` text NOT NULL,
	`offset` integer NOT NULL
);
