import { BSON, type ChangeStream, type ChangeStreamDocument, type ChangeStreamOptions, type Collection, type Document, type MongoClient, type ResumeToken } from "mongodb";
import { Sleeper } from "./sleeper.ts";
import type { Channel } from "../channel.ts";
import type { Logger } from "../log.ts";
import { SinalError } from "../errors.ts";
import type { Publisher } from "../publisher.ts";
import type { FeedStore } from "../store/feed-store.ts";
import type { FeedConfig } from "./feed-config.ts";
import { FeedPosition } from "./feed-position.ts";
import { documentKey, renderChannel, resolveDocument, toPlain, type Plain } from "./feed-document.ts";
import { classifyFailure, FeedInvalidated, failureCode } from "./feed-errors.ts";
import type { FeedMetrics } from "./feed-metrics.ts";
import type { Placement, SnapshotCache } from "./snapshot-cache.ts";

export type FeedState = "starting" | "up" | "down";

export interface WatcherDeps {
  feed: FeedConfig;
  client: MongoClient;
  publisher: Publisher;
  positions: FeedStore;
  /** Fencing token of the lease term the watcher runs in: its position writes carry it (see FeedStore). */
  fence: number;
  cache: SnapshotCache;
  /**
   * Where the last leader left each document (a cluster's mirror, see SnapshotMirror): with it, a
   * watcher that resumes from a saved token carries on the channels' epochs (see loadSnapshot).
   * None on one node, whose channels' history does not outlive the process anyway.
   */
  placements?: () => Promise<Map<string, Placement>>;
  metrics: FeedMetrics;
  logger: Logger;
  /** Cap of the retry backoff in ms. */
  retryMaxMs: number;
}

/**
 * How often the resume token is written to the store when no change was published (the server's
 * post-batch token of an idle stream moves on); after a published change it is written at once.
 */
const TOKEN_SAVE_MS = 200;
/**
 * A getMore that comes back empty sooner than this is followed by a pause up to it: MongoDB
 * itself waits (awaitData, up to 1 s) so this never applies there, but an emulator that answers
 * at once would otherwise be polled in a tight loop.
 */
const MIN_POLL_MS = 10;
const RETRY_BASE_MS = 250;

/** Capped exponential backoff with jitter: half the ceiling fixed, half random. */
export function backoffMs(attempt: number, maxMs: number): number {
  const ceiling = Math.min(maxMs, RETRY_BASE_MS * 2 ** Math.min(attempt, 20));
  return ceiling / 2 + (Math.random() * ceiling) / 2;
}

/**
 * One feed: a change stream on one collection, published through the Publisher.
 *
 * Order of a session: open the stream (resuming after the saved token when there is one), read the
 * snapshot if the cache holds none, then publish every change in stream order. The token is taken
 * from the stream only after the change it follows was published, and saved right after (one
 * write at a time: the changes published while a write runs are covered by the next one), every
 * TOKEN_SAVE_MS when idle, and at stop: a restart resumes after the last published change, so
 * nothing is lost or repeated, and a new leader of the feed (FeedLeader) re-reads at most the
 * changes of one store write. Every publication carries the change's `_id` as its idempotency key
 * (see changeKey), so a history that keeps keys drops what a handover's overlap publishes again.
 * Failures: see feed-errors.ts (`down` retries and resumes in the same epoch; `lost` starts from
 * now with a fresh snapshot and new epochs). A handover on a cluster keeps the epochs (see
 * loadSnapshot). The loop never throws and never ends before stop().
 */
export class FeedWatcher {
  state: FeedState = "starting";
  /** Code of the last failure, for logs and /ready. */
  lastError: string | null = null;
  private stopping = false;
  private running: Promise<void> | null = null;
  private stream: ChangeStream | null = null;
  /** Publications of the change being applied, settled as null or their error (see `published`). */
  private pending: Promise<unknown>[] = [];
  /** Resume token after the last published change; null: none yet (start from now). */
  private token: ResumeToken | null = null;
  private readonly position: FeedPosition;
  /** The cache holds a snapshot consistent with `token`. */
  private loaded = false;
  private saveTimer: Timer | null = null;
  /** The store write in progress, if any; `saveAgain`: the token moved meanwhile, write it next. */
  private saving: Promise<void> | null = null;
  private saveAgain = false;
  private readonly sleeper = new Sleeper();
  private readonly source: string;

