import { keepsHistory, randomEpoch, recoveryFrom, type FrameBuilder, type HistoryStore, type Position, type Recovery, type Retention } from "./history.ts";

interface Entry {
  offset: number;
  frame: string;
  at: number;
  /** Dropped by size, age or the byte bound (it may still sit in the global order). */
  dropped: boolean;
}

interface TopicHistory {
  epoch: string;
  offset: number;
  /** Kept publications, oldest first, from index `head` on. */
  entries: Entry[];
  head: number;
  lastAt: number;
  ttlMs: number;
}

/** A topic with nothing kept and no publication for this long is forgotten (its epoch with it). */
const FORGET_IDLE_MS = 60 * 60 * 1000;

/**
 * History in process memory (see HistoryStore for the guarantees). Bounded three ways: per topic
 * by its retention (size and age), and in total by `maxBytes`: past it the oldest publications
 * of all topics go first, and a client that needed them gets `recovered:false` ("trimmed").
 * A restart loses everything; every topic then starts under a new epoch.
 */
export class MemoryHistory implements HistoryStore {
  private readonly topics = new Map<string, TopicHistory>();
  /** Every kept entry in append order, for the global byte bound. */
  private order: { topic: TopicHistory; entry: Entry }[] = [];
  private orderHead = 0;
  private bytes = 0;
  private kept = 0;

  constructor(
    private readonly maxBytes = 256 * 1024 * 1024,
    private readonly now: () => number = Date.now,
  ) {}

  append(topic: string, build: FrameBuilder, retention: Retention): { position: Position; frame: string } {
    const state = this.state(topic);
    const at = this.now();
    state.offset++;
    state.lastAt = at;
    state.ttlMs = retention.ttlMs;
    const position = { epoch: state.epoch, offset: state.offset };
    const frame = build(position);
    if (keepsHistory(retention)) {
      const entry = { offset: state.offset, frame, at, dropped: false };
      state.entries.push(entry);
      this.order.push({ topic: state, entry });
      this.bytes += frame.length;
      this.kept++;
      this.expire(state, at, retention.size);
      this.enforceBytes();
    }
    return { position, frame };
  }

  position(topic: string): Position {
    // A topic asked about gets its epoch now, so later publications continue under it.
    const state = this.state(topic);
    return { epoch: state.epoch, offset: state.offset };
  }

  recover(topic: string, since: Position, retention: Retention): Recovery {
    const state = this.state(topic);
    this.expire(state, this.now(), retention.size);
    const position = { epoch: state.epoch, offset: state.offset };
    return recoveryFrom(position, since, state.head === 0 ? state.entries : state.entries.slice(state.head), retention);
  }

  reset(topic: string): Position {
    const old = this.topics.get(topic);
    if (old !== undefined) this.dropAll(old);
    const state = this.fresh();
    this.topics.set(topic, state);
    return { epoch: state.epoch, offset: 0 };
  }

  trim(now: number): void {
    for (const [topic, state] of this.topics) {
      this.expire(state, now, Infinity);
      if (state.entries.length === state.head && now - state.lastAt > Math.max(FORGET_IDLE_MS, state.ttlMs)) this.topics.delete(topic);
    }
    this.compactOrder();
  }

  async close(): Promise<void> {
    this.topics.clear();
    this.order = [];
    this.orderHead = 0;
    this.bytes = 0;
    this.kept = 0;
  }

  /** Kept publications and topics known, for tests and metrics. */
  stats(): { topics: number; publications: number; bytes: number } {
    return { topics: this.topics.size, publications: this.kept, bytes: this.bytes };
  }

  private state(topic: string): TopicHistory {
    let state = this.topics.get(topic);
    if (state === undefined) {
      state = this.fresh();
      this.topics.set(topic, state);
    }
    return state;
  }

  private fresh(): TopicHistory {
    return { epoch: randomEpoch(), offset: 0, entries: [], head: 0, lastAt: this.now(), ttlMs: 0 };
  }

  /** Drops the entries past the topic's size or older than its ttl. */
  private expire(state: TopicHistory, now: number, size: number): void {
    const oldest = now - state.ttlMs;
    while (state.head < state.entries.length && (state.entries.length - state.head > size || state.entries[state.head]!.at < oldest)) {
      this.dropHead(state);
    }
    if (state.head > 64 && state.head * 2 > state.entries.length) {
      state.entries = state.entries.slice(state.head);
      state.head = 0;
    }
  }

  private dropHead(state: TopicHistory): void {
    const entry = state.entries[state.head++]!;
    entry.dropped = true;
    this.bytes -= entry.frame.length;
    this.kept--;
  }

  private dropAll(state: TopicHistory): void {
    while (state.head < state.entries.length) this.dropHead(state);
  }

  /** Past maxBytes, the oldest kept publications (of any topic) go first. */
  private enforceBytes(): void {
    while (this.bytes > this.maxBytes && this.orderHead < this.order.length) {
      const { topic, entry } = this.order[this.orderHead++]!;
      // Each topic's entries leave oldest first, so a live entry at the front is its topic's head.
      if (!entry.dropped) this.dropHead(topic);
    }
    this.compactOrder();
  }

  /** Keeps `order` proportional to what is kept: entries dropped by size or age are pruned from it. */
  private compactOrder(): void {
    while (this.orderHead < this.order.length && this.order[this.orderHead]!.entry.dropped) this.orderHead++;
    if (this.order.length - this.orderHead > 2 * this.kept + 1024) {
      this.order = this.order.slice(this.orderHead).filter((item) => !item.entry.dropped);
      this.orderHead = 0;
    } else if (this.orderHead > 1024 && this.orderHead * 2 > this.order.length) {
      this.order = this.order.slice(this.orderHead);
      this.orderHead = 0;
    }
  }
}
