import { randomUUID } from "node:crypto";
import type { ConnectionCounts, ConnectionLimits, CountRefusal } from "../claims/connection-counts.ts";
import type { Logger } from "../log.ts";
import type { Redis } from "./redis-client.ts";
import type { RedisKeys } from "./keys.ts";

/*
 * Keys of a tenant's counts, under its hash tag (one slot: each script is atomic, also on a Cluster).
 * `<base>` is `<prefix>:{<tenant>}:conns`.
 *   <base>:node:<nodeId>  hash `u:<user>` -> that node's connections of the user, `total` -> of the
 *                         tenant; PX ttl, refreshed by the node's heartbeat: a node that dies stops
 *                         refreshing and its counts vanish with the key.
 *   <base>:nodes          set of node ids that may hold counts in the tenant (PX ttl as well)
 * A field that reaches zero is deleted, so a key lives only while its node has connections there.
 */

// Sums the counts of every node whose key still exists (a node whose key lapsed is dropped from the
// set) and takes the slot only if both bounds allow it.
// KEYS nodes, own node; ARGV node key prefix, nodeId, user field, perUser, perTenant, ttl, ownExpected.
// `ownExpected`: this node counts connections in the tenant, so its key must exist; if it does not
// (Redis lost it: a restart, or a heartbeat missed for the whole ttl) the reply is 'lost' and the node
// restores its counts before asking again, rather than counting from zero.
const ADMIT = `
if ARGV[7] == '1' and redis.call('EXISTS', KEYS[2]) == 0 then return 'lost' end
local forUser, forTenant = 0, 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local counts = redis.call('HMGET', ARGV[1] .. id, ARGV[3], 'total')
  if counts[2] then
    forUser = forUser + tonumber(counts[1] or '0')
    forTenant = forTenant + tonumber(counts[2])
  else
    redis.call('SREM', KEYS[1], id)
  end
end
if forUser >= tonumber(ARGV[4]) then return 'user' end
if forTenant >= tonumber(ARGV[5]) then return 'tenant' end
redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
redis.call('HINCRBY', KEYS[2], 'total', 1)
redis.call('PEXPIRE', KEYS[2], ARGV[6])
redis.call('SADD', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return 'ok'`;

// KEYS nodes, own node; ARGV user field, nodeId. Never below zero: a key that lapsed counts nothing.
const RELEASE = `
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return 0 end
if redis.call('HINCRBY', KEYS[2], ARGV[1], -1) <= 0 then redis.call('HDEL', KEYS[2], ARGV[1]) end
if redis.call('HINCRBY', KEYS[2], 'total', -1) <= 0 then redis.call('HDEL', KEYS[2], 'total') end
if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('SREM', KEYS[1], ARGV[2]) end
return 1`;

// KEYS nodes; ARGV node key prefix, user field. Replies {user, tenant} over the nodes alive now.
const COUNT = `
local forUser, forTenant = 0, 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local counts = redis.call('HMGET', ARGV[1] .. id, ARGV[2], 'total')
  if counts[2] then
    forUser = forUser + tonumber(counts[1] or '0')
    forTenant = forTenant + tonumber(counts[2])
  end
end
return {forUser, forTenant}`;

// The heartbeat of one node in one tenant, and the way it writes its own counts.
// KEYS nodes, own node; ARGV nodeId, ttl, overwrite, then field, value pairs (the node's counts).
// Without `overwrite` the pairs are written only if the key is gone; with it they replace the key.
// Replies 1 if the node's key exists afterwards, 0 if not (nothing counted, or lost and no pairs).
const SYNC = `
if ARGV[3] == '1' or redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[2])
  for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SREM', KEYS[1], ARGV[1])
  return 0
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1`;

type CountCommands = {
  sinalCountAdmit(...keysThenArgs: string[]): Promise<"ok" | "lost" | CountRefusal>;
  sinalCountRelease(...keysThenArgs: string[]): Promise<number>;
  sinalCountRead(...keysThenArgs: string[]): Promise<[number, number]>;
  sinalCountSync(...keysThenArgs: string[]): Promise<number>;
};

export interface RedisConnectionCountsOptions {
  /** This node's id in key names; unique across the cluster (default: a random UUID). */
  nodeId?: string;
  /** How often the node refreshes its counts' TTL (default 5 s). */
  heartbeatMs?: number;
  /** How long counts outlive their node's last heartbeat (default 15 s): a dead node's counts vanish within this. */
  ttlMs?: number;
  logger?: Logger;
}

