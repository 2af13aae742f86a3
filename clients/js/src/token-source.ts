import { SinalError } from "./errors.ts";

/** Returns a fresh token (JWT); may be async (a fetch to the app's backend). */
export type GetToken = () => string | Promise<string>;

/**
 * Holds the current token and fetches new ones with at most one `getToken` call in flight:
 * a refresh timer, a 4001 close and a reconnect that all want a token share the same call.
 */
export class TokenSource {
  private token: string | undefined;
  private pending: Promise<string> | null = null;

  constructor(
    token: string | undefined,
    private readonly getToken: GetToken | undefined,
  ) {
    this.token = token;
  }

  /** The last token given or fetched. */
  get current(): string | undefined {
    return this.token;
  }

  /** Whether new tokens can be fetched (a `getToken` was given). */
  get canFetch(): boolean {
    return this.getToken !== undefined;
  }

  /** The `getToken` call in flight, if any. */
  get inFlight(): Promise<string> | null {
    return this.pending;
  }

  /** Replaces the current token (a token the app passed to `refresh(token)`). */
  set(token: string): void {
    this.token = token;
  }

  /** Calls `getToken`, or joins the call already in flight. */
  fetch(): Promise<string> {
    if (this.pending !== null) return this.pending;
    const getToken = this.getToken;
    if (getToken === undefined) return Promise.reject(new SinalError("token", "no getToken to fetch a new token with"));
    const call = (async () => {
      try {
        let token: unknown;
        try {
          token = await getToken();
        } catch (err) {
          throw new SinalError("token", `getToken failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
        }
        if (typeof token !== "string" || token === "") throw new SinalError("token", "getToken must return a non-empty string");
        this.token = token;
        return token;
      } finally {
        this.pending = null;
      }
    })();
    this.pending = call;
    return call;
  }
}
