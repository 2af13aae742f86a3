import { GroupCommit } from "../group-commit.ts";
import type { ChannelLogStore, CommittedEntry, DurableEntry } from "../store/channel-log-store.ts";
import type { NewMessage, StoredMessage } from "../store/chat-store.ts";
import type { MessageHistoryStore } from "./channel-history.ts";
import { keepsHistory, randomEpoch, recoveryFrom, type Deliver, type Kept, type FrameBuilder, type IdempotencyKey, type Position, type Recovery, type Retention } from "./history.ts";

interface TopicState {
  epoch: string;
  /** The last offset handed out inside a commit that may still be running. */
  assigned: number;
  /** The last offset committed: what recovery and positions report. */
  committed: number;
  /** Commits using this state now: it must not be forgotten (a reload would miss their offsets). */
  inUse: number;
}

/**
 * History kept in the store (see HistoryStore for the guarantees): a channel keeps its epoch and
 * offsets across restarts. This is the one writer of its channels: every publication, and the
 * chat message a `new_message` announces, goes through one group commit; offsets are handed out
 * inside that commit's transaction, in call order, and roll back with it, so a failed commit
 * leaves no hole. An append is delivered (fanned out) only after its commit, and every entry of a
 * commit is delivered in turn, in offset order, in the step the commit completes: nothing is
 * fanned out that a restart could forget, and no entry of a commit can overtake another.
 * An idempotency key given with an append is stored in the same transaction as the publication:
 * a crash can never keep one without the other.
 * Positions are cached per topic, at most `maxTopics` of them (least recently used go first;
 * they reload from the store, epoch and offset unchanged).
 */
export class DurableHistory implements MessageHistoryStore {
  private readonly states = new Map<string, TopicState>();
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
  ) {
    // With history off (HISTORY_ROOM=off) only positions are written: epochs and offsets still survive restarts.
    const keep = keepsHistory(retention);
    this.writer = new GroupCommit((batch) => this.commit(batch, keep), commitIntervalMs);
  }

  async append(topic: string, build: FrameBuilder, _retention: Retention, deliver: Deliver, key?: IdempotencyKey): Promise<{ position: Position; frame: string }> {
    const result = await this.writer.write({ topic, at: Date.now(), build: (position) => build(position), deliver, idempotency: key });
    if (result.duplicate) throw new Error("a publication without a message cannot be a duplicate");
    return result;
  }

  /**
   * Stores a chat message and its publication in one commit. A repeated client_msg_id returns
   * the first copy as a duplicate: no publication, no offset, nothing delivered.
   */
  appendMessage(topic: string, message: NewMessage, build: (position: Position, stored: StoredMessage) => string, deliver: Deliver): Promise<CommittedEntry> {
    return this.writer.write({ topic, at: message.createdAt, message, build: (position, stored) => build(position, stored!), deliver });
  }

  async position(topic: string): Promise<Position> {
    const state = await this.stateOf(topic);
    return { epoch: state.epoch, offset: state.committed };
  }

  async recover(topic: string, since: Position, retention: Retention, maxBytes: number): Promise<Recovery> {
    const state = await this.stateOf(topic);
    const position = { epoch: state.epoch, offset: state.committed };
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
    const state = await this.stateOf(topic);
    if (state.epoch !== epoch || after < state.committed - retention.size) return null;
    const kept = await this.store.readFrom(topic, after, upTo, Date.now() - retention.ttlMs, maxBytes);
    return kept[0]?.offset === after + 1 ? kept : null;
  }

  async reset(topic: string): Promise<Position> {
    // After what is queued: a reset never lands between a publication's offset and its commit.
    await this.writer.drain();
    const epoch = randomEpoch();
    await this.store.reset(topic, epoch);
    this.states.set(topic, { epoch, assigned: 0, committed: 0, inUse: 0 });
    return { epoch, offset: 0 };
  }

  /** At most once a minute: deletes by age, and by size for the topics appended to since. */
  trim(now: number): void {
    if (this.trimming || now - this.lastTrimAt < 60_000) return;
    this.trimming = true;
    this.lastTrimAt = now;
    const topics = [...this.appended].map((topic) => ({ topic, upTo: (this.states.get(topic)?.committed ?? 0) - this.retention.size }));
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

  /** One group commit: positions loaded first, then one transaction that hands out the offsets. */
  private async commit(batch: DurableEntry[], keep: boolean): Promise<CommittedEntry[]> {
    const used = new Map<string, TopicState>();
    try {
      for (const topic of new Set(batch.map((entry) => entry.topic))) {
        const state = await this.stateOf(topic);
        state.inUse++;
        used.set(topic, state);
      }
      return await this.commitLoaded(batch, keep, used);
    } finally {
      for (const state of used.values()) state.inUse--;
    }
  }

  private async commitLoaded(batch: DurableEntry[], keep: boolean, used: Map<string, TopicState>): Promise<CommittedEntry[]> {
    const before = new Map<string, number>();
    const assign = (topic: string): Position => {
      const state = used.get(topic)!;
      if (!before.has(topic)) before.set(topic, state.assigned);
      return { epoch: state.epoch, offset: ++state.assigned };
    };
    let results: CommittedEntry[];
    try {
      results = await this.store.commit(batch, keep, assign);
    } catch (err) {
      // Rolled back: the offsets it handed out were never used.
      for (const [topic, assigned] of before) used.get(topic)!.assigned = assigned;
      throw err;
    }
    for (const topic of before.keys()) {
      const state = used.get(topic)!;
      state.committed = state.assigned;
      // Bounded: a topic left out is trimmed to its size at its next append after a trim.
      if (this.appended.size < this.maxTopics) this.appended.add(topic);
    }
    // In offset order, in this same step: see HistoryStore on fan-out order.
    for (let i = 0; i < batch.length; i++) {
      const result = results[i]!;
      if (!result.duplicate) batch[i]!.deliver(result.position, result.frame);
    }
    return results;
  }

  private async stateOf(topic: string): Promise<TopicState> {
    const known = this.states.get(topic);
    if (known !== undefined) {
      // Re-inserted: the map's order is the order of last use.
      this.states.delete(topic);
      this.states.set(topic, known);
      return known;
    }
    const stored = await this.store.position(topic);
    // Another caller may have loaded it meanwhile: keep the first, a commit may be using it.
    const existing = this.states.get(topic);
    if (existing !== undefined) return existing;
    const state = stored === null ? { epoch: randomEpoch(), assigned: 0, committed: 0, inUse: 0 } : { epoch: stored.epoch, assigned: stored.offset, committed: stored.offset, inUse: 0 };
    this.forgetIdle();
    this.states.set(topic, state);
    return state;
  }

  /**
   * Past `maxTopics`, forgets the positions used least recently; they reload from the store.
   * A topic whose offsets a commit is handing out (assigned ahead of committed) is kept: its
   * state is the only record of them until the commit ends.
   */
  private forgetIdle(): void {
    if (this.states.size < this.maxTopics) return;
    for (const [topic, state] of this.states) {
      if (this.states.size < this.maxTopics * 0.9) break;
      if (state.inUse === 0 && state.assigned === state.committed) this.states.delete(topic);
    }
  }
}
