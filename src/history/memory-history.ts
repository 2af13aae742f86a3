import { LruList, type LruNode } from "./lru-list.ts";
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
  /** Its places in the order of use, of all topics and of its tenant's. */
  inAll: LruNode<TopicHistory>;
  inTenant: LruNode<TopicHistory>;
  epoch: string;
  offset: number;
  /** Kept publications, oldest first, from index `head` on. */
  entries: Entry[];
  head: number;
  lastAt: number;
  ttlMs: number;
}

/**
 * Kept publications in append order with their byte total, for one byte bound (all tenants, or one
 * tenant): past it the oldest go first. Entries dropped otherwise (size, age) are pruned lazily.
 */
class Ledger {
  private order: { topic: TopicHistory; entry: Entry }[] = [];
  private head = 0;
  bytes = 0;
  kept = 0;

  add(topic: TopicHistory, entry: Entry): void {
    this.order.push({ topic, entry });
    this.bytes += entry.frame.length;
    this.kept++;
  }

  removed(entry: Entry): void {
    this.bytes -= entry.frame.length;
    this.kept--;
  }

  /** Drops the oldest kept entries (through `drop`, which calls `removed`) until at most `maxBytes` are kept. */
  enforce(maxBytes: number, drop: (topic: TopicHistory) => void): void {
    while (this.bytes > maxBytes && this.head < this.order.length) {
      const { topic, entry } = this.order[this.head++]!;
      // Each topic's entries leave oldest first, so a live entry at the front is its topic's head.
      if (!entry.dropped) drop(topic);
    }
    this.compact();
  }

  /** Keeps `order` proportional to what is kept. */
  compact(): void {
    while (this.head < this.order.length && this.order[this.head]!.entry.dropped) this.head++;
    if (this.order.length - this.head > 2 * this.kept + 1024) {
      this.order = this.order.slice(this.head).filter((item) => !item.entry.dropped);
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.order.length) {
      this.order = this.order.slice(this.head);
      this.head = 0;
    }
  }
}


export interface MemoryHistoryLimits {
  /** Bound on the bytes of all kept publications together (HISTORY_MEMORY_MAX_BYTES). */
  maxBytes: number;
  /** The same per tenant (HISTORY_TENANT_MAX_BYTES): past it the tenant's own oldest go first. */
  maxBytesPerTenant: number;
  /** Topics with state (epoch, offset, kept publications), all tenants together (MAX_CHANNELS). */
  maxTopics: number;
  /** The same per tenant (MAX_CHANNELS_PER_TENANT). */
  maxTopicsPerTenant: number;
}

/**
 * History in process memory (see HistoryStore for the guarantees). Bounded five ways: per topic
 * by its retention (size and age); per tenant by `maxBytesPerTenant` and in total by `maxBytes`:
 * past either the oldest publications (of that tenant, or of all) go first, and a client that
 * needed them gets `recovered:false` ("trimmed"), so one tenant's volume trims its own history
 * before anyone else's; and in the
 * number of topics, in total and per tenant: past either bound the topic used least recently
 * (published to, subscribed to or recovered) is evicted whole, so it starts again under a new
 * epoch and a client that comes back with the old one gets `recovered:false` ("epoch_changed").
 * A tenant publishing to ever new channel names thus evicts its own channels first, never
 * another tenant's (unless the total bound is reached).
 * A restart loses everything; every topic then starts under a new epoch.
 */
export class MemoryHistory implements HistoryStore {
  /** Every topic with state. */
  private readonly topics = new Map<string, TopicHistory>();
  /** The same topics in the order they were last used, of all tenants and per tenant. */
  private readonly used = new LruList<TopicHistory>();
  private readonly byTenant = new Map<string, LruList<TopicHistory>>();
  /** Every kept entry, for the global byte bound. */
  private all = new Ledger();
  /** Kept entries per tenant, for the per-tenant byte bound. */
  private readonly ledgers = new Map<string, Ledger>();
  /** Topics evicted by the topic bounds since start (sinal_channels_evicted_total). */
  evicted = 0;
  private readonly limits: MemoryHistoryLimits;

