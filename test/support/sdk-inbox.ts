import type { GapEvent, Publication, RecoveredEvent, Subscription } from "../../clients/js/src/index.ts";

/** What one SDK subscription handed to the app, with a way to await a condition on it. */
export class Inbox {
  readonly pubs: Publication[] = [];
  readonly gaps: GapEvent[] = [];
  readonly recovered: RecoveredEvent[] = [];
  private waiters: { check: () => boolean; resolve: () => void }[] = [];

  constructor(sub: Subscription) {
    sub.on("publication", (p) => this.push(this.pubs, p));
    sub.on("gap", (g) => this.push(this.gaps, g));
    sub.on("recovered", (r) => this.push(this.recovered, r));
  }

  /** Resolves once `check()` holds; rejects naming `what` after `ms`. */
  until(check: () => boolean, what: string, ms = 10_000): Promise<void> {
    if (check()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`not within ${ms} ms: ${what} (have ${this.pubs.length} publications, ${this.gaps.length} gaps, ${this.recovered.length} recovered)`));
      }, ms);
      const waiter = {
        check,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      };
      this.waiters.push(waiter);
    });
  }

  /** Offsets of the publications that carried one. */
  offsets(from = 0): number[] {
    return this.pubs.slice(from).flatMap((p) => (p.offset === undefined ? [] : [p.offset]));
  }

  private push<T>(list: T[], item: T): void {
    list.push(item);
    for (const w of [...this.waiters]) {
      if (w.check()) {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        w.resolve();
      }
    }
  }
}

/** `count` numbers from `from`: the offsets a gapless stream must show. */
export const run = (from: number, count: number) => Array.from({ length: count }, (_, i) => from + i);
