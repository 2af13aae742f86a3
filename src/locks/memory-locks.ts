import type { AcquireResult, Lock, Locks } from "./locks.ts";

/** Locks in this process: tenant -> resource -> lock. */
export class MemoryLocks implements Locks {
  private readonly tenants = new Map<string, Map<string, Lock>>();

  acquire(tenant: string, resource: string, user: string, connection: string, now: number, ttlMs: number): AcquireResult {
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
    const lock = { resource, user, connection, since: now, expiresAt: now + ttlMs };
    locks.set(resource, lock);
    return { ok: true, lock, renewed: false };
  }

  release(tenant: string, resource: string, user: string): { released: Lock | null; heldBy: Lock | null } {
    const locks = this.tenants.get(tenant);
    const held = locks?.get(resource);
    if (!locks || !held) return { released: null, heldBy: null };
    if (held.user !== user) return { released: null, heldBy: held };
    locks.delete(resource);
    return { released: held, heldBy: null };
  }

  releaseConnection(tenant: string, connection: string): Lock[] {
    const locks = this.tenants.get(tenant);
    if (!locks) return [];
    const released: Lock[] = [];
    for (const [resource, lock] of locks) {
      if (lock.connection === connection) {
        locks.delete(resource);
        released.push(lock);
      }
    }
    return released;
  }

  expire(now: number): { tenant: string; lock: Lock }[] {
    const out: { tenant: string; lock: Lock }[] = [];
    for (const [tenant, locks] of this.tenants) {
      for (const [resource, lock] of locks) {
        if (lock.expiresAt <= now) {
          locks.delete(resource);
          out.push({ tenant, lock });
        }
      }
      if (locks.size === 0) this.tenants.delete(tenant);
    }
    return out;
  }
}
