import type { Channel } from "../channel.ts";
import type { ExpiredMember, MarkResult, MemberInfo, MemberKey, PresenceStore, StatusChange, StoredMember } from "./presence-store.ts";

interface Entry {
  client: string;
  expiresAt: number;
  /** Set anew with every expiry: ties of expiresAt go in seq order. */
  seq: number;
  /** Its timer in the heap, due at or before expiresAt; any other timer of this entry is stale. */
  timer: Timer | null;
  /** Marked active or idle (`mark`), or never marked. */
  mark: Mark | null;
}

type Mark = "active" | "idle";

interface MemberUser {
  info: MemberInfo;
  /** Its clients' entries: the one entry itself (the usual case), a map from two on, null when none. */
  clients: Entry | Map<string, Entry> | null;
  /** How many of its entries are marked, and how many of those active. */
  marked: number;
  active: number;
}

function setMark(user: MemberUser, entry: Entry, mark: Mark | null): void {
  if (entry.mark !== null) {
    user.marked--;
    if (entry.mark === "active") user.active--;
  }
  if (mark !== null) {
    user.marked++;
    if (mark === "active") user.active++;
  }
  entry.mark = mark;
}

function entryOf(user: MemberUser, client: string): Entry | undefined {
  const clients = user.clients;
  if (clients instanceof Map) return clients.get(client);
  return clients?.client === client ? clients : undefined;
}

function putEntry(user: MemberUser, entry: Entry): void {
  const clients = user.clients;
  if (clients === null) user.clients = entry;
  else if (clients instanceof Map) clients.set(entry.client, entry);
  else user.clients = new Map([[clients.client, clients], [entry.client, entry]]);
}

/** Removes a client's entry (and its mark); false when it had none. */
function dropEntry(user: MemberUser, client: string): boolean {
  const entry = entryOf(user, client);
  if (entry === undefined) return false;
  setMark(user, entry, null);
  const clients = user.clients;
  if (clients instanceof Map) {
    clients.delete(client);
    if (clients.size === 1) user.clients = clients.values().next().value!;
  } else {
    user.clients = null;
  }
  return true;
}

/** Decides the user's status again (see PresenceStore): true when it changed. */
function decide(user: MemberUser): boolean {
  if (user.marked === 0) return false;
  const chosen = user.info.chosen;
  const status = chosen !== undefined && chosen !== "online" ? chosen : user.active > 0 ? "online" : "away";
  if (user.info.status === status) return false;
  user.info = { ...user.info, status };
  return true;
}

function entriesOf(user: MemberUser): Iterable<Entry> {
  const clients = user.clients;
  if (clients === null) return [];
  return clients instanceof Map ? clients.values() : [clients];
}

interface ChannelMembers {
  channel: Channel;
  users: Map<string, MemberUser>;
}

/** One expiry to check: stale once its entry is gone or was given another expiry since. */
interface Timer {
  at: number;
  seq: number;
  topic: string;
  user: string;
  client: string;
}

const NO_INFO: MemberInfo = Object.freeze({});
/** The timer heap is rebuilt from the entries once it holds more than twice as many timers as entries plus this. */
const HEAP_SLACK = 64;

/**
 * PresenceStore in this process (one node); answers at once, never with a Promise, so the
 * presence service runs its policy synchronously with the socket events, as before. Keeps the
 * guarantees of presence-store.ts.
 *
 * Expiries are found through a min-heap of timers ordered by (time, seq), one live timer per
 * entry. A refresh that moves an expiry later (every live connection, every ~25 s) only updates
 * the entry: when its timer comes up, it is put back at the entry's new time. One that moves it
 * earlier adds a timer and leaves the old one stale, as a remove does; stale timers are skipped
 * when they come up, and the heap is compacted once they outnumber the entries: it never holds
 * more than 2 x entries + 64 timers.
 */
export class MemoryPresenceStore implements PresenceStore {
  /** topic -> its members, in the order they became members */
  private readonly channels = new Map<string, ChannelMembers>();
  private readonly heap: Timer[] = [];
  private entries = 0;
  private seq = 0;

  add(channel: Channel, member: MemberKey, expiresAt: number, info?: MemberInfo): boolean {
    let members = this.channels.get(channel.topic);
    if (members === undefined) {
      members = { channel, users: new Map() };
      this.channels.set(channel.topic, members);
    }
    let user = members.users.get(member.user);
    const joins = user === undefined;
    if (user === undefined) {
      user = { info: info ?? NO_INFO, clients: null, marked: 0, active: 0 };
      members.users.set(member.user, user);
    } else if (info !== undefined) {
      user.info = { ...user.info, ...info };
    }
    let entry = entryOf(user, member.client);
    if (entry === undefined) {
      entry = { client: member.client, expiresAt, seq: 0, timer: null, mark: null };
      putEntry(user, entry);
      this.entries++;
    }
    this.schedule(channel.topic, member, entry, expiresAt);
    return joins;
  }

  refresh(channel: Channel, member: MemberKey, expiresAt: number): boolean {
    const user = this.channels.get(channel.topic)?.users.get(member.user);
    const entry = user === undefined ? undefined : entryOf(user, member.client);
    if (entry === undefined) return false;
    this.schedule(channel.topic, member, entry, expiresAt);
    return true;
  }

