/** A listener of one event; each event has exactly one payload. */
export type Listener<T> = (payload: T) => void;

/**
 * A small typed event emitter. A listener that throws does not stop the others or the client's
 * own processing; its error is rethrown on a microtask, where the runtime reports it.
 */
export class Emitter<Events extends object> {
  private readonly listeners = new Map<keyof Events, Set<Listener<never>>>();

  /**
   * Adds a listener; returns a function that removes it.
   *
   * @example
   * const off = client.on("state", (state) => console.log("now", state));
   * off();
   */
  on<K extends keyof Events>(event: K, listener: Listener<Events[K]>): () => void {
    let set = this.listeners.get(event);
    if (set === undefined) {
      set = new Set();
      this.listeners.set(event, set);
    }
    set.add(listener as Listener<never>);
    return () => this.off(event, listener);
  }

  /**
   * Adds a listener called at most once.
   *
   * @example
   * client.once("welcome", (welcome) => console.log("connected as", welcome.user));
   */
  once<K extends keyof Events>(event: K, listener: Listener<Events[K]>): () => void {
    const off = this.on(event, (payload) => {
      off();
      listener(payload);
    });
    return off;
  }

  /**
   * Removes a listener added with `on`.
   *
   * @example
   * const onState = (state) => console.log(state);
   * client.on("state", onState);
   * client.off("state", onState);
   */
  off<K extends keyof Events>(event: K, listener: Listener<Events[K]>): void {
    this.listeners.get(event)?.delete(listener as Listener<never>);
  }

  protected emit<K extends keyof Events>(event: K, payload: Events[K]): void {
    const set = this.listeners.get(event);
    if (set === undefined) return;
    for (const listener of [...set]) {
      try {
        (listener as Listener<Events[K]>)(payload);
      } catch (err) {
        // The app's bug must not corrupt the client's state machine; the runtime still reports it.
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }
}