  constructor(
    limits: Partial<MemoryHistoryLimits> = {},
    private readonly now: () => number = Date.now,
  ) {
    this.limits = { maxBytes: 256 * 1024 * 1024, maxBytesPerTenant: 64 * 1024 * 1024, maxTopics: 200_000, maxTopicsPerTenant: 20_000, ...limits };
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
      const ledger = this.ledgerOf(state.tenant);
      ledger.add(state, entry);
      this.all.add(state, entry);
      this.expire(state, at, retention.size);
      const drop = (topic: TopicHistory) => this.dropHead(topic);
      ledger.enforce(this.limits.maxBytesPerTenant, drop);
      this.all.enforce(this.limits.maxBytes, drop);
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
    // A topic's state (its epoch) stays however long it is idle: forgetting it would change the
    // epoch under its subscribers. The topic bounds evict the least recently used instead.
    for (const state of this.topics.values()) this.expire(state, now, Infinity);
    this.all.compact();
    for (const [tenant, ledger] of this.ledgers) {
      ledger.compact();
      if (ledger.kept === 0) this.ledgers.delete(tenant);
    }
  }

  async close(): Promise<void> {
    for (const state of [...this.topics.values()]) this.forget(state);
    this.ledgers.clear();
    this.all = new Ledger();
  }

  /** Kept publications and topics known, in all or for one tenant (tests and metrics). */
  stats(tenant?: string): { topics: number; publications: number; bytes: number } {
    if (tenant === undefined) return { topics: this.topics.size, publications: this.all.kept, bytes: this.all.bytes };
    const ledger = this.ledgers.get(tenant);
    return { topics: this.byTenant.get(tenant)?.size ?? 0, publications: ledger?.kept ?? 0, bytes: ledger?.bytes ?? 0 };
  }

  private ledgerOf(tenant: string): Ledger {
    let ledger = this.ledgers.get(tenant);
    if (ledger === undefined) this.ledgers.set(tenant, (ledger = new Ledger()));
    return ledger;
  }

  /** The topic's state, created if new (evicting past the bounds), and marked as used now. */
  private state(topic: string): TopicHistory {
    const state = this.topics.get(topic);
    if (state !== undefined) {
      this.used.touch(state.inAll);
      this.byTenant.get(state.tenant)!.touch(state.inTenant);
      return state;
    }
    const tenant = topic.slice(0, topic.indexOf("/"));
    let own = this.byTenant.get(tenant);
    if (own === undefined) this.byTenant.set(tenant, (own = new LruList()));
    if (own.size >= this.limits.maxTopicsPerTenant) this.evict(own.leastRecent()!);
    if (this.used.size >= this.limits.maxTopics) this.evict(this.used.leastRecent()!);
    // The list nodes point back at the state: set right after it exists.
    const fresh: TopicHistory = { topic, tenant, inAll: null!, inTenant: null!, epoch: randomEpoch(), offset: 0, entries: [], head: 0, lastAt: this.now(), ttlMs: 0 };
    fresh.inAll = this.used.push(fresh);
    fresh.inTenant = own.push(fresh);
    this.topics.set(topic, fresh);
    return fresh;
  }

  private evict(state: TopicHistory): void {
    this.forget(state);
    this.evicted++;
  }

  /** Drops a topic whole: its kept publications, its epoch and its offsets. */
  private forget(state: TopicHistory): void {
    if (this.topics.get(state.topic) !== state) return;
    this.dropAll(state);
    this.topics.delete(state.topic);
    this.used.remove(state.inAll);
    const own = this.byTenant.get(state.tenant)!;
    own.remove(state.inTenant);
    if (own.size === 0) this.byTenant.delete(state.tenant);
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
    this.all.removed(entry);
    this.ledgers.get(state.tenant)?.removed(entry);
  }

  private dropAll(state: TopicHistory): void {
    while (state.head < state.entries.length) this.dropHead(state);
  }
}
