/** Reconnect delays: exponential from `minMs` by `factor`, capped at `maxMs`, with jitter. */
export interface BackoffOptions {
  /** First delay, ms (default 500). */
  minMs?: number;
  /** Largest delay, ms (default 30 000). */
  maxMs?: number;
  /** Growth per failed attempt (default 2). */
  factor?: number;
  /**
   * Share of each delay that is random, 0..1 (default 0.5): a delay is drawn from
   * `[base * (1 - jitter), base]`, so clients dropped together do not return together.
   */
  jitter?: number;
  /** Random source in [0, 1) (default Math.random); tests inject a fixed one. */
  random?: () => number;
}

/**
 * The delay before each reconnect attempt. `next()` grows it, `reset()` (after a `welcome`)
 * starts over.
 *
 * @example
 * const backoff = new Backoff({ minMs: 100, maxMs: 5000, factor: 2, jitter: 0 });
 * backoff.next(); // 100
 * backoff.next(); // 200
 * backoff.reset();
 * backoff.next(); // 100
 */
export class Backoff {
  readonly minMs: number;
  readonly maxMs: number;
  readonly factor: number;
  readonly jitter: number;
  private readonly random: () => number;
  private attempt = 0;

  constructor(options: BackoffOptions = {}) {
    this.minMs = options.minMs ?? 500;
    this.maxMs = options.maxMs ?? 30_000;
    this.factor = options.factor ?? 2;
    this.jitter = options.jitter ?? 0.5;
    this.random = options.random ?? Math.random;
    if (!(this.minMs >= 0)) throw new RangeError(`backoff.minMs must be 0 or more, got ${this.minMs}`);
    if (!(this.maxMs >= this.minMs)) throw new RangeError(`backoff.maxMs must be at least minMs (${this.minMs}), got ${this.maxMs}`);
    if (!(this.factor >= 1)) throw new RangeError(`backoff.factor must be 1 or more, got ${this.factor}`);
    if (!(this.jitter >= 0 && this.jitter <= 1)) throw new RangeError(`backoff.jitter must be from 0 to 1, got ${this.jitter}`);
  }

  /**
   * Failed attempts since the last reset.
   *
   * @example
   * if (backoff.attempts > 5) showOfflineBanner();
   */
  get attempts(): number {
    return this.attempt;
  }

  /**
   * The delay before the next attempt, in ms; each call counts one more attempt.
   *
   * @example
   * setTimeout(reconnect, backoff.next());
   */
  next(): number {
    const base = Math.min(this.maxMs, this.minMs * this.factor ** this.attempt);
    this.attempt++;
    return Math.round(base * (1 - this.jitter * this.random()));
  }

  /**
   * Starts over from `minMs` (after a successful connect).
   *
   * @example
   * client.on("welcome", () => backoff.reset());
   */
  reset(): void {
    this.attempt = 0;
  }
}
