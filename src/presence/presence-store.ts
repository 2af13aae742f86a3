import type { Channel } from "../channel.ts";
import type { MaybePromise } from "../history/history.ts";
import type { PresenceStatus } from "./presence.ts";

/** One member entry: a client (connection) of a user. A user is a member while any of its clients is. */
export interface MemberKey {
  readonly user: string;
  readonly client: string;
}

/** What is kept of a member user besides its clients (on the tenant's `presence` channel: its name and status). */
export interface MemberInfo {
  readonly name?: string;
  readonly status?: PresenceStatus;
}

export interface StoredMember {
  user: string;
  info: MemberInfo;
}

/** A user whose last client entry in a channel expired: it is no member any more. */
export interface ExpiredMember {
  channel: Channel;
  user: string;
  /** Its info as it was last written. */
  info: MemberInfo;
}

/**
 * Who is in which channel: per channel (tenant included: every call takes a parsed Channel, so
 * two tenants never share an entry), the clients of each member user, each with an expiry time
 * its node sets and refreshes. The presence service (presence-service.ts) decides what the
 * entries mean (a live connection is refreshed to now + a TTL every so often; a connection that
 * left is given now + the leave grace) and what to announce; the store only keeps them.
 * Implementations: memory-presence-store.ts (one node), ../redis/redis-presence-store.ts (shared
 * by the nodes of a cluster). Guarantees every implementation keeps:
 *
 * - Atomic per channel: `add`, `refresh`, `remove` and the removal of one expired entry each
 *   change one channel at once; whether the user was a member before (`add`) or is none after
 *   (`remove`, `expire`) is answered from that same change, so among all nodes exactly one
 *   caller learns of each join and each leave.
 * - Ordered per node: calls one node makes take effect in the order it made them (the memory
 *   store answers at once; a Redis one pipelines them on one connection), so a subscribe's `add`
 *   is never overtaken by its close's `refresh`.
 * - `expire(now)` removes every entry whose expiry time is at or before `now`, across all
 *   tenants, and reports each user that had no entry left, once (with many nodes expiring
 *   together, exactly one of them reports it), in expiry order; entries given the same expiry
 *   time by one node come in the order that node set them.
 * - Members are listed each once, in the order they became members; a user whose membership
 *   went on through a grace (an entry expiring, a new one added before) keeps its place.
 * - Nothing outlives its entries: a channel, a user's info and all bookkeeping go with the last
 *   entry, so what is held is bounded by the live entries (connections x subscriptions) plus
 *   those in their grace. Entries of a node that stopped are never refreshed and expire after
 *   the TTL its node set.
 *
 * The Redis one (../redis/redis-presence-store.ts) keeps per channel a HASH user -> info, a ZSET
 * of users by join order for the listing and a ZSET of `user\0client` by expiry time (each entry
 * led by a sequence number, for the ties); one global ZSET of each channel's first entry, so
 * `expire` finds work without scanning; each call a Lua script. Nodes refresh their entries every
 * ~25 s with a TTL of 60 s.
 */
export interface PresenceStore {
  /**
   * Adds the member entry, or moves its expiry if it exists, until `expiresAt` (unix ms). `info`,
   * when given, replaces the user's info (kept otherwise). True when the user was no member of
   * the channel before (a join); false when it was, by this client or another (in its grace too).
   */
  add(channel: Channel, member: MemberKey, expiresAt: number, info?: MemberInfo): MaybePromise<boolean>;
  /** Moves an existing entry's expiry to `expiresAt`; false (and nothing changes) when there is no such entry. */
  refresh(channel: Channel, member: MemberKey, expiresAt: number): MaybePromise<boolean>;
  /** Removes the entry; true when that removed the user's last one (a leave), false otherwise or when there was none. */
  remove(channel: Channel, member: MemberKey): MaybePromise<boolean>;
  /** The channel's member users, each once, with their info (see the order above). */
  members(channel: Channel): MaybePromise<StoredMember[]>;
  /** The info of each given user, null for one that is no member, in the order asked. */
  find(channel: Channel, users: readonly string[]): MaybePromise<(MemberInfo | null)[]>;
  /** Removes the entries expired at `now`; the users that left by it (see above). */
  expire(now: number): MaybePromise<ExpiredMember[]>;
}
