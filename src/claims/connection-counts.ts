/** Which bound a connection would pass: MAX_CONNECTIONS_PER_USER or MAX_CONNECTIONS_PER_TENANT. */
export type CountRefusal = "user" | "tenant";

export interface ConnectionLimits {
  perUser: number;
  perTenant: number;
}

/**
 * Open WebSocket connections per user and per tenant, for their bounds. The gateway admits a
 * connection at its upgrade (where waiting is natural) and releases it at its close.
 *
 * Guarantees every implementation keeps:
 * - Atomic per admit: the check against both bounds and the count happen as one step, so two
 *   connections racing for the last slot (on one node or, for a shared implementation, on two)
 *   never both get it. A refused admit counts nothing.
 * - Every admitted connection is released exactly once by its node; a shared implementation also
 *   drops the counts of a node that stopped refreshing them (a node that died), so they cannot
 *   keep its users out for ever.
 * Implementations: MemoryConnectionCounts below (one node); RedisConnectionCounts in
 * src/redis/redis-connection-counts.ts (shared: per-node counts in a hash per tenant, summed over
 * the live nodes and bumped by one script, lapsing with the node's heartbeat).
 */
export interface ConnectionCounts {
  admit(tenant: string, user: string, limits: ConnectionLimits): Promise<CountRefusal | null>;
  release(tenant: string, user: string): Promise<void>;
  /** Connections counted now for the user and for the tenant. */
  count(tenant: string, user: string): Promise<{ user: number; tenant: number }>;
}

/** One node: two maps, entries dropped at zero (memory follows the open connections). */
export class MemoryConnectionCounts implements ConnectionCounts {
  private readonly users = new Map<string, number>();
  private readonly tenants = new Map<string, number>();

  async admit(tenant: string, user: string, limits: ConnectionLimits): Promise<CountRefusal | null> {
    const key = userKey(tenant, user);
    const forUser = this.users.get(key) ?? 0;
    const forTenant = this.tenants.get(tenant) ?? 0;
    if (forUser >= limits.perUser) return "user";
    if (forTenant >= limits.perTenant) return "tenant";
    this.users.set(key, forUser + 1);
    this.tenants.set(tenant, forTenant + 1);
    return null;
  }

  async release(tenant: string, user: string): Promise<void> {
    decrement(this.users, userKey(tenant, user));
    decrement(this.tenants, tenant);
  }

  async count(tenant: string, user: string): Promise<{ user: number; tenant: number }> {
    return { user: this.users.get(userKey(tenant, user)) ?? 0, tenant: this.tenants.get(tenant) ?? 0 };
  }

  /** Keys held (tests: memory follows the open connections). */
  get size(): number {
    return this.users.size + this.tenants.size;
  }
}

const userKey = (tenant: string, user: string) => `${tenant}\u0000${user}`;

function decrement(counts: Map<string, number>, key: string): void {
  const left = (counts.get(key) ?? 1) - 1;
  if (left <= 0) counts.delete(key);
  else counts.set(key, left);
}
