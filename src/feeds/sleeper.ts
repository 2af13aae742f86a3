/** A wait that `wakeUp` ends early (a stop does not wait out a backoff or a poll). */
export class Sleeper {
  private wake: (() => void) | null = null;

  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        if (this.wake === done) this.wake = null;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.wake = done;
    });
  }

  /** Ends the wait in progress, if any. */
  wakeUp(): void {
    this.wake?.();
  }
}
