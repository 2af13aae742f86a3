/**
 * Presence of the users of a tenant. `online` while a user has at least one live connection,
 * `away` after the idle time without frames or when the client says so, `busy` when it says so,
 * `offline` when its last connection closes or dies. Changes are published (ephemeral, no offset)
 * as `presence` on the tenant's `presence` channel.
 * Implementations: memory-presence.ts (one node).
 */
export type PresenceStatus = "online" | "away" | "busy" | "offline";

/** What a client may choose for itself with the `presence` frame. */
export type ChosenStatus = Exclude<PresenceStatus, "offline">;

export interface PresenceEntry {
  user: string;
  name?: string;
  status: PresenceStatus;
}

export interface Presence {
  /** Users of the tenant who are not offline. */
  snapshot(tenant: string): PresenceEntry[];
  /** Status of each given user (offline when unknown). */
  statusOf(tenant: string, users: readonly string[]): PresenceEntry[];
}
