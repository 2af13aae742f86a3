import { Backoff, type BackoffOptions } from "./backoff.ts";
import { Emitter } from "./emitter.ts";
import { CloseCode, SinalError } from "./errors.ts";
import { Requests, type ReplyCallback, type ReplyFrame, type RequestFrame } from "./requests.ts";
import { TokenSource, type GetToken } from "./token-source.ts";
import type { Publication, Reply, Welcome, WebSocketConstructor, WebSocketLike } from "./types.ts";

/** Options of {@link SinalClient}. Give `token`, `getToken`, or both. */
export interface SinalClientOptions {
  /** The `/ws` endpoint, e.g. `wss://rt.example.com/ws`. */
  url: string;
  /** A JWT to connect with first. */
  token?: string;
  /**
   * Returns a fresh JWT (sync or async). Called before the token expires (then sent as a
   * `refresh` frame), after a 4001 close, and after a connect refused before `welcome` (an
   * HTTP 401 looks like that). Never more than one call at a time.
   */
  getToken?: GetToken;
  /** WebSocket implementation (default: the global one). */
  WebSocket?: WebSocketConstructor;
  /** Reconnect delays; reset after each `welcome`. */
  backoff?: BackoffOptions;
  /** How long a request waits for its reply (default 10 000 ms). */
  requestTimeoutMs?: number;
  /** How long opening a socket may take until `welcome` (default 10 000 ms). */
  connectTimeoutMs?: number;
  /** Ping period (default: the server's `ping_interval_ms` from `welcome`). */
  pingIntervalMs?: number;
  /** How long a ping may go unanswered before the socket is dropped and reopened (default 10 000 ms). */
  pongTimeoutMs?: number;
  /** Refresh the token this long before it expires (default 30 000 ms; half the time left if less remains). */
  refreshMarginMs?: number;
  /** Wait before subscribing again after a `rate_limited` answer (default 1 000 ms). */
  retryDelayMs?: number;
  /** The server's HTTP base for `roomMessages` and `unread` (default: `url` with http(s), without its `/ws`). */
  httpUrl?: string;
}

/**
 * `disconnected` (not trying: before `connect()`, after `close()` or a 4003), `connecting`
 * (opening a socket, waiting for `welcome`), `connected`, `reconnecting` (waiting out a backoff delay).
 */
export type ConnectionState = "disconnected" | "connecting" | "connected" | "reconnecting";

/** A closed socket: what the server (or the client, see {@link CloseCode}) said, and what comes next. */
export interface CloseInfo {
  code: number;
  reason: string;
  /** Whether the client will reconnect, after `delayMs`. */
  reconnect: boolean;
  delayMs?: number;
}

/** Events of {@link SinalClient}. */
export interface ClientEvents {
  state: ConnectionState;
  welcome: Welcome;
  close: CloseInfo;
  /** `error` frames, failed token fetches and refreshes, unreadable frames. */
  error: SinalError;
  /** Every publication handed to the app, on any channel (the own `user:` channel included). */
  publication: Publication;
  /** The server accepted a new token on the open connection; `expiresAt` in unix seconds. */
  refreshed: { expiresAt: number };
}

const MAX_TIMER_MS = 2 ** 31 - 1;
const DEFAULTS = { requestTimeoutMs: 10_000, connectTimeoutMs: 10_000, pongTimeoutMs: 10_000, refreshMarginMs: 30_000, retryDelayMs: 1_000 };

/**
 * One socket that stays up: opens it with the token, reconnects with backoff, keeps the token
 * fresh, checks liveness with pings and matches requests to replies. `SinalClient` adds channels
 * and the contract's frames on top.
 */
export class Connection extends Emitter<ClientEvents> {
  private readonly url: string;
  private readonly WS: WebSocketConstructor;
  private readonly tokens: TokenSource;
  private readonly backoff: Backoff;
  protected readonly opts: typeof DEFAULTS & { pingIntervalMs?: number };
  private readonly requests = new Requests();

