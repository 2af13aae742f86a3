/**
 * Edit locks on resources (`customer:77`), one holder at a time per tenant and resource.
 * Implementations: memory-locks.ts (one node); src/redis/redis-locks.ts (shared: one script per
 * call over the tenant's keys, a cluster-wide index of tenants with locks to sweep) keeps the same
 * guarantees for every node of a cluster:
 * - `acquire` is atomic per (tenant, resource): of two users racing for a free lock exactly one
 *   gets it; the quota check and the take are one step, so a user never holds more than
 *   `maxPerUser` however many nodes its connections are on.
 * - A lock not renewed for its TTL is free: `acquire` by anyone succeeds, and `expire` hands it
 *   out once, to one caller, so its `unlock` is announced once however many nodes sweep.
 * - `releaseConnection` releases exactly the locks taken or renewed through that connection id
 *   (ids are random and unique across nodes).
 * Every method is asynchronous: a shared store answers over the network.
 */
export interface Lock {
  resource: string;
  user: string;
  /** Connection that took or last renewed it: the lock goes when that connection closes. */
  connection: string;
  since: number;
  expiresAt: number;
}

/** Taken or renewed; refused because another user holds it; or refused because the user holds `maxPerUser` already. */
export type AcquireResult = { ok: true; lock: Lock; renewed: boolean } | { ok: false; lock: Lock } | { ok: false; lock: null; quota: number };

export interface Locks {
  /**
   * Takes the lock, or renews it for the same user (from any of its connections); refuses another
   * user, and a new lock for a user who holds `maxPerUser` already (a renewal always passes).
   */
  acquire(tenant: string, resource: string, user: string, connection: string, now: number, ttlMs: number, maxPerUser: number): Promise<AcquireResult>;
  /** Releases it if `user` holds it; null when not held; throws nothing. `holder` tells who does if someone else. */
  release(tenant: string, resource: string, user: string): Promise<{ released: Lock | null; heldBy: Lock | null }>;
  /** Releases every lock held through `connection`. */
  releaseConnection(tenant: string, connection: string): Promise<Lock[]>;
  /** Removes and returns locks whose TTL passed. */
  expire(now: number): Promise<{ tenant: string; lock: Lock }[]>;
}
