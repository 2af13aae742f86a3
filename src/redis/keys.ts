/**
 * Names of sinal's Redis keys, in one place. Every key starts with the deployment's prefix
 * (REDIS_PREFIX, so several deployments can share one Redis) and, for tenant data, carries the
 * tenant as its hash tag: `<prefix>:{<tenant>}:<kind>:<rest>`. One tenant's keys then sit in one
 * slot, so a script may touch several of them (a channel's meta and stream, a tenant's channel
 * list) and still run on a Redis Cluster. Tenant ids are `[a-z0-9_-]` (TENANT_RE): no brace.
 * Keys of the cluster itself (nodes, leases) carry the tag `{sinal}`.
 */
export class RedisKeys {
  constructor(readonly prefix: string) {}

  /** A tenant's key: `<prefix>:{<tenant>}:<parts joined by ":">`. */
  tenant(tenant: string, ...parts: string[]): string {
    return `${this.prefix}:{${tenant}}:${parts.join(":")}`;
  }

  /** A key of the cluster (nodes, leases, the global expiry index): `<prefix>:{sinal}:<parts>`. */
  cluster(...parts: string[]): string {
    return `${this.prefix}:{sinal}:${parts.join(":")}`;
  }

  /** The pub/sub channel of a topic (`<tenant>/<channel>`): pub/sub channels are not keys, no tag needed. */
  topicChannel(topic: string): string {
    return `${this.prefix}:t:${topic}`;
  }

  /** The pub/sub channel every node listens on for cluster control messages. */
  controlChannel(): string {
    return `${this.prefix}:control`;
  }
}

/** The tenant of a topic `<tenant>/<channel>`. */
export function tenantOf(topic: string): string {
  return topic.slice(0, topic.indexOf("/"));
}
