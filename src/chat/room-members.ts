import type { Channel } from "../channel.ts";
import type { ChatStore } from "../store/chat-store.ts";

/** How long a member list read from the store may admit someone before it is read again. */
export const MEMBERS_MAX_AGE_MS = 5_000;
/** How old a list may be when it refuses someone (RoomAccess reads it again past this). */
export const REFUSAL_MAX_AGE_MS = 1_000;
/**
 * Member ids cached, all rooms together (a room without members counts one): about 10 MB. Past
 * it the rooms read longest ago go first; a room with more members than this is never cached.
 */
const MAX_CACHED_IDS = 100_000;

const NONE: ReadonlySet<string> = new Set();

interface Entry {
  members: ReadonlySet<string>;
  /** performance.now() when the read that produced it started (or the local change). */
  readAt: number;
}

/**
 * The members of rooms as the access rule reads them, cached so a chat frame costs no store
 * round trip. Members live in the store, which every node of a cluster shares, and any node may
 * change them; so the cache promises only this:
 * - a list admits someone for at most MEMBERS_MAX_AGE_MS (5 s) after it was read: a member
 *   removed, or a room made private, on another node is admitted here at most that long;
 * - a refusal rests on a list read at most REFUSAL_MAX_AGE_MS (1 s) ago (RoomAccess asks `get`
 *   with that age before refusing): a member just added on another node gets in at once;
 * - a change made on this node (`PUT /v1/rooms/:room`) replaces the entry before the answer and
 *   before `conversation_updated` goes out (`remember`).
 * Not relying on `conversation_updated` reaching other nodes is deliberate: a node hears a room's
 * publications only while it has a subscriber to the room, but it also checks frames and REST
 * reads for rooms it holds no subscriber of.
 */
export class RoomMembers {
  private readonly entries = new Map<string, Entry>();
  /** Reads in flight per room: concurrent misses share one store read. */
  private readonly reading = new Map<string, Promise<ReadonlySet<string>>>();
  private cachedIds = 0;

  /** `now`: a monotonic clock in ms (tests pass their own). */
  constructor(
    private readonly store: Pick<ChatStore, "members">,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** The room's members: cached when read within `maxAgeMs`, else read from the store. */
  get(room: Channel, maxAgeMs = MEMBERS_MAX_AGE_MS): ReadonlySet<string> | Promise<ReadonlySet<string>> {
    const entry = this.entries.get(room.topic);
    if (entry !== undefined && this.now() - entry.readAt <= maxAgeMs) return entry.members;
    return this.reading.get(room.topic) ?? this.read(room);
  }

  /** The room's members as this node just stored them (a PUT): no read needed, no stale entry left. */
  remember(room: Channel, members: readonly string[]): void {
    this.put(room.topic, members.length === 0 ? NONE : new Set(members), this.now());
  }

  /** Another node changed the room's members: the next check reads them again. */
  forget(topic: string): void {
    const entry = this.entries.get(topic);
    if (entry !== undefined) this.drop(topic, entry);
  }

  private read(room: Channel): Promise<ReadonlySet<string>> {
    const startedAt = this.now();
    const read = this.store.members(room.tenant, room.id!).then(
      (list) => {
        this.reading.delete(room.topic);
        const members = list.length === 0 ? NONE : new Set(list);
        this.put(room.topic, members, startedAt);
        return members;
      },
      (err: unknown) => {
        this.reading.delete(room.topic);
        throw err;
      },
    );
    this.reading.set(room.topic, read);
    return read;
  }

  private put(topic: string, members: ReadonlySet<string>, readAt: number): void {
    const old = this.entries.get(topic);
    // A read that started before a local change must not replace what the change stored.
    if (old !== undefined && old.readAt > readAt) return;
    if (old !== undefined) this.drop(topic, old);
    const weight = Math.max(1, members.size);
    if (weight > MAX_CACHED_IDS) return;
    // Oldest first: Map keeps insertion order, and every read re-inserts its room.
    for (const [oldest, entry] of this.entries) {
      if (this.cachedIds + weight <= MAX_CACHED_IDS) break;
      this.drop(oldest, entry);
    }
    this.entries.set(topic, { members, readAt });
    this.cachedIds += weight;
  }

  private drop(topic: string, entry: Entry): void {
    this.entries.delete(topic);
    this.cachedIds -= Math.max(1, entry.members.size);
  }
}
