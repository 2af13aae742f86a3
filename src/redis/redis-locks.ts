import type { AcquireResult, Lock, Locks } from "../locks/locks.ts";
import type { Redis } from "./redis-client.ts";
import type { RedisKeys } from "./keys.ts";

/*
 * Keys of a tenant's locks, all under its hash tag (one slot: each script below is atomic and runs on
 * a Redis Cluster too). `<base>` is `<prefix>:{<tenant>}:locks`.
 *   <base>:lock:<resource>  hash user, connection, since, expiresAt (times as the caller gave them)
 *   <base>:users            hash user -> locks held (the quota; expired ones until swept or replaced)
 *   <base>:expiry           zset resource by expiresAt (what `expire` sweeps)
 *   <base>:conn:<id>        set of resources taken or last renewed through that connection
 * Scripts name the per-resource and per-connection keys they reach from the stored lock themselves
 * (same tenant, same slot); the keys they know beforehand come in KEYS.
 */

// Removes one lock and every trace of it (shared by the scripts below).
const DROP = `
local function drop(base, users, expiry, resource, user, connection)
  redis.call('DEL', base .. ':lock:' .. resource)
  if redis.call('HINCRBY', users, user, -1) <= 0 then redis.call('HDEL', users, user) end
  redis.call('SREM', base .. ':conn:' .. connection, resource)
  redis.call('ZREM', expiry, resource)
end
`;

// KEYS lock, users, expiry, connection set; ARGV base, resource, user, connection, now, expiresAt, maxPerUser.
// Replies {'held'|'renewed'|'taken', user, connection, since, expiresAt} or {'quota'}.
const ACQUIRE = `
local base, resource, user, connection = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local held = redis.call('HMGET', KEYS[1], 'user', 'connection', 'since', 'expiresAt')
local isLive = held[1] and tonumber(held[4]) > tonumber(ARGV[5])
if isLive and held[1] ~= user then return {'held', held[1], held[2], held[3], held[4]} end
if isLive then
  redis.call('HSET', KEYS[1], 'connection', connection, 'expiresAt', ARGV[6])
  if held[2] ~= connection then
    redis.call('SREM', base .. ':conn:' .. held[2], resource)
    redis.call('SADD', KEYS[4], resource)
  end
  redis.call('ZADD', KEYS[3], ARGV[6], resource)
  return {'renewed', user, connection, held[3], ARGV[6]}
end
local count = tonumber(redis.call('HGET', KEYS[2], user) or '0')
if held[1] == user then count = count - 1 end
if count >= tonumber(ARGV[7]) then return {'quota'} end
if held[1] then
  -- An expired lock no sweep removed yet: replaced, it stops counting for its holder and connection.
  if redis.call('HINCRBY', KEYS[2], held[1], -1) <= 0 then redis.call('HDEL', KEYS[2], held[1]) end
  redis.call('SREM', base .. ':conn:' .. held[2], resource)
end
redis.call('HSET', KEYS[1], 'user', user, 'connection', connection, 'since', ARGV[5], 'expiresAt', ARGV[6])
redis.call('HINCRBY', KEYS[2], user, 1)
redis.call('SADD', KEYS[4], resource)
redis.call('ZADD', KEYS[3], ARGV[6], resource)
return {'taken', user, connection, ARGV[5], ARGV[6]}`;

// KEYS lock, users, expiry; ARGV base, resource, user. Replies {} (not held), {'held', ...} or {'released', ...}.
const RELEASE = `${DROP}
local held = redis.call('HMGET', KEYS[1], 'user', 'connection', 'since', 'expiresAt')
if not held[1] then return {} end
if held[1] ~= ARGV[3] then return {'held', held[1], held[2], held[3], held[4]} end
drop(ARGV[1], KEYS[2], KEYS[3], ARGV[2], held[1], held[2])
return {'released', held[1], held[2], held[3], held[4]}`;

// KEYS users, expiry, connection set; ARGV base, connection. Replies resource, user, connection, since, expiresAt per lock.
const RELEASE_CONNECTION = `${DROP}
local released = {}
for _, resource in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  local held = redis.call('HMGET', ARGV[1] .. ':lock:' .. resource, 'user', 'connection', 'since', 'expiresAt')
  if held[1] and held[2] == ARGV[2] then
    drop(ARGV[1], KEYS[1], KEYS[2], resource, held[1], held[2])
    for _, v in ipairs({resource, held[1], held[2], held[3], held[4]}) do table.insert(released, v) end
  end
end
redis.call('DEL', KEYS[3])
return released`;

// KEYS users, expiry; ARGV base, now, batch. Removes up to `batch` locks whose expiresAt <= now, in one step:
// of two nodes sweeping at once, each lock is removed (and returned) by exactly one.
const EXPIRE = `${DROP}
local expired = {}
for _, resource in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[2], 'LIMIT', 0, ARGV[3])) do
  local held = redis.call('HMGET', ARGV[1] .. ':lock:' .. resource, 'user', 'connection', 'since', 'expiresAt')
  if held[1] then
    drop(ARGV[1], KEYS[1], KEYS[2], resource, held[1], held[2])
    for _, v in ipairs({resource, held[1], held[2], held[3], held[4]}) do table.insert(expired, v) end
  else
    redis.call('ZREM', KEYS[2], resource)
  end
end
return expired`;

