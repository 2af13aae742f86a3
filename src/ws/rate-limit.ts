/**
 * Per-connection token bucket plus a count of rejected frames in a fixed window.
 * Kept as plain numbers on the connection: this runs for every frame.
 */
export interface RateState {
  tokens: number;
  refilledAt: number;
  rejected: number;
  rejectWindowStart: number;
}

export interface RateLimits {
  ratePerSec: number;
  rateBurst: number;
  maxRejected: number;
  rejectWindowMs: number;
}

/** Takes one token; false when the bucket is empty. */
export function takeToken(state: RateState, limits: RateLimits, now: number): boolean {
  const refill = ((now - state.refilledAt) * limits.ratePerSec) / 1000;
  state.tokens = Math.min(limits.rateBurst, state.tokens + refill);
  state.refilledAt = now;
  if (state.tokens < 1) return false;
  state.tokens -= 1;
  return true;
}

/** Records one rejected frame; true when the connection is past its allowance and must close (4008). */
export function recordRejection(state: RateState, limits: RateLimits, now: number): boolean {
  if (now - state.rejectWindowStart > limits.rejectWindowMs) {
    state.rejectWindowStart = now;
    state.rejected = 0;
  }
  state.rejected++;
  return state.rejected > limits.maxRejected;
}
