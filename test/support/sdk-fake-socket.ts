import type { WebSocketLike } from "../../clients/js/src/index.ts";

type Frame = Record<string, any>;

/**
 * A WebSocket stand-in for SDK unit tests: records what the client sends and lets the test play
 * the server (open, frames, close). Every instance lands in `FakeSocket.all`; `FakeSocket.next()`
 * awaits the next one the client opens.
 */
export class FakeSocket implements WebSocketLike {
  static all: FakeSocket[] = [];
  private static waiters: ((s: FakeSocket) => void)[] = [];

  readyState = 0;
  onopen: ((event: any) => unknown) | null = null;
  onmessage: ((event: any) => unknown) | null = null;
  onclose: ((event: any) => unknown) | null = null;
  onerror: ((event: any) => unknown) | null = null;
  readonly sent: Frame[] = [];
  closedWith: { code?: number; reason?: string } | null = null;
  private sentWaiters: { match: (f: Frame) => boolean; resolve: (f: Frame) => void }[] = [];

  constructor(
    readonly url: string,
    readonly protocols?: string | string[],
  ) {
    FakeSocket.all.push(this);
    const waiter = FakeSocket.waiters.shift();
    if (waiter) waiter(this);
  }

  static reset(): void {
    FakeSocket.all = [];
    FakeSocket.waiters = [];
  }

  /** The next socket the client opens (one already opened and not yet taken counts). */
  static next(): Promise<FakeSocket> {
    return new Promise((resolve) => FakeSocket.waiters.push(resolve));
  }

  /** The token the client offered as `bearer.<token>`. */
  get token(): string | undefined {
    const list = Array.isArray(this.protocols) ? this.protocols : [this.protocols];
    return list.find((p) => p?.startsWith("bearer."))?.slice("bearer.".length);
  }

  send(data: string): void {
    const frame = JSON.parse(data) as Frame;
    this.sent.push(frame);
    for (const w of [...this.sentWaiters]) {
      if (w.match(frame)) {
        this.sentWaiters.splice(this.sentWaiters.indexOf(w), 1);
        w.resolve(frame);
      }
    }
  }

  close(code?: number, reason?: string): void {
    this.closedWith = { code, reason };
    this.readyState = 3;
  }

  /** Resolves with the first frame of `type` the client sends from now on. */
  nextSent(type: string): Promise<Frame> {
    return new Promise((resolve) => this.sentWaiters.push({ match: (f) => f.type === type, resolve }));
  }

  /** Resolves with the frames of `type` once `count` of them were sent on this socket. */
  async sentCount(type: string, count: number): Promise<Frame[]> {
    while (this.sentOf(type).length < count) await this.nextSent(type);
    return this.sentOf(type);
  }

  /** Frames of `type` the client sent on this socket. */
  sentOf(type: string): Frame[] {
    return this.sent.filter((f) => f.type === type);
  }

  /** Plays the server: open and send the welcome. */
  welcome(fields: Partial<Frame> = {}): void {
    this.readyState = 1;
    this.onopen?.({});
    this.receive({ type: "welcome", client: "c1", user: "u1", tenant: "acme", ping_interval_ms: 60_000, expires_at: Math.floor(Date.now() / 1000) + 3600, ...fields });
  }

  receive(frame: Frame): void {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }

  /** Answers a request frame with `ok:true` and `fields`. */
  reply(request: Frame, fields: Frame = {}): void {
    this.receive({ type: "reply", id: request.id, ok: true, ...fields });
  }

  replyError(request: Frame, code: string, message = code, extra: Frame = {}): void {
    this.receive({ type: "reply", id: request.id, ok: false, error: { code, message, ...extra } });
  }

  /** Plays a close coming from the server or the network. */
  serverClose(code: number, reason = ""): void {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
}
