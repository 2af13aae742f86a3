/**
 * Idempotency keys being published right now: two requests with one key must publish it once,
 * the second answering with the first one's result (PublishService). A claim covers every key of
 * one request, all or none.
 *
 * Guarantees every implementation keeps:
 * - Exclusive: while a claim holds a key, no other `acquire` of that key (on this node or, for a
 *   shared implementation, on any node) resolves; it waits for the release.
 * - All or nothing: `acquire` resolves once it holds every key it asked for, never a part of them
 *   (no deadlock between two requests with overlapping keys in another order).
 * - A holder that never releases (a node that died mid-request) does not block the key for ever:
 *   a shared implementation lets a claim lapse after `ttlMs`; the memory one is released with
 *   the request, which cannot outlive its process.
 * Implementations: MemoryKeyClaims below (one node); RedisKeyClaims in src/redis/redis-key-claims.ts
 * (shared by every node: one script sets every key of a claim with PX ttlMs or none, a busy key is
 * asked for again with a short backoff, a release deletes only the keys still holding its token).
 */
export interface KeyClaims {
  /** Resolves holding every key of `keys` (see above); call the result to release them. */
  acquire(keys: readonly string[], ttlMs: number): Promise<() => void>;
}

/** One node: a promise per held key, settled at release. */
export class MemoryKeyClaims implements KeyClaims {
  private readonly held = new Map<string, Promise<void>>();

  async acquire(keys: readonly string[]): Promise<() => void> {
    for (;;) {
      const busy = keys.flatMap((k) => this.held.get(k) ?? []);
      if (busy.length === 0) break;
      await Promise.all(busy);
    }
    // Taken with no await since the check above, so no other caller can take these keys too.
    let release!: () => void;
    const done = new Promise<void>((resolve) => (release = resolve));
    for (const k of keys) this.held.set(k, done);
    return () => {
      for (const k of keys) if (this.held.get(k) === done) this.held.delete(k);
      release();
    };
  }

  /** Keys held now (tests: every claim is released). */
  get size(): number {
    return this.held.size;
  }
}