  remove(channel: Channel, member: MemberKey): boolean {
    const members = this.channels.get(channel.topic);
    const user = members?.users.get(member.user);
    if (members === undefined || user === undefined || !dropEntry(user, member.client)) return false;
    this.entries--;
    // Its timer stays until due or compacted away: many removes in a row must not leave the heap large either.
    if (this.heap.length > 2 * this.entries + HEAP_SLACK) this.compact();
    return this.dropIfEmpty(members, member.user, user);
  }

  mark(channel: Channel, name: string, change: StatusChange): MarkResult | null {
    const user = this.channels.get(channel.topic)?.users.get(name);
    if (user === undefined) return null;
    if (change.clients !== undefined && change.active !== undefined) {
      const mark = change.active ? "active" : "idle";
      for (const client of change.clients) {
        const entry = entryOf(user, client);
        if (entry !== undefined) setMark(user, entry, mark);
      }
    }
    if (change.chosen !== undefined) user.info = { ...user.info, chosen: change.chosen };
    const changed = decide(user);
    return { info: user.info, changed };
  }

  members(channel: Channel): StoredMember[] {
    const members = this.channels.get(channel.topic);
    if (members === undefined) return [];
    return Array.from(members.users, ([user, { info }]) => ({ user, info }));
  }

  find(channel: Channel, users: readonly string[]): (MemberInfo | null)[] {
    const members = this.channels.get(channel.topic);
    return users.map((user) => members?.users.get(user)?.info ?? null);
  }

  expire(now: number): ExpiredMember[] {
    const expired: ExpiredMember[] = [];
    const heap = this.heap;
    while (heap.length > 0 && heap[0]!.at <= now) {
      const timer = pop(heap);
      const members = this.channels.get(timer.topic);
      const user = members?.users.get(timer.user);
      const entry = user === undefined ? undefined : entryOf(user, timer.client);
      if (entry === undefined || entry.timer !== timer) continue;
      if (entry.expiresAt !== timer.at || entry.seq !== timer.seq) {
        // Refreshed since: due later, or at this time but after what was set before it.
        entry.timer = { at: entry.expiresAt, seq: entry.seq, topic: timer.topic, user: timer.user, client: timer.client };
        push(heap, entry.timer);
        continue;
      }
      const marked = entry.mark !== null;
      dropEntry(user!, timer.client);
      this.entries--;
      if (this.dropIfEmpty(members!, timer.user, user!)) expired.push({ channel: members!.channel, user: timer.user, left: true, info: user!.info });
      else if (marked && decide(user!)) expired.push({ channel: members!.channel, user: timer.user, left: false, info: user!.info });
    }
    return expired;
  }

  /** What this store holds: member entries and expiry timers (stale ones included). For the bounds test. */
  held(): { channels: number; entries: number; timers: number } {
    return { channels: this.channels.size, entries: this.entries, timers: this.heap.length };
  }

  /** Forgets a user with no client left (and its channel once empty); true when it did. */
  private dropIfEmpty(members: ChannelMembers, name: string, user: MemberUser): boolean {
    if (user.clients !== null) return false;
    members.users.delete(name);
    if (members.users.size === 0) this.channels.delete(members.channel.topic);
    return true;
  }

  private schedule(topic: string, member: MemberKey, entry: Entry, expiresAt: number): void {
    entry.expiresAt = expiresAt;
    entry.seq = ++this.seq;
    // A timer due no later still comes up in time; it moves itself when it does (see expire).
    if (entry.timer !== null && entry.timer.at <= expiresAt) return;
    entry.timer = { at: expiresAt, seq: entry.seq, topic, user: member.user, client: member.client };
    push(this.heap, entry.timer);
    if (this.heap.length > 2 * this.entries + HEAP_SLACK) this.compact();
  }

  /** Rebuilds the heap from the live entries alone (O(entries)), dropping every stale timer. */
  private compact(): void {
    const heap = this.heap;
    heap.length = 0;
    for (const [topic, { users }] of this.channels) {
      for (const [user, member] of users) {
        for (const entry of entriesOf(member)) {
          entry.timer = { at: entry.expiresAt, seq: entry.seq, topic, user, client: entry.client };
          heap.push(entry.timer);
        }
      }
    }
    for (let i = (heap.length >> 1) - 1; i >= 0; i--) siftDown(heap, i);
  }
}

const before = (a: Timer, b: Timer) => a.at < b.at || (a.at === b.at && a.seq < b.seq);

function push(heap: Timer[], timer: Timer): void {
  heap.push(timer);
  let i = heap.length - 1;
  while (i > 0) {
    const parent = (i - 1) >> 1;
    if (!before(heap[i]!, heap[parent]!)) break;
    [heap[i], heap[parent]] = [heap[parent]!, heap[i]!];
    i = parent;
  }
}

function pop(heap: Timer[]): Timer {
  const top = heap[0]!;
  const last = heap.pop()!;
  if (heap.length > 0) {
    heap[0] = last;
    siftDown(heap, 0);
  }
  return top;
}

function siftDown(heap: Timer[], i: number): void {
  for (;;) {
    const left = 2 * i + 1;
    const right = left + 1;
    let first = i;
    if (left < heap.length && before(heap[left]!, heap[first]!)) first = left;
    if (right < heap.length && before(heap[right]!, heap[first]!)) first = right;
    if (first === i) return;
    [heap[i], heap[first]] = [heap[first]!, heap[i]!];
    i = first;
  }
}
