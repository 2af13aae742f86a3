/**
 * Edit locks on resources (`customer:77`), one holder at a time per tenant and resource.
 * Implementations: memory-locks.ts (one node).
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
  acquire(tenant: string, resource: string, user: string, connection: string, now: number, ttlMs: number, maxPerUser: number): AcquireResult;
  /** Releases it if `user` holds it; null when not held; throws nothing. `holder` tells who does if someone else. */
  release(tenant: string, resource: string, user: string): { released: Lock | null; heldBy: Lock | null };
  /** Releases every lock held through `connection`. */
  releaseConnection(tenant: string, connection: string): Lock[];
  /** Removes and returns locks whose TTL passed. */
  expire(now: number): { tenant: string; lock: Lock }[];
}
