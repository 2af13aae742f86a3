import type { AcquireResult, Lock, Locks } from "./locks.ts";

/**
 * Locks in this process (one node; see Locks for the guarantees): tenant -> resource -> lock,
 * with how many each user holds (its quota). Every step runs to its end before another starts,
 * which makes each atomic.
 */
export class MemoryLocks implements Locks {
  private readonly tenants = new Map<string, Map<string, Lock>>();
  /** `tenant \0 user` -> locks held (expired ones until they are swept or replaced). */
  private readonly perUser = new Map<string, number>();

  async acquire(tenant: string, resource: string, user: string, connection: string, now: number, ttlMs: number, maxPerUser: number): Promise<AcquireResult> {
    let locks = this.tenants.get(tenant);
    if (!locks) {
      locks = new Map();
      this.tenants.set(tenant, locks);
    }
    const held = locks.get(resource);
    if (held && held.expiresAt > now && held.user !== user) return { ok: false, lock: held };
    if (held && held.expiresAt > now) {
      held.expiresAt = now + ttlMs;
      held.connection = connection;
      return { ok: true, lock: held, renewed: true };
    }
    const count = this.perUser.get(`${tenant}\u0000${user}`) ?? 0;
    if (count - (held?.user === user ? 1 : 0) >= maxPerUser) return { ok: false, lock: null, quota: maxPerUser };
    if (held) this.count(tenant, held.user, -1);
    const lock = { resource, user, connection, since: now, expiresAt: now + ttlMs };
    locks.set(resource, lock);
    this.count(tenant, user, 1);
    return { ok: true, lock, renewed: false };
  }

  private count(tenant: string, user: string, by: number): void {
    const key = `${tenant}\u0000${user}`;
    const next = (this.perUser.get(key) ?? 0) + by;
    if (next <= 0) this.perUser.delete(key);
    else this.perUser.set(key, next);
  }

  async release(tenant: string, resource: string, user: string): Promise<{ released: Lock | null; heldBy: Lock | null }> {
    const locks = this.tenants.get(tenant);
    const held = locks?.get(resource);
    if (!locks || !held) return { released: null, heldBy: null };
    if (held.user !== user) return { released: null, heldBy: held };
    locks.delete(resource);
    this.count(tenant, user, -1);
    return { released: held, heldBy: null };
  }

  async releaseConnection(tenant: string, connection: string): Promise<Lock[]> {
    const locks = this.tenants.get(tenant);
    if (!locks) return [];
    const released: Lock[] = [];
    for (const [resource, lock] of locks) {
      if (lock.connection === connection) {
        locks.delete(resource);
        this.count(tenant, lock.user, -1);
        released.push(lock);
      }
    }
    return released;
  }

  async expire(now: number): Promise<{ tenant: string; lock: Lock }[]> {
    const out: { tenant: string; lock: Lock }[] = [];
    for (const [tenant, locks] of this.tenants) {
      for (const [resource, lock] of locks) {
        if (lock.expiresAt <= now) {
          locks.delete(resource);
          this.count(tenant, lock.user, -1);
          out.push({ tenant, lock });
        }
      }
      if (locks.size === 0) this.tenants.delete(tenant);
    }
    return out;
  }
}
