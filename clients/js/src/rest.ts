import { SinalError } from "./errors.ts";

/** Where RestClient gets its token from (the connection's token source). */
export interface RestTokens {
  /** The newest token; a fresh one from `getToken` when `refused` is still the newest. */
  token(refused?: string): Promise<string>;
  /** Whether a refused token can be replaced (a `getToken` was given). */
  readonly canRenew: boolean;
}

/**
 * The HTTP routes a user may call with their own token (a room's messages, their unread count),
 * on the server the socket talks to. A 401 (the token expired since) gets a fresh token from
 * `getToken` and is tried once more. Errors are {@link SinalError}s like the socket's: the
 * server's code (`forbidden`, `not_found`, ...), or the client's `timeout` and `network`.
 */
export class RestClient {
  constructor(
    private readonly base: string,
    private readonly tokens: RestTokens,
    private readonly timeoutMs: number,
  ) {}

  async get<T>(path: string, query: Record<string, string | number | undefined> = {}): Promise<T> {
    const url = new URL(this.base + path);
    for (const [name, value] of Object.entries(query)) if (value !== undefined) url.searchParams.set(name, String(value));
    const token = await this.tokens.token();
    let res = await this.send(url, token);
    if (res.status === 401 && this.tokens.canRenew) res = await this.send(url, await this.tokens.token(token));
    const body = (await res.json().catch(() => null)) as { error?: { code?: string; message?: string } } | null;
    if (res.ok) return body as T;
    const { code = `http_${res.status}`, message = `HTTP ${res.status}`, ...details } = body?.error ?? {};
    throw new SinalError(code, message, details);
  }

  private async send(url: URL, token: string): Promise<Response> {
    try {
      return await fetch(url, { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(this.timeoutMs) });
    } catch (err) {
      if ((err as Error).name === "TimeoutError") throw new SinalError("timeout", `no answer from ${url.pathname} within ${this.timeoutMs} ms`);
      throw new SinalError("network", `${url.pathname} could not be reached: ${(err as Error).message}`, { cause: err });
    }
  }
}

/**
 * The HTTP base beside a `/ws` endpoint: same host, `http(s)`, the path without its `/ws`.
 *
 * @example
 * restBaseOf("wss://rt.example.com/ws"); // "https://rt.example.com"
 * restBaseOf("ws://localhost:3000/sinal/ws"); // "http://localhost:3000/sinal"
 */
export function restBaseOf(wsUrl: string): string {
  const url = new URL(wsUrl);
  if (url.protocol === "wss:") url.protocol = "https:";
  else if (url.protocol === "ws:") url.protocol = "http:";
  url.pathname = url.pathname.replace(/\/ws\/?$/, "");
  url.search = "";
  url.hash = "";
  return url.href.replace(/\/$/, "");
}
