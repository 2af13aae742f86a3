/**
 * A JSON WebSocket client for the bench scripts, on the raw client of rawws.ts (which can stop
 * reading: `client.raw.pause()`). Frames go to whoever waits for them (`next`, `request`) and to
 * `onFrame`.
 */
import { RawWebSocket, type FrameSink } from "./rawws.ts";

/** A frame as the server sent it (parsed JSON). */
export type Frame = Record<string, any>;

/**
 * A WebSocket client that hands JSON frames to `onFrame` or to whoever waits for them (`next`).
 * `closeCode` is the code of the server's close frame once read (null: none read).
 */
export class JsonClient implements FrameSink {
  readonly raw: RawWebSocket;
  closeReason: string | null = null;
  closeCode: number | null = null;
  closedAt = 0;
  onFrame: ((frame: Frame, bytes: number) => void) | null = null;
  /** Resolves with the reason once the connection ended, whatever ended it. */
  readonly closed: Promise<string>;
  private resolveClosed!: (reason: string) => void;
  private waiters: { match: (f: Frame) => boolean; resolve: (f: Frame) => void; reject: (err: Error) => void }[] = [];
  private nextId = 1;

  constructor(port: number, token: string) {
    this.raw = new RawWebSocket(this, { host: "127.0.0.1", port, path: `/ws?token=${token}` });
    this.closed = new Promise((res) => (this.resolveClosed = res));
  }

  /** Connects and resolves on the welcome frame. */
  static async connect(port: number, token: string, timeoutMs = 10_000): Promise<JsonClient> {
    const c = new JsonClient(port, token);
    const welcome = c.next((f) => f.type === "welcome", timeoutMs);
    welcome.catch(() => undefined); // awaited below, after the connect
    await c.raw.connect();
    await welcome; // rejects with the reason when the upgrade is refused
    return c;
  }

  get isClosed(): boolean {
    return this.closeReason !== null;
  }

  send(frame: object): void {
    this.raw.sendText(JSON.stringify(frame));
  }

  /** Sends a frame with a fresh id and resolves with its reply. */
  request(frame: object, timeoutMs = 10_000): Promise<Frame> {
    const id = this.nextId++;
    const reply = this.next((f) => f.type === "reply" && f.id === id, timeoutMs);
    this.send({ ...frame, id });
    return reply;
  }

  /** The next frame that matches, or a rejection after `timeoutMs` or on close. */
  next(match: (f: Frame) => boolean, timeoutMs: number): Promise<Frame> {
    return new Promise((resolve, reject) => {
      if (this.isClosed) return reject(new Error(`closed: ${this.closeReason}`));
      const waiter = {
        match,
        resolve: (f: Frame) => {
          clearTimeout(timer);
          resolve(f);
        },
        reject: (err: Error) => {
          clearTimeout(timer);
          reject(err);
        },
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`no matching frame within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }

  onOpen(): void {}

  onText(_c: RawWebSocket, buf: Buffer, start: number, end: number): void {
    const frame = JSON.parse(buf.toString("utf8", start, end)) as Frame;
    const at = this.waiters.findIndex((w) => w.match(frame));
    if (at >= 0) this.waiters.splice(at, 1)[0]!.resolve(frame);
    this.onFrame?.(frame, end - start);
  }

  onClose(_c: RawWebSocket, reason: string): void {
    this.closeReason = reason;
    this.closedAt = performance.now();
    const code = /^close frame (\d+)/.exec(reason);
    if (code) this.closeCode = Number(code[1]);
    this.resolveClosed(reason);
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w.reject(new Error(`closed: ${reason}`));
  }
}
