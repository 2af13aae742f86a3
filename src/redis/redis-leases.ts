import type { Leases } from "../cluster/lease.ts";
import type { Logger } from "../log.ts";
import { RedisKeys } from "./keys.ts";
import { connectRedis, openRedis, type Redis, type RedisSettings } from "./redis-client.ts";

/**
 * Takes a free lease (or a new holding for its current holder) and returns the new fencing token,
 * or false (nil) when another holder has it. KEYS: the lease, its fencing counter. ARGV: holder, ttl ms.
 * The lease's value is `<token> <holder>`; it expires by itself (PX), so a holder that stops
 * renewing loses it with no sweep. The counter never expires, so tokens only grow; each token is
 * also at least Redis's clock in ms, so one given after a data loss (the counter missing), or
 * after running on memory leases (which follow the clock too), is still above those given before
 * (unless more than one lease per ms was taken on average).
 */
const ACQUIRE = `
local current = redis.call('GET', KEYS[1])
if current then
  local space = string.find(current, ' ', 1, true)
  if string.sub(current, space + 1) ~= ARGV[1] then return false end
end
local now = redis.call('TIME')
local clock = now[1] * 1000 + math.floor(now[2] / 1000)
local token = math.max(tonumber(redis.call('GET', KEYS[2]) or '0') + 1, clock)
redis.call('SET', KEYS[2], string.format('%d', token))
redis.call('SET', KEYS[1], string.format('%d', token) .. ' ' .. ARGV[1], 'PX', ARGV[2])
return token
`;

/** Extends the lease if its value is still `<token> <holder>` (ARGV[1]): 1, else 0. ARGV[2]: ttl ms. */
const RENEW = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
`;

/** Deletes the lease if its value is still `<token> <holder>` (ARGV[1]): 1, else 0. */
const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
`;

interface LeaseCommands {
  sinalLeaseAcquire(lease: string, fence: string, holder: string, ttlMs: number): Promise<number | null>;
  sinalLeaseRenew(lease: string, value: string, ttlMs: number): Promise<number>;
  sinalLeaseRelease(lease: string, value: string): Promise<number>;
}

/**
 * Leases shared by every node on one Redis (see Leases for the guarantees). Each call is one Lua
 * script, so check and change are one step on Redis; expiry is Redis's own (PX), by its clock.
 * Keys: `<prefix>:{sinal}:lease:<name>` and its counter `<prefix>:{sinal}:fence:<name>`, both
 * tagged `{sinal}` (one slot, as the script needs). On a connection from connectRedis, a call
 * while Redis is down rejects at once (no offline queue), and a call Redis does not answer
 * rejects after the command timeout: the holder then stops acting as one (see Leases).
 */
export class RedisLeases implements Leases {
  private readonly commands: LeaseCommands;

  constructor(
    private readonly redis: Redis,
    private readonly keys: RedisKeys,
  ) {
    redis.defineCommand("sinalLeaseAcquire", { numberOfKeys: 2, lua: ACQUIRE });
    redis.defineCommand("sinalLeaseRenew", { numberOfKeys: 1, lua: RENEW });
    redis.defineCommand("sinalLeaseRelease", { numberOfKeys: 1, lua: RELEASE });
    this.commands = redis as unknown as LeaseCommands;
  }

  /** A connection of its own (`sinal:leases`), opened or failed within `openTimeoutMs`. */
  static async connect(settings: RedisSettings, logger?: Logger, openTimeoutMs = 5_000): Promise<RedisLeases> {
    const redis = connectRedis(settings, "leases", logger);
    await openRedis(redis, openTimeoutMs);
    return new RedisLeases(redis, new RedisKeys(settings.prefix));
  }

  async acquire(name: string, holder: string, ttlMs: number): Promise<number | null> {
    const token = await this.commands.sinalLeaseAcquire(this.keys.cluster("lease", name), this.keys.cluster("fence", name), holder, wholeMs(ttlMs));
    return token === null ? null : Number(token);
  }

  async renew(name: string, holder: string, token: number, ttlMs: number): Promise<boolean> {
    return (await this.commands.sinalLeaseRenew(this.keys.cluster("lease", name), `${token} ${holder}`, wholeMs(ttlMs))) === 1;
  }

  async release(name: string, holder: string, token: number): Promise<boolean> {
    return (await this.commands.sinalLeaseRelease(this.keys.cluster("lease", name), `${token} ${holder}`)) === 1;
  }

  /** Closes the connection (only when it is this object's own, from `connect`). */
  close(): void {
    this.redis.disconnect();
  }
}

/** PX takes a positive whole number of ms. */
function wholeMs(ttlMs: number): number {
  if (!(ttlMs >= 1)) throw new RangeError(`lease TTL must be at least 1 ms, got ${ttlMs}`);
  return Math.ceil(ttlMs);
}
