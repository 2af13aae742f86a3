import { keepsHistory, pageOf, randomEpoch, recoveryFrom, type Deliver, type Kept, type FrameBuilder, type HistoryStore, type Position, type Recovery, type Retention } from "./history.ts";

interface Entry {
  offset: number;
  frame: string;
  at: number;
  /** Dropped by size, age or the byte bound (it may still sit in the global order). */
  dropped: boolean;
}

interface TopicHistory {
  topic: string;
  tenant: string;
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

export interface MemoryHistoryLimits {
  /** Bound on the bytes of all kept publications together (HISTORY_MEMORY_MAX_BYTES). */
  maxBytes: number;
  /** Topics with state (epoch, offset, kept publications), all tenants together (MAX_CHANNELS). */
  maxTopics: number;
  /** The same per tenant (MAX_CHANNELS_PER_TENANT). */
  maxTopicsPerTenant: number;
}

/**
 * History in process memory (see HistoryStore for the guarantees). Bounded four ways: per topic
 * by its retention (size and age); in total by `maxBytes`: past it the oldest publications of all
 * topics go first, and a client that needed them gets `recovered:false` ("trimmed"); and in the
 * number of topics, in total and per tenant: past either bound the topic used least recently
 * (published to, subscribed to or recovered) is evicted whole, so it starts again under a new
 * epoch and a client that comes back with the old one gets `recovered:false` ("epoch_changed").
 * A tenant publishing to ever new channel names thus evicts its own channels first, never
 * another tenant's (unless the total bound is reached).
 * A restart loses everything; every topic then starts under a new epoch.
 */
export class MemoryHistory implements HistoryStore {
  /** Every topic with state, least recently used first (a use moves it to the end). */
  private readonly topics = new Map<string, TopicHistory>();
  /** The same topics per tenant, least recently used first. */
  private readonly byTenant = new Map<string, Map<string, TopicHistory>>();
  /** Every kept entry in append order, for the global byte bound. */
  private order: { topic: TopicHistory; entry: Entry }[] = [];
  private orderHead = 0;
  private bytes = 0;
  private kept = 0;
  /** Topics evicted by the topic bounds since start (sinal_channels_evicted_total). */
  evicted = 0;
  private readonly limits: MemoryHistoryLimits;

  constructor(
    limits: Partial<MemoryHistoryLimits> = {},
    private readonly now: () => number = Date.now,
  ) {
    this.limits = { maxBytes: 256 * 1024 * 1024, maxTopics: 200_000, maxTopicsPerTenant: 20_000, ...limits };
  }

  append(topic: string, build: FrameBuilder, retention: Retention, deliver: Deliver): { position: Position; frame: string } {
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
    deliver(position, frame);
    return { position, frame };
  }

  position(topic: string): Position {
    // A topic asked about gets its epoch now, so later publications continue under it.
    const state = this.state(topic);
    return { epoch: state.epoch, offset: state.offset };
  }

  recover(topic: string, since: Position, retention: Retention, maxBytes: number): Recovery {
    const state = this.state(topic);
    this.expire(state, this.now(), retention.size);
    const position = { epoch: state.epoch, offset: state.offset };
    return recoveryFrom(position, since, state.head === 0 ? state.entries : state.entries.slice(state.head), retention, maxBytes);
  }

  page(topic: string, epoch: string, after: number, upTo: number, retention: Retention, maxBytes: number): Kept[] | null {
    const state = this.topics.get(topic);
    if (state === undefined || state.epoch !== epoch) return null;
    this.expire(state, this.now(), retention.size);
    const first = state.entries[state.head];
    if (first === undefined || first.offset > after + 1) return null;
    return pageOf(state.head === 0 ? state.entries : state.entries.slice(state.head), after, upTo, maxBytes);
  }

  reset(topic: string): Position {
    const old = this.topics.get(topic);
    if (old !== undefined) this.forget(old);
    const state = this.state(topic);
    return { epoch: state.epoch, offset: 0 };
  }

  trim(now: number): void {
    for (const state of this.topics.values()) {
      this.expire(state, now, Infinity);
      if (state.entries.length === state.head && now - state.lastAt > Math.max(FORGET_IDLE_MS, state.ttlMs)) this.forget(state);
    }
    this.compactOrder();
  }

  async close(): Promise<void> {
    this.topics.clear();
    this.byTenant.clear();
    this.order = [];
    this.orderHead = 0;
    this.bytes = 0;
    this.kept = 0;
  }

  /** Kept publications and topics known, for tests and metrics. */
  stats(): { topics: number; publications: number; bytes: number } {
    return { topics: this.topics.size, publications: this.kept, bytes: this.bytes };
  }

  /** The topic's state, created if new (evicting past the bounds), and marked as used now. */
  private state(topic: string): TopicHistory {
    let state = this.topics.get(topic);
    if (state !== undefined) {
      // Re-inserted: the maps' order is the order of last use.
      this.topics.delete(topic);
      this.topics.set(topic, state);
      const own = this.byTenant.get(state.tenant)!;
      own.delete(topic);
      own.set(topic, state);
      return state;
    }
    const tenant = topic.slice(0, topic.indexOf("/"));
    let own = this.byTenant.get(tenant);
    if (own === undefined) this.byTenant.set(tenant, (own = new Map()));
    if (own.size >= this.limits.maxTopicsPerTenant) this.evict(own.values().next().value!);
    if (this.topics.size >= this.limits.maxTopics) this.evict(this.topics.values().next().value!);
    state = { topic, tenant, epoch: randomEpoch(), offset: 0, entries: [], head: 0, lastAt: this.now(), ttlMs: 0 };
    this.topics.set(topic, state);
    own.set(topic, state);
    return state;
  }

  private evict(state: TopicHistory): void {
    this.forget(state);
    this.evicted++;
  }

  /** Drops a topic whole: its kept publications, its epoch and its offsets. */
  private forget(state: TopicHistory): void {
    this.dropAll(state);
    this.topics.delete(state.topic);
    const own = this.byTenant.get(state.tenant);
    own?.delete(state.topic);
    if (own?.size === 0) this.byTenant.delete(state.tenant);
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
    while (this.bytes > this.limits.maxBytes && this.orderHead < this.order.length) {
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
