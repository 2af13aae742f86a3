import { GroupCommit } from "../group-commit.ts";
import type { ChannelLogStore, LoggedPublication } from "../store/channel-log-store.ts";
import { keepsHistory, randomEpoch, recoveryFrom, type FrameBuilder, type HistoryStore, type Position, type Recovery, type Retention } from "./history.ts";

interface TopicState {
  epoch: string;
  /** The last offset handed out (its commit may be pending). */
  assigned: number;
  /** The last offset committed: what recovery and positions report. */
  committed: number;
}

interface Waiting {
  build: FrameBuilder;
  resolve: (result: { position: Position; frame: string }) => void;
  reject: (err: unknown) => void;
}

/**
 * History kept in the store (see HistoryStore for the guarantees): a channel keeps its epoch and
 * offsets across restarts. Publications are written in group commits and a publication's append
 * resolves only after its commit, so nothing is fanned out that a restart could forget.
 * Offsets are handed out in memory, in call order, once the topic's stored position is loaded.
 * A failed commit leaves a hole in the offsets, so the topic then moves to a new epoch: clients
 * see `recovered:false` and reload, instead of a gap nobody announces.
 */
export class DurableHistory implements HistoryStore {
  private readonly states = new Map<string, TopicState>();
  /** Appends waiting for their topic's stored position, in call order. */
  private readonly loading = new Map<string, Waiting[]>();
  private readonly writer: GroupCommit<LoggedPublication, undefined>;
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
    this.writer = new GroupCommit(async (batch) => {
      await store.append(batch, keep);
      return batch.map(() => undefined);
    }, commitIntervalMs);
  }

  append(topic: string, build: FrameBuilder, _retention: Retention): Promise<{ position: Position; frame: string }> {
    const waiting = this.loading.get(topic);
    if (waiting !== undefined) return new Promise((resolve, reject) => waiting.push({ build, resolve, reject }));
    const state = this.states.get(topic);
    if (state !== undefined) return this.sequence(topic, state, build);
    return new Promise((resolve, reject) => {
      this.loading.set(topic, [{ build, resolve, reject }]);
      this.load(topic).then(
        (loaded) => {
          const queued = this.loading.get(topic)!;
          this.loading.delete(topic);
          // Synchronously, in call order: no later append can take an offset before these.
          for (const w of queued) this.sequence(topic, loaded, w.build).then(w.resolve, w.reject);
        },
        (err) => {
          const queued = this.loading.get(topic)!;
          this.loading.delete(topic);
          for (const w of queued) w.reject(err);
        },
      );
    });
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
    // Positions of idle topics (no commit pending) reload from the store when used again.
    if (this.states.size > 100_000) {
      for (const [topic, state] of this.states) if (state.assigned === state.committed && !this.loading.has(topic)) this.states.delete(topic);
    }
  }

  /** Commits what is queued (a stopping server fans out nothing it has not stored). */
  async close(): Promise<void> {
    await this.writer.drain();
  }

  private sequence(topic: string, state: TopicState, build: FrameBuilder): Promise<{ position: Position; frame: string }> {
    const position = { epoch: state.epoch, offset: ++state.assigned };
    const frame = build(position);
    this.appended.add(topic);
    return this.writer.write({ topic, epoch: position.epoch, offset: position.offset, frame, at: Date.now() }).then(
      () => {
        if (state.epoch === position.epoch && position.offset > state.committed) state.committed = position.offset;
        return { position, frame };
      },
      (err: unknown) => {
        if (state.epoch === position.epoch) {
          // Offsets up to `assigned` may be lost: start over under a new epoch (see the class comment).
          state.epoch = randomEpoch();
          state.assigned = 0;
          state.committed = 0;
        }
        throw err;
      },
    );
  }

  private async stateOf(topic: string): Promise<TopicState> {
    return this.states.get(topic) ?? (await this.load(topic));
  }

  private async load(topic: string): Promise<TopicState> {
    const stored = await this.store.position(topic);
    // Another caller may have loaded it meanwhile: keep the first, it may already hand out offsets.
    const existing = this.states.get(topic);
    if (existing !== undefined) return existing;
    const state = stored === null ? { epoch: randomEpoch(), assigned: 0, committed: 0 } : { epoch: stored.epoch, assigned: stored.offset, committed: stored.offset };
    this.states.set(topic, state);
    return state;
  }
}
