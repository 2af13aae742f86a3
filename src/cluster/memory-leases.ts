import type { Leases } from "./lease.ts";

interface Holding {
  holder: string;
  token: number;
  /** performance.now() past which the holding is over. */
  expiresAt: number;
}

/**
 * Leases in this process (one node; see Leases for the guarantees). The only node always wins a
 * free lease. Every call runs to its end before another starts, which makes each atomic; expiry
 * is checked on each call (no sweep), on the monotonic clock. Tokens are kept in memory only, so
 * each is at least the wall clock in ms: a restarted process's tokens are above its predecessor's,
 * whose fenced writes (the feeds' positions) would otherwise refuse the new ones.
 */
export class MemoryLeases implements Leases {
  private readonly holdings = new Map<string, Holding>();
  /** Last token given per name: kept after a holding ends, so tokens only grow. */
  private readonly tokens = new Map<string, number>();

  async acquire(name: string, holder: string, ttlMs: number): Promise<number | null> {
    const now = performance.now();
    const held = this.current(name, now);
    if (held !== null && held.holder !== holder) return null;
    const token = Math.max((this.tokens.get(name) ?? 0) + 1, Date.now());
    this.tokens.set(name, token);
    this.holdings.set(name, { holder, token, expiresAt: now + ttlMs });
    return token;
  }

  async renew(name: string, holder: string, token: number, ttlMs: number): Promise<boolean> {
    const now = performance.now();
    const held = this.current(name, now);
    if (held === null || held.holder !== holder || held.token !== token) return false;
    held.expiresAt = now + ttlMs;
    return true;
  }

  async release(name: string, holder: string, token: number): Promise<boolean> {
    const held = this.current(name, performance.now());
    if (held === null || held.holder !== holder || held.token !== token) return false;
    this.holdings.delete(name);
    return true;
  }

  private current(name: string, now: number): Holding | null {
    const held = this.holdings.get(name);
    if (held === undefined) return null;
    const hasExpired = held.expiresAt <= now;
    if (hasExpired) {
      this.holdings.delete(name);
      return null;
    }
    return held;
  }
}
