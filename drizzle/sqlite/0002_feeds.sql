CREATE TABLE `feed_positions` (
	`feed` text PRIMARY KEY NOT NULL,
	`source` text NOT NULL,
	`token` text NOT NULL,
	`updated_at` integer NOT NULL
);
