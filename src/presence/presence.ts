import type { Channel } from "../channel.ts";
import type { MaybePromise } from "../history/history.ts";

/**
 * Presence: who is connected in a tenant, and who is in each channel whose namespace keeps it
 * (`presence`) or announces it (`join_leave`), with the ephemeral events (no offset, never in
 * history) that announce changes. Implementation: presence-service.ts, the policy, over a
 * PresenceStore (presence-store.ts) that holds the members: memory-presence-store.ts for one
 * node; one shared by a cluster keeps the same guarantees across its nodes:
 *
 * - Membership is per user, never per connection or per node. A user is a member of its tenant
 *   while it has a live connection on any node, and of a channel while any of its connections, on
 *   any node, is subscribed to it: two tabs, or two connections on two nodes, are one member.
 * - Leave grace (PRESENCE_LEAVE_GRACE_MS). When a user's last connection leaves a scope (closes or
 *   dies; for a channel also unsubscribes), the user stays a member for the grace, with its last
 *   status. A connection of that user entering the scope within the grace continues the
 *   membership as if it never ended: a page reload announces nothing.
 * - Joins: a node announces one only when its connection made a member of a user who was none (no
 *   connection in the scope anywhere and no grace running): `presence` with its status on the
 *   tenant's `presence` channel; `user_joined` on a channel of a `join_leave` namespace, after the
 *   subscribe reply of the connection that made it. Never twice for one membership.
 * - Leaves: announced once the grace passed with no connection of the user in the scope, by
 *   exactly one node: `user_left` on a `join_leave` channel; `presence` `offline` for the tenant.
 *   Joins and leaves of one user in one scope alternate, a join first. A user's channel leaves
 *   that end with the same close go out before its `offline`.
 * - Status, over all of a user's connections on every node: `online`; `away` after
 *   PRESENCE_AWAY_AFTER_MS without a frame (a keepalive ping aside) on any of them, or when the
 *   client chooses it; `busy` when it chooses it. A status chosen on any connection holds for all
 *   of them and lasts until the client chooses again or the user goes `offline`. Only changes are
 *   published, each once.
 * - Connections of a node that stops without closing them (a crash) count as closed once the
 *   cluster knows the node is gone, so nobody stays a member for ever.
 */
export type PresenceStatus = "online" | "away" | "busy" | "offline";

/** What a client may choose for itself with the `presence` frame. */
export type ChosenStatus = Exclude<PresenceStatus, "offline">;

export interface PresenceEntry {
  user: string;
  name?: string;
  status: PresenceStatus;
}

/** The reads; each answers at once or with a Promise, as its store does. */
export interface Presence {
  /** Users of the tenant who are not offline (members in their grace included), each once. */
  snapshot(tenant: string): MaybePromise<PresenceEntry[]>;
  /** Status of each given user (offline when unknown). */
  statusOf(tenant: string, users: readonly string[]): MaybePromise<PresenceEntry[]>;
  /**
   * Members of a channel whose namespace has `presence`, each once however many connections it
   * has (members in their grace included), with its tenant-wide status.
   */
  members(channel: Channel): MaybePromise<PresenceEntry[]>;
}