  constructor(private readonly deps: WatcherDeps) {
    this.source = `${deps.feed.db}.${deps.feed.collection}`;
    this.position = new FeedPosition(deps.positions, deps.feed.name, this.source, deps.fence, deps.logger);
  }

  get name(): string {
    return this.deps.feed.name;
  }

  /** Starts the loop in the background; never blocks and never throws. */
  start(): void {
    this.deps.metrics.setUp(this.name, false);
    this.running = this.run();
    this.saveTimer = setInterval(() => this.saveSoon(), TOKEN_SAVE_MS);
    // prevents the timer from keeping a stopping process alive
    this.saveTimer.unref();
  }

  /**
   * Stops publishing at once (no change is applied after this call), closes the stream and, with
   * `save`, saves the last token. Without: a leader that lost its lease, whose successor may have
   * saved a later token already; what it published was saved after each change.
   */
  async stop(save = true): Promise<void> {
    this.stopping = true;
    if (this.saveTimer) clearInterval(this.saveTimer);
    this.sleeper.wakeUp();
    await this.stream?.close().catch(() => undefined);
    await this.running;
    await this.saving;
    if (save) await this.saveToken();
  }

  private async run(): Promise<void> {
    this.token = await this.position.load();
    let attempt = 0;
    while (!this.stopping) {
      try {
        await this.session(() => (attempt = 0));
      } catch (err) {
        if (this.stopping) break;
        this.fail(err);
        const delay = backoffMs(attempt++, this.deps.retryMaxMs);
        this.deps.metrics.retried(this.name);
        await this.sleeper.sleep(delay);
      }
    }
  }

  private async session(onUp: () => void): Promise<void> {
    const { feed, client } = this.deps;
    // Explicitly: after a failed first connect the driver keeps a closed topology that operations
    // would reuse ("Topology is closed"); connect() replaces it, and is a no-op once connected.
    await client.connect();
    const collection = client.db(feed.db).collection(feed.collection);
    const options: ChangeStreamOptions = { fullDocument: "updateLookup" };
    if (this.token !== null) options.resumeAfter = this.token;
    const stream = collection.watch([], options);
    this.stream = stream;
    try {
      // Opens the cursor first: its starting point is fixed before the snapshot is read, so no
      // change falls between the two (a change already in the snapshot is applied again, harmlessly:
      // publications carry whole documents).
      let change = await stream.tryNext();
      if (!this.loaded) await this.loadSnapshot(collection);
      this.setState("up");
      onUp();
      for (;;) {
        if (this.stopping) return;
        if (change !== null) {
          this.apply(change);
          // A publication that failed throws here: the session restarts from the token before
          // this change, which is published again (never skipped, never stored as done).
          await this.published();
        }
        // Only now: the token covers the change just published (or the empty batch before it).
        this.token = stream.resumeToken ?? this.token;
        if (change !== null) this.saveSoon();
        if (this.stopping) return;
        const started = performance.now();
        change = await stream.tryNext();
        const waited = performance.now() - started;
        if (change === null && waited < MIN_POLL_MS) await this.sleeper.sleep(MIN_POLL_MS - waited);
      }
    } finally {
      this.stream = null;
      await stream.close().catch(() => undefined);
    }
  }

  private fail(err: unknown): void {
    const failure = classifyFailure(err);
    this.lastError = failureCode(err);
    this.setState("down");
    const log = this.deps.logger;
    if (failure.kind === "lost") {
      log.warn({ err, code: this.lastError, reason: failure.reason }, "feed position lost: restarting from now with a fresh snapshot and a new epoch");
      this.deps.metrics.lost(this.name, failure.reason);
      this.token = null;
      this.loaded = false;
      this.position.clear();
      return;
    }
    log.warn({ code: this.lastError, message: (err as Error).message }, "MongoDB unreachable: retrying");
    // Without a token (no change seen yet, no post-batch token from the server) a reconnect could
    // not tell what it missed: read a fresh snapshot (which also gives new epochs) instead.
    if (this.token === null) this.loaded = false;
  }

  private setState(state: FeedState): void {
    if (state === this.state) return;
    this.state = state;
    this.deps.metrics.setUp(this.name, state === "up");
    if (state === "up") {
      this.lastError = null;
      this.deps.logger.info({ source: this.source }, "feed up");
    }
  }