/** This node's connections in one tenant: the truth its keys in Redis are restored from. */
interface LocalTenant {
  total: number;
  users: Map<string, number>;
  /** Admits sent and not answered: an overwrite now could erase one that Redis has counted. */
  pending: number;
  /** A call failed without saying whether Redis applied it: overwrite the node's counts at the next heartbeat. */
  dirty: boolean;
}

/**
 * Connection counts shared by every node through Redis (guarantees on ConnectionCounts; key layout
 * above). Each node counts its own connections in its own hash per tenant; an admit sums the hashes
 * of the nodes still alive and bumps its own in one script, so two nodes never both take the last
 * slot. `start()` starts the heartbeat (call it before serving); `close()` stops it and removes the
 * node's counts at once (a node leaving cleanly does not wait for its TTL).
 *
 * The node also keeps its counts in memory. Redis is brought back to them when it lost them (a
 * restart: found by the heartbeat or by an admit) or when a call failed without saying whether it
 * was applied (a timeout: overwritten at the next heartbeat with no admit in flight), so counts never
 * drift for as long as the node lives.
 */
export class RedisConnectionCounts implements ConnectionCounts {
  readonly nodeId: string;
  private readonly redis: Redis & CountCommands;
  private readonly heartbeatMs: number;
  private readonly ttlMs: number;
  private readonly logger?: Logger;
  private readonly tenants = new Map<string, LocalTenant>();
  private readonly restoring = new Map<string, Promise<void>>();
  private timer: ReturnType<typeof setInterval> | null = null;
  private beating = false;

  constructor(
    redis: Redis,
    private readonly keys: RedisKeys,
    options: RedisConnectionCountsOptions = {},
  ) {
    this.nodeId = options.nodeId ?? randomUUID();
    this.heartbeatMs = options.heartbeatMs ?? 5_000;
    this.ttlMs = options.ttlMs ?? 15_000;
    this.logger = options.logger;
    if (!(this.ttlMs > this.heartbeatMs)) throw new Error(`RedisConnectionCounts: ttlMs (${this.ttlMs}) must exceed heartbeatMs (${this.heartbeatMs}), or live nodes lose their counts`);
    redis.defineCommand("sinalCountAdmit", { lua: ADMIT, numberOfKeys: 2 });
    redis.defineCommand("sinalCountRelease", { lua: RELEASE, numberOfKeys: 2 });
    redis.defineCommand("sinalCountRead", { lua: COUNT, numberOfKeys: 1, readOnly: true });
    redis.defineCommand("sinalCountSync", { lua: SYNC, numberOfKeys: 2 });
    this.redis = redis as Redis & CountCommands;
  }

  /** Starts the heartbeat that keeps this node's counts alive in Redis. */
  start(): void {
    if (this.timer !== null) return;
    this.timer = setInterval(() => void this.heartbeat(), this.heartbeatMs);
    // prevents the timer from keeping the process alive
    this.timer.unref();
  }

  /** Stops the heartbeat and removes this node's counts from Redis (best effort: else they lapse within ttlMs). */
  async close(): Promise<void> {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    const tenants = [...this.tenants.keys()];
    this.tenants.clear();
    const removed = await Promise.allSettled(tenants.map((tenant) => this.redis.sinalCountSync(...this.nodeKeys(tenant), this.nodeId, String(this.ttlMs), "1")));
    if (removed.some((r) => r.status === "rejected")) this.logger?.warn({ code: "connection_counts_close_failed" }, `removing this node's connection counts from Redis failed; they lapse within ${this.ttlMs} ms`);
  }

  async admit(tenant: string, user: string, limits: ConnectionLimits): Promise<CountRefusal | null> {
    const local = this.local(tenant);
    local.pending++;
    try {
      for (let restored = false; ; restored = true) {
        let verdict;
        try {
          verdict = await this.redis.sinalCountAdmit(
            ...this.nodeKeys(tenant),
            ...[`${this.base(tenant)}:node:`, this.nodeId, userField(user), String(limits.perUser), String(limits.perTenant), String(this.ttlMs), local.total > 0 ? "1" : "0"],
          );
        } catch (err) {
          local.dirty = true;
          throw err;
        }
        if (verdict === "lost" && !restored) {
          await this.restore(tenant);
          continue;
        }
        if (verdict === "lost") throw new Error(`connection counts of node ${this.nodeId} in tenant ${tenant} were lost again while restoring them`);
        if (verdict !== "ok") return verdict;
        local.total++;
        local.users.set(user, (local.users.get(user) ?? 0) + 1);
        return null;
      }
    } finally {
      local.pending--;
      this.forgetIfIdle(tenant, local);
    }
  }

