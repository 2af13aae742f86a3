import type { Channel } from "../channel.ts";
import type { MaybePromise } from "../history/history.ts";
import type { ChosenStatus, PresenceStatus } from "./presence.ts";

/** One member entry: a client (connection) of a user. A user is a member while any of its clients is. */
export interface MemberKey {
  readonly user: string;
  readonly client: string;
}

/** What is kept of a member user besides its clients (on the tenant's `presence` channel: its name and status). */
export interface MemberInfo {
  readonly name?: string;
  /** Decided by the store over the user's marked entries (see `mark`); absent until one was marked. */
  readonly status?: PresenceStatus;
  /** The status the user chose last (`mark`), on any node; kept while the user is a member. */
  readonly chosen?: ChosenStatus;
}

/** What `mark` changes of a member user before its status is decided again. */
export interface StatusChange {
  /** These entries (clients) of the user are marked `active` (true) or idle (false); entries it has not are skipped. */
  readonly clients?: readonly string[];
  readonly active?: boolean;
  /** The user's chosen status (`online` clears a chosen away or busy). */
  readonly chosen?: ChosenStatus;
}

export interface MarkResult {
  info: MemberInfo;
  changed: boolean;
}

export interface StoredMember {
  user: string;
  info: MemberInfo;
}

/**
 * What an expiry changed of a user: its last entry in the channel expired (`left`: it is no member
 * any more), or a marked entry of a user who is still a member expired and its status moved.
 */
export interface ExpiredMember {
  channel: Channel;
  user: string;
  left: boolean;
  /** Its info as it was last written (`left`), or with its new status. */
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
 *   time by one node come in the order that node set them. A user who stays a member but whose
 *   status moved because a marked entry expired (the active one of a node that died) is reported
 *   too, once, with its new status.
 * - Status is the user's, over every node: an entry may be marked active or idle (`mark`; entries
 *   never marked, such as a grace entry, do not count). The status is the chosen one when it is
 *   `away` or `busy`; otherwise `online` while any marked entry is active, `away` when all are
 *   idle; with no marked entry left (the user is in its grace) it stays what it was. It is decided
 *   again in the same atomic step as each `mark` and each expiry, and exactly one caller learns of
 *   each change (`mark`'s `changed`, or `expire`). `add` and `remove` do not decide it: a caller
 *   whose remove left the user a member asks with an empty `mark`.
 * - Members are listed each once, in the order they became members; a user whose membership
 *   went on through a grace (an entry expiring, a new one added before) keeps its place.
 * - Nothing outlives its entries: a channel, a user's info and all bookkeeping go with the last
 *   entry, so what is held is bounded by the live entries (connections x subscriptions) plus
 *   those in their grace. Entries of a node that stopped are never refreshed and expire after
 *   the TTL its node set.
 *
 * The Redis one (../redis/redis-presence-store.ts) keeps per channel a HASH user -> info, a ZSET
 * of users by join order for the listing, a ZSET of `user\0client` by expiry time (each entry
 * led by a sequence number, for the ties) and a HASH of the marks; one global ZSET of each channel's first entry, so
 * `expire` finds work without scanning; each call a Lua script. Nodes refresh their entries every
 * ~25 s with a TTL of 60 s.
 */
export interface PresenceStore {
  /**
   * Adds the member entry (not marked), or moves its expiry if it exists, until `expiresAt` (unix
   * ms). `info`, when given, is merged into the user's info (its fields replace those it names).
   * True when the user was no member of the channel before (a join); false when it was, by this
   * client or another (in its grace too).
   */
  add(channel: Channel, member: MemberKey, expiresAt: number, info?: MemberInfo): MaybePromise<boolean>;
  /** Moves an existing entry's expiry to `expiresAt`; false (and nothing changes) when there is no such entry. */
  refresh(channel: Channel, member: MemberKey, expiresAt: number): MaybePromise<boolean>;
  /** Removes the entry; true when that removed the user's last one (a leave), false otherwise or when there was none. */
  remove(channel: Channel, member: MemberKey): MaybePromise<boolean>;
  /**
   * Applies `change` to a member user and decides its status again (see above): its info and
   * whether the status changed by this call; null when the user is no member of the channel.
   */
  mark(channel: Channel, user: string, change: StatusChange): MaybePromise<MarkResult | null>;
  /** The channel's member users, each once, with their info (see the order above). */
  members(channel: Channel): MaybePromise<StoredMember[]>;
  /** The info of each given user, null for one that is no member, in the order asked. */
  find(channel: Channel, users: readonly string[]): MaybePromise<(MemberInfo | null)[]>;
  /** Removes the entries expired at `now`; the users that left by it (see above). */
  expire(now: number): MaybePromise<ExpiredMember[]>;
}