  private socket: WebSocketLike | null = null;
  /** Grows with every attempt and with close(): callbacks of an older attempt see a mismatch and stop. */
  private attempt = 0;
  private current: ConnectionState = "disconnected";
  private lastWelcome: Welcome | null = null;
  private welcomed = false;
  /** close() or a final close code: requests are refused until connect(). */
  private closed = false;
  /** A token the server refused (4001, or a close before welcome): while it is still the current one, fetch another before connecting. */
  private refusedToken: string | undefined;
  /** The token the current connection authenticated with (opened with, or refreshed to). */
  private connToken: string | undefined;
  private expiresAt: number | null = null;
  private waiters: { resolve: (w: Welcome) => void; reject: (e: SinalError) => void }[] = [];
  private timers: Partial<Record<"reconnect" | "connect" | "ping" | "refresh", ReturnType<typeof setTimeout>>> = {};

  /** Checks the options (a mistake throws, naming the option); opens nothing. */
  constructor(options: SinalClientOptions) {
    super();
    const url = new URL(options.url);
    if (!["ws:", "wss:", "http:", "https:"].includes(url.protocol)) throw new TypeError(`url must be a ws:// or wss:// URL, got ${options.url}`);
    this.url = options.url;
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (WS === undefined) throw new TypeError("no global WebSocket here: pass the WebSocket option");
    this.WS = WS;
    if (options.token === undefined && options.getToken === undefined) throw new TypeError("give token, getToken or both");
    this.tokens = new TokenSource(options.token, options.getToken);
    this.backoff = new Backoff(options.backoff);
    this.opts = { ...DEFAULTS };
    for (const key of Object.keys(DEFAULTS) as (keyof typeof DEFAULTS)[]) {
      const value = options[key];
      if (value === undefined) continue;
      if (!(value >= 0)) throw new RangeError(`${key} must be 0 or more, got ${value}`);
      this.opts[key] = value;
    }
    if (options.pingIntervalMs !== undefined) this.opts.pingIntervalMs = options.pingIntervalMs;
  }

  /**
   * The connection state.
   *
   * @example
   * if (client.state !== "connected") showOfflineBanner();
   */
  get state(): ConnectionState {
    return this.current;
  }

  /**
   * The last `welcome` (connection id, user, tenant, expiry), or null before the first.
   *
   * @example
   * console.log("signed in as", client.welcome?.user);
   */
  get welcome(): Welcome | null {
    return this.lastWelcome;
  }

  /**
   * Starts connecting (and keeps reconnecting); resolves at the next `welcome`. Rejects when the
   * client gives up: `close()`, a 4003 close, or a 4001 close without `getToken`.
   *
   * @example
   * const welcome = await client.connect();
   * console.log(welcome.user, welcome.tenant);
   */
  connect(): Promise<Welcome> {
    if (this.current === "connected" && this.lastWelcome !== null) return Promise.resolve(this.lastWelcome);
    const welcome = new Promise<Welcome>((resolve, reject) => this.waiters.push({ resolve, reject }));
    // Apps that call connect() without awaiting it must not get an unhandled rejection from close().
    welcome.catch(() => {});
    if (this.current === "disconnected") {
      this.closed = false;
      this.backoff.reset();
      void this.open();
    }
    return welcome;
  }

  /**
   * Closes the socket and stops reconnecting. Pending requests reject with code `closed`.
   * Subscriptions are kept: a later `connect()` resumes them with `since`.
   *
   * @example
   * window.addEventListener("pagehide", () => client.close());
   */
  close(): void {
    this.closed = true;
    this.attempt++;
    const ws = this.socket;
    const wasWelcomed = this.welcomed;
    this.teardown();
    if (ws !== null) shut(ws, CloseCode.normal, "client closed");
    this.requests.fail(new SinalError("closed", "the client was closed"));
    this.rejectWaiters(new SinalError("closed", "the client was closed"));
    this.setState("disconnected");
    if (wasWelcomed) this.emit("close", { code: CloseCode.normal, reason: "client closed", reconnect: false });
  }

