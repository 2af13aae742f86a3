/**
 * Channel history: offsets, epochs and the publications a reconnecting client may have missed.
 * Implementations: memory-history.ts (one node, in process), durable-history.ts (kept in the
 * store, so a channel keeps its epoch and offsets across restarts) and redis-history.ts (shared by
 * the nodes of a cluster).
 *
 * Guarantees every implementation keeps, per topic:
 * - `append` assigns offsets 1, 2, 3 ... with no gap and no repeat within one epoch, and keeps
 *   the publication before its result is available: a publication is never fanned out before it
 *   is in history, so a client that recovers can never miss one it was not sent.
 * - Fan-out follows offset order, by construction: `append` calls its `deliver` once the
 *   publication is kept, synchronously and in offset order per topic (for a durable history,
 *   right after the commit, for every entry of the commit in turn), before its result settles.
 *   The Publisher fans out inside `deliver`, never after an `await`, so no path (a join, a chat
 *   message, a REST publish in the same group commit) can overtake another.
 * - `recover` returns either every publication after `since`, in order, up to the position it
 *   reports (`recovered: true`), or none (`recovered: false`, with the reason).
 * - A new epoch (`reset`, lost state, a restart of a memory history) means earlier offsets are gone.
 * Memory implementations answer synchronously (plain values, not Promises): the Publisher then
 * fans out in the same step it sequences, and a subscribe reads its position in one step.
 * Implementations backed by I/O return Promises; the subscribe path then holds the live frames
 * of the topic for that socket until the read is done (see FrameHandlers.subscribe).
 */

/** Where a channel stands: its epoch and the offset of its last publication (0 before any). */
export interface Position {
  epoch: string;
  offset: number;
}

/** How much history one kind of channel keeps: the last `size` publications of the last `ttlMs`. */
export interface Retention {
  size: number;
  ttlMs: number;
}

/** Why a `since` could not be served. */
export type RecoveryFailure = "epoch_changed" | "trimmed" | "no_history" | "ahead";

export interface Recovery {
  /** Where the channel stands; when recovered, the last replayed publication is at this offset. */
  position: Position;
  recovered: boolean;
  /**
   * The serialized `pub` frames after `since`, in offset order (empty unless recovered): the first
   * page of them, at most the `maxBytes` asked for (at least one). When `through` is below
   * `position.offset` the rest is read with `page`, at the client's pace.
   */
  publications: string[];
  /** Offset of the last frame in `publications` (`since.offset` when there is none). */
  through: number;
  /** Set when not recovered. */
  reason?: RecoveryFailure;
  /** The oldest offset still kept in the current epoch (position.offset + 1 when none is). */
  historyFrom: number;
}

export type MaybePromise<T> = T | Promise<T>;

/** Builds the serialized frame of a publication once its position is known. */
export type FrameBuilder = (position: Position) => string;

/**
 * Fans a kept publication out (see HistoryStore: called in offset order, before `append` settles).
 * `sent`: the history sent it to the other nodes itself, in the same step as it kept it (the Redis
 * history's script, one round trip); the broker then delivers it on this node only (Broker.publish).
 */
export type Deliver = (position: Position, frame: string, sent?: boolean) => void;

/**
 * Where this node stands in fanning out each topic it serves, on a cluster (the Redis broker keeps
 * it, src/broker/redis-broker.ts): a subscribe must never be told an offset this node has not
 * delivered yet, nor one behind what it delivered. Histories ask it before reading a shared position.
 */
export interface DeliveredPositions {
  /** The position of the last publication delivered on this node, when it tracks the topic. */
  get(topic: string): Position | undefined;
  /** Resolves once this node receives every publication of `topic` made from now on (its subscription is active). */
  ready(topic: string): Promise<void>;
  /** A position read from the shared history after `ready`: tracked from here unless one is already; returns the tracked one. */
  seed(topic: string, position: Position): Position;
  /** The topic was reset to `position` (a new epoch): tracked from here; returns it. */
  reset(topic: string, position: Position): Position;
}

/** Stored with a publication of a durable history in the same commit (see PublishService). */
export interface IdempotencyKey {
  tenant: string;
  key: string;
}