  /**
   * Reads the whole collection, then in ONE synchronous step replaces the cache and gives every
   * channel the feed has fed or now feeds a new epoch: no subscribe sees one without the other.
   *
   * Except at a handover on a cluster: resuming from a saved token with the last leader's
   * placements at hand, the channels keep their epochs, since the stream replays every change
   * after that token (those already published are dropped by their keys) and so their history
   * goes on without a gap. What a replay cannot tell is which channel a document deleted or moved
   * meanwhile left (a delete event carries only the `_id`; an update reads the document as it is
   * now): the placements say, and each such document is deleted from the channel it left (see
   * `correct`). Without placements (none were mirrored, or a Redis that lost them while documents
   * exist) the channels get new epochs as on a fresh start.
   */
  private async loadSnapshot(collection: Collection<Document>): Promise<void> {
    const { feed, cache, publisher, metrics } = this.deps;
    const before = this.token !== null && this.deps.placements !== undefined ? await this.deps.placements() : null;
    const entries = [];
    for await (const doc of collection.find({})) {
      const resolved = resolveDocument(feed, doc);
      if (resolved.ok) entries.push(resolved);
      else metrics.skip(feed.name, resolved.reason);
    }
    // Stopped meanwhile (a lost lease): no epoch may change any more.
    if (this.stopping) return;
    const handover = before !== null && (before.size > 0 || entries.length === 0);
    if (handover) {
      // The deletes are stored before the placements they come from are replaced (by `replace`
      // below): a leader that dies in between leaves its successor the same corrections to make.
      this.correct(before, entries);
      await this.published();
      if (this.stopping) return;
    }
    // A channel a correction left empty is known to the cache (touch), so its mirrored snapshot
    // is written anew (null) with the rest.
    const channels = cache.replace(entries);
    if (!handover) {
      for (const channel of channels) {
        const reset = publisher.resetEpoch(channel);
        if (reset instanceof Promise) this.pending.push(reset.then(() => null, (err: unknown) => err));
      }
    }
    await this.published();
    this.loaded = true;
    this.deps.logger.info({ documents: entries.length, channels: channels.length, epochs: handover ? "kept" : "new" }, "feed snapshot loaded");
  }

  /**
   * A handover: deletes each document from the channel the last leader placed it in when it is no
   * longer there (deleted, or moved to another channel, since). The key names this term, so a
   * next leader that finds the placements unchanged (this one died before replacing them)
   * publishes its own deletes again: a client may see a document deleted twice, never kept.
   */
  private correct(before: Map<string, Placement>, entries: readonly { key: string; channel: Channel }[]): void {
    const { feed, cache } = this.deps;
    const now = new Map(entries.map((entry) => [entry.key, entry.channel.topic]));
    for (const [key, { channel, id }] of before) {
      if (now.get(key) === channel.topic) continue;
      cache.touch(channel);
      this.publish(channel, feed.deleteEvent, { _id: id, deleted: true }, `feed:${feed.name}:handover:${this.deps.fence}:${key}`);
      this.deps.metrics.published(feed.name, "delete", null);
    }
  }

  private apply(change: ChangeStreamDocument): void {
    switch (change.operationType) {
      case "insert":
      case "update":
      case "replace":
        return this.applyDocument(change.operationType, change.fullDocument, change);
      case "delete":
        return this.applyDelete(change.documentKey?._id, change);
      case "invalidate":
      case "drop":
      case "rename":
      case "dropDatabase":
        throw new FeedInvalidated(this.name);
      default:
        // DDL events (create, createIndexes ...) change no document.
        return;
    }
  }

  private applyDocument(op: string, full: Document | null | undefined, change: ChangeStreamDocument): void {
    const { feed, cache, metrics } = this.deps;
    // updateLookup finds nothing when the document was deleted since: its delete event follows.
    if (full === null || full === undefined || full._id === undefined) return;
    const resolved = resolveDocument(feed, full);
    if (!resolved.ok) {
      metrics.skip(feed.name, resolved.reason);
      // A document that lost its tenant or channel field leaves the channel it fed.
      const id = toPlain(full._id);
      const previous = cache.remove(documentKey(id));
      if (previous !== undefined) this.publishDelete(previous, id, change, changeKey(feed.name, change));
      return;
    }
    const previous = cache.channelOf(resolved.key);
    if (previous !== undefined && previous.topic !== resolved.channel.topic) {
      cache.remove(resolved.key);
      // One change, two publications: each needs a key of its own (keys are per tenant, not per channel).
      this.publishDelete(previous, toPlain(full._id), change, `${changeKey(feed.name, change)}:left`);
    }
    // Same synchronous step: cache entry and publication (see SnapshotCache).
    cache.set(resolved.key, resolved.channel, resolved.data);
    this.publish(resolved.channel, feed.event, resolved.data, changeKey(feed.name, change));
    metrics.published(feed.name, op, clusterTimeMs(change));
  }