  /**
   * Sends any frame with a fresh `id` and resolves with its reply; rejects with a
   * {@link SinalError} (`ok:false`, `timeout`, `disconnected`, `closed`). Sent at once when
   * connected, else at the next `welcome` (the timeout runs from now).
   *
   * @example
   * const reply = await client.request("ping");
   */
  request<T extends Reply = Reply>(type: string, fields: Record<string, unknown> = {}, options: { timeoutMs?: number } = {}): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      if (this.closed) return reject(new SinalError("closed", "the client was closed; call connect() first"));
      const frame = this.requests.add({ ...fields, type }, options.timeoutMs ?? this.opts.requestTimeoutMs, (err, reply) =>
        err !== null ? reject(err) : resolve(reply as T),
      );
      if (this.current === "connected") this.write(frame);
    });
  }

  /**
   * Sends a fresh token on the open connection (`refresh` frame); resolves with the new expiry
   * (unix seconds). Without an argument the token comes from `getToken`. The client does this by
   * itself before expiry when `getToken` is given.
   *
   * @example
   * const { expires_at } = await client.refresh(await fetchNewToken());
   */
  async refresh(token?: string): Promise<{ expires_at: number }> {
    if (token !== undefined) this.tokens.set(token);
    return this.sendRefresh(token ?? (await this.tokens.fetch()), this.attempt);
  }

  private async open(): Promise<void> {
    const attempt = ++this.attempt;
    this.setState("connecting");
    let token: string;
    try {
      token = await this.tokenForConnect();
    } catch (err) {
      if (attempt !== this.attempt) return;
      this.emit("error", asSinalError(err));
      this.scheduleReconnect(this.backoff.next());
      return;
    }
    if (attempt !== this.attempt) return; // close() (or another attempt) took over while the token came
    let ws: WebSocketLike;
    try {
      ws = new this.WS(this.url, ["sinal.v1", `bearer.${token}`]);
    } catch (err) {
      this.emit("error", asSinalError(err));
      this.scheduleReconnect(this.backoff.next());
      return;
    }
    this.socket = ws;
    this.connToken = token;
    this.welcomed = false;
    ws.onmessage = (event: { data: unknown }) => {
      if (this.socket === ws) this.onText(typeof event.data === "string" ? event.data : String(event.data));
    };
    ws.onclose = (event: { code?: number; reason?: string }) => {
      if (this.socket === ws) this.onClosed(event.code ?? CloseCode.abnormal, event.reason ?? "");
    };
    ws.onerror = () => {}; // a close event follows and says what is known
    this.timers.connect = setTimeout(() => this.drop(CloseCode.timeout, "no welcome in time"), this.opts.connectTimeoutMs);
  }

  /** The token for the next attempt: the refresh in flight if any, a new one if the last was refused or is about to expire. */
  private tokenForConnect(): Promise<string> {
    const inFlight = this.tokens.inFlight;
    if (inFlight !== null) return inFlight; // never connect with the token a running refresh replaces
    const current = this.tokens.current;
    const isExpiring = current === this.connToken && this.expiresAt !== null && Date.now() >= this.expiresAt * 1000 - this.opts.refreshMarginMs;
    const isRefused = current === this.refusedToken;
    if (this.tokens.canFetch && (current === undefined || isRefused || isExpiring)) return this.tokens.fetch();
    return Promise.resolve(current!);
  }

  private onText(text: string): void {
    let frame: Record<string, any>;
    try {
      frame = JSON.parse(text);
    } catch {
      this.emit("error", new SinalError("bad_frame", `unreadable frame from the server: ${text.slice(0, 100)}`));
      return;
    }
    switch (frame?.type) {
      case "welcome":
        return this.onWelcome(frame as Welcome);
      case "reply":
        this.requests.settle(frame as ReplyFrame);
        return;
      case "pub":
        return this.onPublication(frame as Publication);
      case "error": {
        const { code = "unknown", message = "error", ...details } = frame.error ?? {};
        return this.emit("error", new SinalError(code, message, details));
      }
      // `pong` and frame types of later versions need nothing.
    }
  }

  private onWelcome(welcome: Welcome): void {
    clearTimeout(this.timers.connect);
    const attempt = this.attempt;
    this.welcomed = true;
    this.lastWelcome = welcome;
    this.expiresAt = welcome.expires_at;
    this.refusedToken = undefined;
    this.backoff.reset();
    this.current = "connected";
    this.resume();
    for (const frame of this.requests.unsent()) this.write(frame);
    this.startPing(this.opts.pingIntervalMs ?? welcome.ping_interval_ms);
    this.scheduleRefresh();
    this.emit("state", "connected");
    if (attempt !== this.attempt) return; // a state listener closed the client
    this.emit("welcome", welcome);
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w.resolve(welcome);
  }

  /** At each welcome, before the requests queued meanwhile go out (the client resubscribes here). */
  protected resume(): void {}

  /** When a socket is gone (the client's subscriptions wait for the next one). */
  protected suspend(): void {}

  /** A `pub` frame. */
  protected onPublication(pub: Publication): void {
    this.emit("publication", pub);
  }

  /** The current attempt; callbacks of an older one compare and stop. */
  protected get connectionId(): number {
    return this.attempt;
  }

  private onClosed(code: number, reason: string): void {
    const wasWelcomed = this.welcomed;
    const closedToken = this.connToken;
    this.teardown();
    const isForbidden = code === CloseCode.forbidden;
    const isUnauthorized = code === CloseCode.unauthorized;
    // An upgrade refused with HTTP 401 reaches a WebSocket as a close before any welcome.
    const mayBeRefusedToken = !wasWelcomed && code < 4000 && code !== CloseCode.goingAway;
    if (isUnauthorized || mayBeRefusedToken) this.refusedToken = closedToken;
    if (isForbidden || (isUnauthorized && !this.tokens.canFetch)) {
      this.closed = true;
      const error = new SinalError(isForbidden ? "forbidden" : "unauthorized", reason || `closed with ${code}`);
      this.requests.fail(error);
      this.rejectWaiters(error);
      this.setState("disconnected");
      this.emit("close", { code, reason, reconnect: false });
      return;
    }
    const delayMs = this.backoff.next();
    this.emit("close", { code, reason, reconnect: true, delayMs });
    this.scheduleReconnect(delayMs);
  }

  /** Forgets the socket and everything tied to it; the requests it carried fail with `disconnected`. */
  private teardown(): void {
    for (const timer of Object.values(this.timers)) clearTimeout(timer);
    this.timers = {};
    this.socket = null;
    this.welcomed = false;
    this.requests.fail(new SinalError("disconnected", "the connection closed before the reply"), (sent) => sent);
    this.suspend();
  }

  /** Ends the current socket from this side (no welcome or pong in time) and reconnects at once. */
  private drop(code: number, reason: string): void {
    const ws = this.socket;
    if (ws === null) return;
    // A dead network may take minutes to deliver the close event: stop listening and move on.
    shut(ws, code, reason);
    this.onClosed(code, reason);
  }

  private scheduleReconnect(delayMs: number): void {
    this.setState("reconnecting");
    const attempt = this.attempt;
    this.timers.reconnect = setTimeout(() => {
      if (attempt === this.attempt) void this.open();
    }, delayMs);
  }

  private startPing(intervalMs: number): void {
    const attempt = this.attempt;
    this.timers.ping = setTimeout(() => {
      this.sendNow({ type: "ping" }, this.opts.pongTimeoutMs, (err) => {
        if (attempt !== this.attempt) return;
        if (err?.code === "timeout") this.drop(CloseCode.timeout, "no ping reply in time");
        else this.startPing(intervalMs);
      });
    }, intervalMs);
  }

  private scheduleRefresh(): void {
    clearTimeout(this.timers.refresh);
    if (!this.tokens.canFetch || this.expiresAt === null) return;
    const remaining = this.expiresAt * 1000 - Date.now();
    if (remaining <= 0) return; // the server closes with 4001; the reconnect fetches a token
    const margin = this.opts.refreshMarginMs;
    const delay = remaining > 2 * margin ? remaining - margin : remaining / 2;
    if (delay > MAX_TIMER_MS) {
      // Timers overflow past 2^31-1 ms (24.8 days) and would fire at once: look again later.
      this.timers.refresh = setTimeout(() => this.scheduleRefresh(), MAX_TIMER_MS);
      return;
    }
    const attempt = this.attempt;
    this.timers.refresh = setTimeout(() => {
      this.tokens.fetch().then(
        (token) => this.sendRefresh(token, attempt),
        (err: SinalError) => {
          if (attempt !== this.attempt) return;
          this.emit("error", err);
          // Try once more halfway to expiry while that is worth it; past expiry 4001 and the reconnect take over.
          if ((this.expiresAt! * 1000 - Date.now()) / 2 >= 1000) this.scheduleRefresh();
        },
      ).catch((err: SinalError) => {
        if (attempt === this.attempt && err.code !== "disconnected") this.emit("error", err);
      });
    }, delay);
  }

  /** Sends `refresh` on the connection `attempt`; a reconnect since then already connected with this token. */
  private sendRefresh(token: string, attempt: number): Promise<{ expires_at: number }> {
    return new Promise((resolve, reject) => {
      if (attempt !== this.attempt || this.current !== "connected") {
        return reject(new SinalError("disconnected", "not connected; the next connection uses the new token"));
      }
      const before = this.expiresAt;
      this.sendNow({ type: "refresh", token }, this.opts.requestTimeoutMs, (err, reply) => {
        if (err !== null) return reject(err);
        const expiresAt = reply!.expires_at as number;
        if (attempt === this.attempt) {
          this.connToken = token;
          this.expiresAt = expiresAt;
          // The same expiry again (getToken gave the old token) would refresh in a loop.
          if (before === null || expiresAt > before) this.scheduleRefresh();
          this.emit("refreshed", { expiresAt });
        }
        resolve({ expires_at: expiresAt });
      });
    });
  }

  /**
   * The token for an HTTP call on the user's behalf: the newest one (a `getToken` call in flight
   * first, fetched when there is none yet), or a fresh one when `refused` is still the newest.
   */
  protected tokenForHttp(refused?: string): Promise<string> {
    const inFlight = this.tokens.inFlight;
    if (inFlight !== null) return inFlight;
    const current = this.tokens.current;
    if (current !== undefined && current !== refused) return Promise.resolve(current);
    return this.tokens.fetch();
  }

  /** Whether a refused token can be replaced (a `getToken` was given). */
  protected get canRenewToken(): boolean {
    return this.tokens.canFetch;
  }

  /** Sends a request on the open connection; false (and no callback ever) when there is none. */
  protected sendNow(frame: Record<string, unknown>, timeoutMs: number, callback: ReplyCallback): boolean {
    if (this.current !== "connected" || this.socket === null) return false;
    this.write(this.requests.add(frame, timeoutMs, callback));
    return true;
  }

  private write(frame: RequestFrame): void {
    try {
      this.socket!.send(JSON.stringify(frame));
      this.requests.markSent(frame.id);
    } catch {
      // The socket is closing; its close event fails the request or the next welcome sends it.
    }
  }

  private setState(state: ConnectionState): void {
    if (state === this.current) return;
    this.current = state;
    this.emit("state", state);
  }

  private rejectWaiters(error: SinalError): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w.reject(error);
  }
}

/** Closes a socket we no longer listen to. */
function shut(ws: WebSocketLike, code: number, reason: string): void {
  ws.onopen = ws.onmessage = ws.onclose = null;
  ws.onerror = () => {};
  try {
    ws.close(code, reason);
  } catch {
    // Already closed, or a runtime that refuses the code: either way it is gone for us.
  }
}

function asSinalError(err: unknown): SinalError {
  return err instanceof SinalError ? err : new SinalError("error", err instanceof Error ? err.message : String(err));
}