export interface HistoryStore {
  /**
   * Sequences one publication of `topic`, keeps it per `retention`, calls `deliver` (see above)
   * and returns its position and frame. `key`: an idempotency key a durable history stores in the
   * same commit as the publication (a memory history ignores it).
   */
  append(topic: string, build: FrameBuilder, retention: Retention, deliver: Deliver, key?: IdempotencyKey): MaybePromise<{ position: Position; frame: string }>;
  /** Where `topic` stands now. */
  position(topic: string): MaybePromise<Position>;
  /**
   * Whether every publication after `since` is kept, with the first page of them (see Recovery):
   * at most `maxBytes` of frames, so a recovery never holds more than that in memory at once.
   */
  recover(topic: string, since: Position, retention: Retention, maxBytes: number): MaybePromise<Recovery>;
  /**
   * The next page of a recovery: the kept publications with `after < offset <= upTo` in `epoch`,
   * oldest first, at most `maxBytes` of frames (at least one); null when the one after `after` is
   * no longer kept (trimmed meanwhile, or the epoch changed).
   */
  page(topic: string, epoch: string, after: number, upTo: number, retention: Retention, maxBytes: number): MaybePromise<Kept[] | null>;
  /** Starts a fresh history for one topic: a new epoch no client has seen, at offset 0. */
  reset(topic: string): MaybePromise<Position>;
  /** Drops what retention no longer keeps; called periodically. */
  trim(now: number): void;
  close(): Promise<void>;
}

export function randomEpoch(): string {
  return crypto.getRandomValues(new Uint32Array(2)).reduce((s, n) => s + n.toString(36), "").slice(0, 8).padEnd(8, "0");
}

/**
 * The epoch a durable channel has before its first publication, and keeps until a reset: derived
 * from the topic, so every node (and a subscribe before any publication) names the same one without
 * writing anything, and the store's first commit of the topic creates its row under it.
 */
export function initialEpoch(topic: string): string {
  const digest = new Bun.CryptoHasher("sha256").update(topic).digest();
  return (digest.readUInt32BE(0).toString(36) + digest.readUInt32BE(4).toString(36)).slice(0, 8).padEnd(8, "0");
}

/** A kept publication: its offset and its serialized frame. */
export interface Kept {
  offset: number;
  frame: string;
}

/**
 * Decides recovery from what a history keeps: `kept` are the kept publications with offsets,
 * oldest first, from the oldest kept (or at least from the first one after `since`).
 */
export function recoveryFrom(position: Position, since: Position, kept: readonly Kept[], retention: Retention, maxBytes: number): Recovery {
  const historyFrom = kept.length > 0 ? kept[0]!.offset : position.offset + 1;
  const fail = (reason: RecoveryFailure): Recovery => ({ position, recovered: false, publications: [], through: since.offset, reason, historyFrom });
  if (since.epoch !== position.epoch) return fail("epoch_changed");
  if (since.offset > position.offset) return fail("ahead");
  if (since.offset === position.offset) return { position, recovered: true, publications: [], through: since.offset, historyFrom };
  if (historyFrom > since.offset + 1) return fail(keepsHistory(retention) ? "trimmed" : "no_history");
  const first = pageOf(kept, since.offset, position.offset, maxBytes);
  return { position, recovered: true, publications: first.map((k) => k.frame), through: first.at(-1)?.offset ?? since.offset, historyFrom };
}

/** From `kept` (oldest first, consecutive offsets): those after `after` up to `upTo`, at most `maxBytes` of frames but at least one. */
export function pageOf(kept: readonly Kept[], after: number, upTo: number, maxBytes: number): Kept[] {
  const out: Kept[] = [];
  let bytes = 0;
  const start = kept.length > 0 ? Math.max(0, after + 1 - kept[0]!.offset) : 0;
  for (let i = start; i < kept.length; i++) {
    const entry = kept[i]!;
    if (entry.offset > upTo) break;
    bytes += entry.frame.length;
    if (bytes > maxBytes && out.length > 0) break;
    out.push(entry);
  }
  return out;
}

export function keepsHistory(retention: Retention): boolean {
  return retention.size > 0 && retention.ttlMs > 0;
}
