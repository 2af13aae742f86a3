import { GroupCommit } from "../group-commit.ts";
import type { ChannelLogStore, CommittedEntry, DurableEntry } from "../store/channel-log-store.ts";
import type { NewMessage, StoredMessage } from "../store/chat-store.ts";
import type { MessageHistoryStore } from "./channel-history.ts";
import { initialEpoch, keepsHistory, randomEpoch, recoveryFrom, type Deliver, type DeliveredPositions, type Kept, type FrameBuilder, type IdempotencyKey, type Position, type Recovery, type Retention } from "./history.ts";

/**
 * History kept in the store (see HistoryStore for the guarantees): a channel keeps its epoch and
 * offsets across restarts. Every publication, and the chat message a `new_message` announces, goes
 * through one group commit; the store assigns the offsets inside that commit's transaction (see
 * ChannelLogStore), so no counter lives in this process, several nodes can write one database, and
 * a failed commit leaves no hole. An append is delivered (fanned out) only after its commit, and
 * every entry of a commit is delivered in turn, in offset order, in the step the commit completes:
 * nothing is fanned out that a restart could forget, and no entry of a commit can overtake another.
 * An idempotency key given with an append is stored in the same transaction as the publication.
 *
 * Positions: the position a subscribe is told must never name an offset this node has not fanned
 * out yet (the client would be sent that publication after a reply that claims it). So positions
 * come from what was delivered: `delivered` remembers, per topic, the position of the last
 * publication fanned out (a cache, at most `maxTopics` topics, least recently used forgotten; it
 * is never used to hand out an offset). A topic not in it is read from the store, after this
 * node's commits of it in flight have been delivered. In a cluster, the broker's deliveries from
 * other nodes feed it too (`delivered(topic, position)`), so it stays what this node fanned out.
 */
export class DurableHistory implements MessageHistoryStore {
  private readonly known = new Map<string, Position>();
  /** Appends per topic queued or committing on this node: counted at `write`, uncounted when their commit ends. */
  private readonly pending = new Map<string, number>();
  /** Settles when the commit running (or the next one) ends, delivered or failed. */
  private commitEnd: PromiseWithResolvers<void> | null = null;
  private readonly writer: GroupCommit<DurableEntry, CommittedEntry>;
  private trimming = false;
  private lastTrimAt = 0;
  /** Topics appended to since the last trim: only they can hold more than `retention.size`. */
  private readonly appended = new Set<string>();

  constructor(
    private readonly store: ChannelLogStore,
    commitIntervalMs: number,
    private readonly retention: Retention,
    private readonly maxTopics = 200_000,
    /** A trim that failed (it runs in the background; the next one tries again). */
    private readonly onTrimError: (err: unknown) => void = () => undefined,
    /** On a cluster, what this node delivered of each topic (the broker's): positions come from there. */
    private readonly positions?: DeliveredPositions,
  ) {
    // With history off (HISTORY_ROOM=off) only positions are written: epochs and offsets still survive restarts.
    const keep = keepsHistory(retention);
    this.writer = new GroupCommit((batch) => this.commit(batch, keep), commitIntervalMs);
  }

  async append(topic: string, build: FrameBuilder, _retention: Retention, deliver: Deliver, key?: IdempotencyKey): Promise<{ position: Position; frame: string }> {
    const result = await this.write({ topic, at: Date.now(), build: (position) => build(position), deliver, idempotency: key });
    if (result.duplicate) throw new Error("a publication without a message cannot be a duplicate");
    return result;
  }

  /**
   * Stores a chat message and its publication in one commit. A repeated client_msg_id returns
   * the first copy as a duplicate: no publication, no offset, nothing delivered.
   */
  appendMessage(topic: string, message: NewMessage, build: (position: Position, stored: StoredMessage) => string, deliver: Deliver): Promise<CommittedEntry> {
    return this.write({ topic, at: message.createdAt, message, build: (position, stored) => build(position, stored!), deliver });
  }

  /** Where `topic` stands as this node fanned it out: at once when known, else from the store. */
  position(topic: string): Position | Promise<Position> {
    return this.remembered(topic) ?? this.load(topic);
  }

  /** A publication of `topic` was fanned out on this node at `position` (see the class comment). */
  delivered(topic: string, position: Position): void {
    const known = this.known.get(topic);
    if (known !== undefined) {
      if (known.epoch === position.epoch && known.offset >= position.offset) return;
      this.known.delete(topic);
    } else if (this.known.size >= this.maxTopics) {
      this.forgetOldest();
    }
    this.known.set(topic, position);
  }

