import { GroupCommit } from "../group-commit.ts";
import type { ChannelLogStore, CommittedEntry, DurableEntry } from "../store/channel-log-store.ts";
import type { NewMessage, StoredMessage } from "../store/chat-store.ts";
import type { MessageHistoryStore } from "./channel-history.ts";
import { keepsHistory, randomEpoch, recoveryFrom, type FrameBuilder, type Position, type Recovery, type Retention } from "./history.ts";

interface TopicState {
  epoch: string;
  /** The last offset handed out inside a commit that may still be running. */
  assigned: number;
  /** The last offset committed: what recovery and positions report. */
  committed: number;
}

/**
 * History kept in the store (see HistoryStore for the guarantees): a channel keeps its epoch and
 * offsets across restarts. This is the one writer of its channels: every publication, and the
 * chat message a `new_message` announces, goes through one group commit; offsets are handed out
 * inside that commit's transaction, in call order, and roll back with it, so a failed commit
 * leaves no hole. An append resolves only after its commit: nothing is fanned out that a restart
 * could forget, and fan-out follows offset order.
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
  ) {
    // With history off (HISTORY_ROOM=off) only positions are written: epochs and offsets still survive restarts.
    const keep = keepsHistory(retention);
    this.writer = new GroupCommit((batch) => this.commit(batch, keep), commitIntervalMs);
  }

  async append(topic: string, build: FrameBuilder, _retention: Retention): Promise<{ position: Position; frame: string }> {
    const result = await this.writer.write({ topic, at: Date.now(), build: (position) => build(position) });
    if (result.duplicate) throw new Error("a publication without a message cannot be a duplicate");
    return result;
  }

  /**
   * Stores a chat message and its publication in one commit. A repeated client_msg_id returns
   * the first copy as a duplicate: no publication, no offset.
   */
  appendMessage(topic: string, message: NewMessage, build: (position: Position, stored: StoredMessage) => string): Promise<CommittedEntry> {
    return this.writer.write({ topic, at: message.createdAt, message, build: (position, stored) => build(position, stored!) });
  }

  async position(topic: string): Promise<Position> {
    const state = await this.stateOf(topic);
    return { epoch: state.epoch, offset: state.committed };
  }

  async recover(topic: string, since: Position, retention: Retention): Promise<Recovery> {
    const state = await this.stateOf(topic);
    const position = { epoch: state.epoch, offset: state.committed };
    const missed = position.offset - since.offset;
    if (since.epoch !== position.epoch || missed <= 0 || !keepsHistory(retention)) return recoveryFrom(position, since, [], retention);
    const kept = await this.store.read(topic, since.offset, position.offset, Date.now() - retention.ttlMs, Math.min(missed, retention.size));
    return recoveryFrom(position, since, kept, retention);
  }

  async reset(topic: string): Promise<Position> {
    // After what is queued: a reset never lands between a publication's offset and its commit.
    await this.writer.drain();
    const epoch = randomEpoch();
    await this.store.reset(topic, epoch);
    this.states.set(topic, { epoch, assigned: 0, committed: 0 });
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
      .catch(() => undefined)
      .finally(() => (this.trimming = false));
    // Positions of idle topics reload from the store when used again (none is mid-commit here:
    // commits run one at a time and hand out offsets only while they run).
    if (this.states.size > 100_000) {
      for (const [topic, state] of this.states) if (state.assigned === state.committed) this.states.delete(topic);
    }
  }

  /** Commits what is queued (a stopping server fans out nothing it has not stored). */
  async close(): Promise<void> {
    await this.writer.drain();
  }

  /** One group commit: positions loaded first, then one transaction that hands out the offsets. */
  private async commit(batch: DurableEntry[], keep: boolean): Promise<CommittedEntry[]> {
    for (const topic of new Set(batch.map((entry) => entry.topic))) await this.stateOf(topic);
    const before = new Map<string, number>();
    const assign = (topic: string): Position => {
      const state = this.states.get(topic)!;
      if (!before.has(topic)) before.set(topic, state.assigned);
      return { epoch: state.epoch, offset: ++state.assigned };
    };
    let results: CommittedEntry[];
    try {
      results = await this.store.commit(batch, keep, assign);
    } catch (err) {
      // Rolled back: the offsets it handed out were never used.
      for (const [topic, assigned] of before) this.states.get(topic)!.assigned = assigned;
      throw err;
    }
    for (const topic of before.keys()) {
      const state = this.states.get(topic)!;
      state.committed = state.assigned;
      this.appended.add(topic);
    }
    return results;
  }

  private async stateOf(topic: string): Promise<TopicState> {
    const known = this.states.get(topic);
    if (known !== undefined) return known;
    const stored = await this.store.position(topic);
    // Another caller may have loaded it meanwhile: keep the first, a commit may be using it.
    const existing = this.states.get(topic);
    if (existing !== undefined) return existing;
    const state = stored === null ? { epoch: randomEpoch(), assigned: 0, committed: 0 } : { epoch: stored.epoch, assigned: stored.offset, committed: stored.offset };
    this.states.set(topic, state);
    return state;
  }
}