  async release(tenant: string, user: string): Promise<void> {
    const local = this.tenants.get(tenant);
    const forUser = local?.users.get(user) ?? 0;
    // Nothing of this user counted here (close() ran, or a release too many): Redis has nothing of ours either.
    if (local === undefined || forUser === 0) return;
    // Counted down before Redis is: a restore from now on already leaves this connection out.
    local.total--;
    if (forUser === 1) local.users.delete(user);
    else local.users.set(user, forUser - 1);
    try {
      await this.redis.sinalCountRelease(...this.nodeKeys(tenant), userField(user), this.nodeId);
    } catch (err) {
      local.dirty = true;
      throw err;
    } finally {
      this.forgetIfIdle(tenant, local);
    }
  }

  async count(tenant: string, user: string): Promise<{ user: number; tenant: number }> {
    const [forUser, forTenant] = await this.redis.sinalCountRead(`${this.base(tenant)}:nodes`, `${this.base(tenant)}:node:`, userField(user));
    return { user: Number(forUser), tenant: Number(forTenant) };
  }

  /** One heartbeat: refreshes the TTL of this node's counts in every tenant it serves, restoring lost or doubtful ones. */
  async heartbeat(): Promise<void> {
    // A slow Redis must not stack heartbeats on top of each other.
    if (this.beating) return;
    this.beating = true;
    try {
      const beats = [...this.tenants].map(async ([tenant, local]) => {
        if (local.dirty && local.pending === 0) {
          local.dirty = false;
          try {
            await this.sync(tenant, local, true);
          } catch (err) {
            local.dirty = true;
            throw err;
          }
          this.forgetIfIdle(tenant, local);
        } else if (local.total > 0) {
          const alive = await this.redis.sinalCountSync(...this.nodeKeys(tenant), this.nodeId, String(this.ttlMs), "0");
          if (alive === 0) await this.restore(tenant);
        }
      });
      const failed = (await Promise.allSettled(beats)).find((r) => r.status === "rejected");
      if (failed) this.logger?.warn({ err: failed.reason, code: "connection_counts_heartbeat_failed" }, "refreshing this node's connection counts in Redis failed; retrying at the next heartbeat");
    } finally {
      this.beating = false;
    }
  }

  /** Writes this node's counts in `tenant` if Redis lost them; one restore per tenant at a time. */
  private restore(tenant: string): Promise<void> {
    const running = this.restoring.get(tenant);
    if (running) return running;
    const local = this.local(tenant);
    const done = this.sync(tenant, local, false).finally(() => {
      this.restoring.delete(tenant);
      this.forgetIfIdle(tenant, local);
    });
    this.restoring.set(tenant, done);
    return done;
  }

  private async sync(tenant: string, local: LocalTenant, overwrite: boolean): Promise<void> {
    const pairs = local.total > 0 ? ["total", String(local.total), ...[...local.users].flatMap(([user, n]) => [userField(user), String(n)])] : [];
    await this.redis.sinalCountSync(...this.nodeKeys(tenant), this.nodeId, String(this.ttlMs), overwrite ? "1" : "0", ...pairs);
  }

  private local(tenant: string): LocalTenant {
    let local = this.tenants.get(tenant);
    if (!local) {
      local = { total: 0, users: new Map(), pending: 0, dirty: false };
      this.tenants.set(tenant, local);
    }
    return local;
  }

  /** Memory follows the open connections: a tenant with nothing to count or repair is dropped. */
  private forgetIfIdle(tenant: string, local: LocalTenant): void {
    if (local.total === 0 && local.pending === 0 && !local.dirty && this.tenants.get(tenant) === local) this.tenants.delete(tenant);
  }

  /** Tenants this node keeps counts for in memory (tests: memory follows the open connections). */
  get localSize(): number {
    return this.tenants.size;
  }

  private nodeKeys(tenant: string): [nodes: string, own: string] {
    const base = this.base(tenant);
    return [`${base}:nodes`, `${base}:node:${this.nodeId}`];
  }

  private base(tenant: string): string {
    return this.keys.tenant(tenant, "conns");
  }
}

/** A user's field in a node's hash; `total` is the tenant's, which no user field can be. */
const userField = (user: string) => `u:${user}`;