  async recover(topic: string, since: Position, retention: Retention, maxBytes: number): Promise<Recovery> {
    const position = await this.position(topic);
    const upToDate = since.epoch === position.epoch && since.offset === position.offset;
    if (upToDate || !keepsHistory(retention)) return recoveryFrom(position, since, [], retention, maxBytes);
    const replays = since.epoch === position.epoch && since.offset < position.offset;
    // Past the retention size nothing older is kept, even before the next trim deletes it.
    const oldest = Math.max(0, position.offset - retention.size);
    // Without a replay only the oldest kept one is read, for `history_from`.
    const kept = await this.store.readFrom(topic, replays ? Math.max(since.offset, oldest) : oldest, position.offset, Date.now() - retention.ttlMs, replays ? maxBytes : 0);
    return recoveryFrom(position, since, kept, retention, maxBytes);
  }

  async page(topic: string, epoch: string, after: number, upTo: number, retention: Retention, maxBytes: number): Promise<Kept[] | null> {
    const position = await this.position(topic);
    if (position.epoch !== epoch || after < position.offset - retention.size) return null;
    const kept = await this.store.readFrom(topic, after, upTo, Date.now() - retention.ttlMs, maxBytes);
    return kept[0]?.offset === after + 1 ? kept : null;
  }

  async reset(topic: string): Promise<Position> {
    // After what is queued: a reset never lands between a publication's offset and its commit.
    await this.writer.drain();
    const epoch = randomEpoch();
    await this.store.reset(topic, epoch);
    const position = { epoch, offset: 0 };
    this.known.delete(topic);
    this.delivered(topic, position);
    return this.positions?.reset(topic, position) ?? position;
  }

  /** At most once a minute: deletes by age, and by size for the topics appended to since. */
  trim(now: number): void {
    if (this.trimming || now - this.lastTrimAt < 60_000) return;
    this.trimming = true;
    this.lastTrimAt = now;
    const topics = [...this.appended].map((topic) => ({ topic, upTo: (this.known.get(topic)?.offset ?? 0) - this.retention.size }));
    this.appended.clear();
    this.store
      .trim(now - this.retention.ttlMs, topics.filter((t) => t.upTo > 0))
      .catch((err: unknown) => this.onTrimError(err))
      .finally(() => (this.trimming = false));
  }

  /** Commits what is queued (a stopping server fans out nothing it has not stored). */
  async close(): Promise<void> {
    await this.writer.drain();
  }

  /** Queues an entry, counted as pending for its topic until its commit ends. */
  private write(entry: DurableEntry): Promise<CommittedEntry> {
    this.pending.set(entry.topic, (this.pending.get(entry.topic) ?? 0) + 1);
    return this.writer.write(entry);
  }

  /** One group commit: the store assigns the offsets; then every entry is delivered in order, in this step. */
  private async commit(batch: DurableEntry[], keep: boolean): Promise<CommittedEntry[]> {
    try {
      const results = await this.store.commit(batch, keep);
      for (let i = 0; i < batch.length; i++) {
        const result = results[i]!;
        if (result.duplicate) continue;
        const { topic } = batch[i]!;
        this.delivered(topic, result.position);
        // Bounded: a topic left out is trimmed to its size at its next append after a trim.
        if (this.appended.size < this.maxTopics) this.appended.add(topic);
        // In offset order, in this same step: see HistoryStore on fan-out order.
        batch[i]!.deliver(result.position, result.frame);
      }
      return results;
    } finally {
      for (const { topic } of batch) {
        const left = this.pending.get(topic)! - 1;
        if (left === 0) this.pending.delete(topic);
        else this.pending.set(topic, left);
      }
      const ended = this.commitEnd;
      this.commitEnd = null;
      ended?.resolve();
    }
  }

  /** The delivered position of `topic` if known, marked as used just now. */
  private remembered(topic: string): Position | undefined {
    if (this.positions !== undefined) return this.positions.get(topic);
    const known = this.known.get(topic);
    if (known !== undefined) {
      // Re-inserted: the map's order is the order of last use.
      this.known.delete(topic);
      this.known.set(topic, known);
    }
    return known;
  }

  /**
   * Reads a position from the store. A commit of this topic in flight on this node may already be
   * visible there but not yet delivered: wait for it, then answer what it delivered.
   */
  private async load(topic: string): Promise<Position> {
    // On a cluster: read only once this node receives every later publication of the topic.
    await this.positions?.ready(topic);
    for (;;) {
      if (this.pending.has(topic)) {
        await (this.commitEnd ??= Promise.withResolvers()).promise;
      } else {
        const stored = await this.store.position(topic);
        if (!this.pending.has(topic) && this.remembered(topic) === undefined) {
          const position = stored ?? { epoch: initialEpoch(topic), offset: 0 };
          this.delivered(topic, position);
          return this.positions?.seed(topic, position) ?? position;
        }
      }
      const known = this.remembered(topic);
      if (known !== undefined) return known;
    }
  }

  /** Past `maxTopics`: forgets the tenth used least recently (they reload from the store). */
  private forgetOldest(): void {
    let drop = Math.ceil(this.maxTopics / 10);
    for (const topic of this.known.keys()) {
      if (drop-- <= 0) break;
      this.known.delete(topic);
    }
  }
}