  private applyDelete(rawId: unknown, change: ChangeStreamDocument): void {
    const { feed, cache, metrics } = this.deps;
    const id = toPlain(rawId);
    let channel = rawId === undefined ? undefined : cache.remove(documentKey(id));
    // A fixed tenant and a template on _id alone need no memory of the document.
    if (channel === undefined && rawId !== undefined && feed.tenant.kind === "fixed") {
      channel = renderChannel(feed.channel, feed.tenant.tenant, { _id: id }) ?? undefined;
    }
    if (channel === undefined) {
      metrics.skip(feed.name, "unknown_document");
      return;
    }
    this.publishDelete(channel, id, change, changeKey(feed.name, change));
  }

  private publishDelete(channel: Channel, id: Plain, change: ChangeStreamDocument, key: string): void {
    this.deps.cache.touch(channel);
    this.publish(channel, this.deps.feed.deleteEvent, { _id: id, deleted: true }, key);
    this.deps.metrics.published(this.name, "delete", clusterTimeMs(change));
  }

  /** `key`: the publication's idempotency key in the channel's tenant (see changeKey). */
  private publish(channel: Channel, event: string, data: unknown, key: string): void {
    // Publisher.publish assigns the offset and fans out before it returns for memory channels (see
    // its comment): the snapshot cache and the publication change in one step. The outcome is
    // awaited by `published` before the change's resume token is taken.
    this.pending.push(
      this.deps.publisher.publish(channel, event, data, { key: { tenant: channel.tenant, key } }).then(
        () => null,
        (err: unknown) => {
          // A document too large to publish will never be: skipped and counted, the feed goes on.
          if (!(err instanceof SinalError && err.code === "payload_too_large")) return err;
          this.deps.metrics.skip(this.name, "too_large");
          this.deps.logger.warn({ channel: channel.name, message: err.message }, "feed document too large to publish: skipped");
          return null;
        },
      ),
    );
  }

  /** Waits for the publications of the change just applied; throws the first failure. */
  private async published(): Promise<void> {
    const pending = this.pending;
    this.pending = [];
    // Settled as values (never rejected), so one dropped by a failing session cannot go unhandled.
    const failed = (await Promise.all(pending)).find((outcome) => outcome !== null);
    if (failed !== undefined) throw failed;
  }

  /** Saves the token now, or right after the write in progress: never two writes at once, so never out of order. */
  private saveSoon(): void {
    if (this.saving !== null) {
      this.saveAgain = true;
      return;
    }
    this.saving = (async () => {
      do {
        this.saveAgain = false;
        await this.saveToken();
      } while (this.saveAgain && !this.stopping);
      this.saving = null;
    })();
  }

  private async saveToken(): Promise<void> {
    if (this.token !== null) await this.position.save(this.token);
  }

}

/**
 * The idempotency key of a change's publication: `feed:<feed>:<the change's _id>`. The `_id` is
 * the change's resume token, the same whichever node reads the change, so a new leader that
 * re-reads the overlap of a handover publishes each change under the key its predecessor used.
 * MongoDB's token is `{ _data: "<hex>" }`; any other shape is keyed by its canonical EJSON.
 */
export function changeKey(feed: string, change: ChangeStreamDocument): string {
  const id = change._id as { _data?: unknown } | undefined;
  const data = typeof id?._data === "string" ? id._data : BSON.EJSON.stringify((id ?? null) as BSON.Document, { relaxed: false });
  return `feed:${feed}:${data}`;
}

/** When the change happened: wallTime (ms) where the server sends it, else the cluster time (s). */
function clusterTimeMs(change: ChangeStreamDocument): number | null {
  const { wallTime, clusterTime } = change as { wallTime?: Date; clusterTime?: { t?: number; getHighBits?(): number } };
  if (wallTime instanceof Date) return wallTime.getTime();
  if (clusterTime === undefined) return null;
  const seconds = clusterTime.t ?? clusterTime.getHighBits?.();
  return typeof seconds === "number" ? seconds * 1000 : null;
}