type LockCommands = {
  sinalLockAcquire(...keysThenArgs: string[]): Promise<string[]>;
  sinalLockRelease(...keysThenArgs: string[]): Promise<string[]>;
  sinalLockReleaseConnection(...keysThenArgs: string[]): Promise<string[]>;
  sinalLockExpire(...keysThenArgs: string[]): Promise<string[]>;
};

/** Locks one sweep step removes per tenant and script call: bounds how long one script blocks Redis. */
const EXPIRE_BATCH = 500;

/**
 * Locks shared by every node through Redis (guarantees on Locks; key layout above). Acquire, release,
 * releaseConnection and a tenant's sweep are each one script over the tenant's keys, so each is
 * atomic among all nodes; times are the caller's (`now`), never Redis's clock.
 *
 * Which tenants have locks to sweep is a cluster-wide zset (`<prefix>:{sinal}:locks:due`, tenant by
 * the earliest expiry it may hold). It lives in another slot than the tenants' keys, so it is kept
 * in separate commands, in an order that never loses a tenant with locks: a taker writes the lock,
 * then lowers the tenant's score (ZADD LT); a sweeper removes the tenant, then reads the tenant's
 * earliest expiry and adds it back. Whatever the interleaving, the last command about a tenant that
 * holds locks adds it. Only a node dying between the two steps of a take leaves a lock unindexed;
 * the next take in that tenant indexes the tenant again.
 */
export class RedisLocks implements Locks {
  private readonly redis: Redis & LockCommands;
  private readonly due: string;

  constructor(
    redis: Redis,
    private readonly keys: RedisKeys,
  ) {
    redis.defineCommand("sinalLockAcquire", { lua: ACQUIRE, numberOfKeys: 4 });
    redis.defineCommand("sinalLockRelease", { lua: RELEASE, numberOfKeys: 3 });
    redis.defineCommand("sinalLockReleaseConnection", { lua: RELEASE_CONNECTION, numberOfKeys: 3 });
    redis.defineCommand("sinalLockExpire", { lua: EXPIRE, numberOfKeys: 2 });
    this.redis = redis as Redis & LockCommands;
    this.due = keys.cluster("locks", "due");
  }

  async acquire(tenant: string, resource: string, user: string, connection: string, now: number, ttlMs: number, maxPerUser: number): Promise<AcquireResult> {
    const base = this.base(tenant);
    const expiresAt = String(now + ttlMs);
    const reply = await this.redis.sinalLockAcquire(
      ...[`${base}:lock:${resource}`, `${base}:users`, `${base}:expiry`, `${base}:conn:${connection}`],
      ...[base, resource, user, connection, String(now), expiresAt, String(maxPerUser)],
    );
    const [status, ...fields] = reply;
    if (status === "quota") return { ok: false, lock: null, quota: maxPerUser };
    const lock = toLock(resource, fields);
    if (status === "held") return { ok: false, lock };
    // After the lock is written (see the class comment): a sweep that missed it meets this.
    await this.redis.zadd(this.due, "LT", expiresAt, tenant);
    return { ok: true, lock, renewed: status === "renewed" };
  }

  async release(tenant: string, resource: string, user: string): Promise<{ released: Lock | null; heldBy: Lock | null }> {
    const base = this.base(tenant);
    const [status, ...fields] = await this.redis.sinalLockRelease(`${base}:lock:${resource}`, `${base}:users`, `${base}:expiry`, base, resource, user);
    if (status === undefined) return { released: null, heldBy: null };
    const lock = toLock(resource, fields);
    return status === "released" ? { released: lock, heldBy: null } : { released: null, heldBy: lock };
  }

  async releaseConnection(tenant: string, connection: string): Promise<Lock[]> {
    const base = this.base(tenant);
    return toLocks(await this.redis.sinalLockReleaseConnection(`${base}:users`, `${base}:expiry`, `${base}:conn:${connection}`, base, connection));
  }

  async expire(now: number): Promise<{ tenant: string; lock: Lock }[]> {
    const expired: { tenant: string; lock: Lock }[] = [];
    for (const tenant of await this.redis.zrangebyscore(this.due, "-inf", String(now))) {
      const base = this.base(tenant);
      for (;;) {
        const batch = toLocks(await this.redis.sinalLockExpire(`${base}:users`, `${base}:expiry`, base, String(now), String(EXPIRE_BATCH)));
        for (const lock of batch) expired.push({ tenant, lock });
        if (batch.length < EXPIRE_BATCH) break;
      }
      // Remove, then read and add back (see the class comment): a lock taken meanwhile is never lost.
      await this.redis.zrem(this.due, tenant);
      const [, earliest] = await this.redis.zrange(`${base}:expiry`, "0", "0", "WITHSCORES");
      if (earliest !== undefined) await this.redis.zadd(this.due, "LT", earliest, tenant);
    }
    return expired;
  }

  private base(tenant: string): string {
    return this.keys.tenant(tenant, "locks");
  }
}

function toLock(resource: string, [user, connection, since, expiresAt]: string[]): Lock {
  return { resource, user: user!, connection: connection!, since: Number(since), expiresAt: Number(expiresAt) };
}

/** Replies of resource, user, connection, since, expiresAt per lock. */
function toLocks(flat: string[]): Lock[] {
  const locks: Lock[] = [];
  for (let i = 0; i < flat.length; i += 5) locks.push(toLock(flat[i]!, flat.slice(i + 1, i + 5)));
  return locks;
}
