import { connect, type Socket } from "node:net";

/** The first HTTP answer read off a raw socket. */
export interface RawAnswer {
  status: number;
  /** Header names in lower case. */
  headers: Record<string, string>;
  body: string;
}

/**
 * One HTTP/1.1 request written by hand on a raw TCP socket, for what fetch cannot do: send the
 * head and hold the body back, trickle it, or see whether the server ends the stream after
 * answering. `answer` settles with the first response; `ended` when the server ends the stream.
 */
export class RawRequest {
  readonly answer: Promise<RawAnswer>;
  readonly ended: Promise<void>;
  private readonly socket: Socket;
  private received = Buffer.alloc(0);
  private trickler: Timer | undefined;

  constructor(port: number, head: string) {
    this.socket = connect(port, "127.0.0.1");
    // Writes after the server closed fail with EPIPE/ECONNRESET: expected here, not a test failure.
    this.socket.on("error", () => {});
    this.answer = new Promise((resolve, reject) => {
      const onData = (chunk: Buffer) => {
        this.received = Buffer.concat([this.received, chunk]);
        const parsed = parseAnswer(this.received);
        if (parsed === null) return;
        this.socket.off("data", onData);
        resolve(parsed);
      };
      this.socket.on("data", onData);
      this.socket.once("close", () => reject(new Error(`the connection closed before a full answer: ${JSON.stringify(this.received.toString())}`)));
    });
    this.answer.catch(() => {}); // awaited by the tests that expect one
    this.ended = new Promise((resolve) => {
      this.socket.once("end", resolve);
      this.socket.once("close", () => resolve());
    });
    this.socket.on("close", () => this.stopTrickle());
    this.socket.write(head);
  }

  write(data: string | Uint8Array): boolean {
    return this.socket.write(data);
  }

  /** Sends `bytes` one byte every `everyMs`, the way a slow-loris client holds a request open. */
  trickle(bytes: string, everyMs: number): void {
    let next = 0;
    this.trickler = setInterval(() => {
      if (next >= bytes.length) return this.stopTrickle();
      this.socket.write(bytes[next++]!);
    }, everyMs);
  }

  /** Writes `totalBytes` as a chunked body in 64 KiB chunks, pausing on backpressure; stops when the server closes. */
  async sendChunked(totalBytes: number): Promise<void> {
    const chunk = Buffer.alloc(64 * 1024, "a");
    const framed = Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from("\r\n")]);
    for (let sent = 0; sent < totalBytes && !this.socket.destroyed; sent += chunk.length) {
      if (!this.socket.write(framed)) {
        await new Promise<void>((resolve) => {
          this.socket.once("drain", resolve);
          this.socket.once("close", resolve);
        });
      }
    }
    if (!this.socket.destroyed) this.socket.write("0\r\n\r\n");
  }

  destroy(): void {
    this.stopTrickle();
    this.socket.destroy();
  }

  private stopTrickle(): void {
    clearInterval(this.trickler);
    this.trickler = undefined;
  }
}

/** A request head for `RawRequest` (Host, the given headers, the blank line). */
export function requestHead(method: string, path: string, headers: Record<string, string | number>): string {
  const lines = [`${method} ${path} HTTP/1.1`, "Host: 127.0.0.1", ...Object.entries(headers).map(([name, value]) => `${name}: ${value}`)];
  return `${lines.join("\r\n")}\r\n\r\n`;
}

/** Rejects naming `what` when `promise` has not settled within `ms`, so a hang reads as a failure with a reason. */
export function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: Timer | undefined;
  const expired = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms)));
  return Promise.race([promise, expired]).finally(() => clearTimeout(timer));
}

/** The first complete answer in `bytes` (a Content-Length body), or null while it is incomplete. */
function parseAnswer(bytes: Buffer): RawAnswer | null {
  const headEnd = bytes.indexOf("\r\n\r\n");
  if (headEnd < 0) return null;
  const [statusLine, ...lines] = bytes.subarray(0, headEnd).toString().split("\r\n");
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(":");
    headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  const length = Number(headers["content-length"] ?? 0);
  if (bytes.length < headEnd + 4 + length) return null;
  return { status: Number(statusLine!.split(" ")[1]), headers, body: bytes.subarray(headEnd + 4, headEnd + 4 + length).toString() };
}
