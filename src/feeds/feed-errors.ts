import { MongoNetworkError, MongoNotConnectedError, MongoServerError, MongoServerSelectionError, MongoTopologyClosedError } from "mongodb";
import type { LostReason } from "./feed-metrics.ts";

/**
 * What a failed change stream means for a feed:
 * - `down`: MongoDB is unreachable (the driver already tried to resume and gave up). The position
 *   is intact: retry with backoff and resume after the last published change, same epoch.
 * - `lost`: the position cannot be resumed (history lost, token too old, a fatal or otherwise
 *   non-resumable server error, an invalidate): start from now with a fresh snapshot and a new
 *   epoch for the feed's channels.
 */
export type FeedFailure = { kind: "down" } | { kind: "lost"; reason: LostReason };

/** Server codes that say the change stream's position is gone. */
const HISTORY_LOST_CODES = new Set([
  286, // ChangeStreamHistoryLost
  280, // ChangeStreamFatalError (e.g. the resume token is no longer in the oplog)
  136, // CappedPositionLost
]);

/**
 * Server codes of a server in transition (not primary, shutting down, stale routing ...), after
 * which the change-streams spec resumes a getMore: the position is fine, only the server is not.
 */
const TRANSIENT_CODES = new Set([6, 7, 43, 63, 89, 91, 133, 150, 189, 234, 262, 9001, 10107, 11600, 11602, 13388, 13435, 13436]);

/** The stream returned an `invalidate` event (collection dropped or renamed): it cannot go on. */
export class FeedInvalidated extends Error {
  readonly code = "feed_invalidated";
  constructor(feed: string) {
    super(`the change stream of feed "${feed}" was invalidated (collection dropped or renamed)`);
    this.name = "FeedInvalidated";
  }
}

export function classifyFailure(err: unknown): FeedFailure {
  if (err instanceof FeedInvalidated) return { kind: "lost", reason: "invalidate" };
  if (err instanceof MongoNetworkError || err instanceof MongoServerSelectionError) return { kind: "down" };
  if (err instanceof MongoNotConnectedError || err instanceof MongoTopologyClosedError) return { kind: "down" };
  if (err instanceof MongoServerError) {
    if (HISTORY_LOST_CODES.has(Number(err.code))) return { kind: "lost", reason: "history_lost" };
    if (err.hasErrorLabel("NonResumableChangeStreamError")) return { kind: "lost", reason: "error" };
    if (TRANSIENT_CODES.has(Number(err.code)) || err.hasErrorLabel("ResumableChangeStreamError")) return { kind: "down" };
  }
  return { kind: "lost", reason: "error" };
}

/** A stable code for logs and /ready: the server's codeName, or the driver error's name. */
export function failureCode(err: unknown): string {
  if (err instanceof MongoServerError && typeof err.codeName === "string") return err.codeName;
  if (err instanceof FeedInvalidated) return err.code;
  return err instanceof Error ? err.name : "unknown";
}
