import { randomUUID } from "node:crypto";
import { MemoryKeyClaims, type KeyClaims } from "../claims/key-claims.ts";
import type { Logger } from "../log.ts";
import type { Redis } from "./redis-client.ts";
import type { RedisKeys } from "./keys.ts";

// Takes every key or none: a claim is a string key holding its owner's token, lapsing after ttlMs.
const TAKE = `
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then return 0 end
end
for _, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
end
return 1`;

// Deletes only the keys that still hold this claim's token: a claim that lapsed and was taken by
// another request since is that request's now.
const GIVE_BACK = `
local released = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('DEL', key)
    released = released + 1
  end
end
return released`;

type ClaimCommands = {
  sinalClaimTake(count: number, ...keysThenArgs: string[]): Promise<number>;
  sinalClaimGiveBack(count: number, ...keysThenArgs: string[]): Promise<number>;
};

/** A busy key is tried again after 5 ms, doubling to this: another node's release is seen within it. */
const MAX_BACKOFF_MS = 100;

/**
 * Key claims shared by every node through Redis (guarantees on KeyClaims). Each claim key
 * (`<tenant>\0<key>`, as PublishService builds them) is a Redis string `<prefix>:{<tenant>}:claim:<key>`
 * holding a random token of the claim, set with PX ttlMs: one script sets all of a request's keys
 * or none (a request's keys share its tenant, hence one hash slot).
 *
 * Requests on this node first queue in a MemoryKeyClaims: only one of them at a time asks Redis for
 * a given key, and a release here wakes the next one at once. A key held by another node is asked
 * for again with a short backoff (5 ms doubling to 100 ms, with jitter) until that node releases it
 * or its claim lapses. A Redis error rejects `acquire` (the request fails rather than waiting).
 *
 * The release function returns a promise that settles once Redis has deleted the keys (tests await
 * it; PublishService need not); it never rejects: a claim Redis did not release lapses after ttlMs.
 */
export class RedisKeyClaims implements KeyClaims {
  private readonly redis: Redis & ClaimCommands;
  private readonly local = new MemoryKeyClaims();

  constructor(
    redis: Redis,
    private readonly keys: RedisKeys,
    private readonly logger?: Logger,
  ) {
    redis.defineCommand("sinalClaimTake", { lua: TAKE });
    redis.defineCommand("sinalClaimGiveBack", { lua: GIVE_BACK });
    this.redis = redis as Redis & ClaimCommands;
  }

  async acquire(claimKeys: readonly string[], ttlMs: number): Promise<() => Promise<void>> {
    const releaseLocal = await this.local.acquire(claimKeys);
    const redisKeys = claimKeys.map((key) => this.redisKey(key));
    const token = randomUUID();
    try {
      for (let backoff = 5; ; backoff = Math.min(backoff * 2, MAX_BACKOFF_MS)) {
        if ((await this.redis.sinalClaimTake(redisKeys.length, ...redisKeys, token, String(ttlMs))) === 1) break;
        // Jitter keeps two nodes waiting for the same keys from asking in step.
        await Bun.sleep(backoff / 2 + Math.random() * (backoff / 2));
      }
    } catch (err) {
      releaseLocal();
      throw err;
    }
    let released: Promise<void> | null = null;
    return () => {
      released ??= this.redis
        .sinalClaimGiveBack(redisKeys.length, ...redisKeys, token)
        .then(
          () => {},
          (err: unknown) => this.logger?.warn({ err, code: "claim_release_failed" }, `releasing a claim in Redis failed; it lapses within ${ttlMs} ms`),
        )
        // Only now may the next request on this node ask Redis for these keys.
        .finally(releaseLocal);
      return released;
    };
  }

  /** Keys held or awaited by requests of this node (tests: every claim is released). */
  get localSize(): number {
    return this.local.size;
  }

  /** `<tenant>\0<key>` under its tenant's hash tag; a key without a tenant under the cluster's. */
  private redisKey(claimKey: string): string {
    const cut = claimKey.indexOf("\u0000");
    return cut < 0 ? this.keys.cluster("claim", claimKey) : this.keys.tenant(claimKey.slice(0, cut), "claim", claimKey.slice(cut + 1));
  }
}
