import { SinalError } from "../errors.ts";

/**
 * REST requests one credential has in flight at once (REST_MAX_CONCURRENT_PER_CLIENT). A caller
 * that opens request after request and never finishes them (a trickled body, say) holds its own
 * slots only: past the bound it gets 429 at once, other credentials are unaffected.
 */
export class InFlight {
  private readonly counts = new Map<string, number>();
  /** Which identity each counted request holds a slot of; weak, so a lost request cannot pin memory. */
  private readonly holders = new WeakMap<Request, string>();

  constructor(private readonly maxPerIdentity: number) {}

  /** Counts `request` for `identity` (once per request); throws `rate_limited` past the bound. */
  enter(request: Request, identity: string): void {
    if (this.holders.has(request)) return;
    const count = this.counts.get(identity) ?? 0;
    if (count >= this.maxPerIdentity) {
      throw new SinalError("rate_limited", `this credential already has ${this.maxPerIdentity} requests in flight; wait for one to finish`);
    }
    this.counts.set(identity, count + 1);
    this.holders.set(request, identity);
  }

  /** Frees the slot of a finished request; a request that holds none is ignored. */
  leave(request: Request): void {
    const identity = this.holders.get(request);
    if (identity === undefined) return;
    this.holders.delete(request);
    const left = (this.counts.get(identity) ?? 1) - 1;
    if (left <= 0) this.counts.delete(identity);
    else this.counts.set(identity, left);
  }
}
