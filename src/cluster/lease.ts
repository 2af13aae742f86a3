/**
 * Leases: who among the nodes of a cluster does a job that must run once (watching a MongoDB
 * feed). Implementations: memory-leases.ts (one node) and src/redis/redis-leases.ts (every node
 * sharing one Redis). Both keep these guarantees:
 * - At most one holder per lease name at a time, cluster-wide: of holders racing to `acquire` a
 *   free lease exactly one gets a token, the others null.
 * - A holder that stops renewing loses the lease `ttlMs` after its last successful `acquire` or
 *   `renew` (measured by the backend's clock from when it handled the call): anyone's `acquire`
 *   then succeeds, with no sweep needed.
 * - The fencing token strictly increases at each new holding of a name (a new holder, or the
 *   same holder acquiring again), so a stale leader's work can be told apart from its
 *   successor's (the feeds fence their position writes with it: src/store/feed-store.ts). It
 *   stays the same across renewals. It is a whole number at least the backend's wall clock in ms
 *   at the acquire, so it also grows across what loses the backend's memory (a restart of the
 *   process for memory leases, a Redis that lost its data) and across a switch of backend: a
 *   fence stored by an earlier run stays below the new tokens, unless the clock went back or
 *   leases were taken faster than one per ms on average.
 * - `renew` and `release` act only with the holder AND token of the current holding: a stale
 *   token (the holding expired, even if the same holder took it again since) renews and releases
 *   nothing.
 * - `acquire` by the current holder ends its holding and starts a new one (new token): a holder
 *   that lost track of its lease (a renewal whose answer timed out) takes it back at once
 *   instead of leaving the job undone for a TTL.
 * Every method is asynchronous and may reject (the backend is unreachable or did not answer in
 * time): a holder whose renewal rejects must act as if it no longer held the lease, since it
 * cannot know, and its lease may pass to another node once its TTL is over.
 */
export interface Leases {
  /** Takes the lease for `ttlMs` if nobody else holds it: its fencing token, or null when another holder has it. */
  acquire(name: string, holder: string, ttlMs: number): Promise<number | null>;
  /** Extends the holding to `ttlMs` from now if it is still this holder's, with this token: false when it is not (expired, taken). */
  renew(name: string, holder: string, token: number, ttlMs: number): Promise<boolean>;
  /** Ends the holding if it is still this holder's, with this token (so another can take it at once): whether it did. */
  release(name: string, holder: string, token: number): Promise<boolean>;
}
