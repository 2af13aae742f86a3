/**
 * A minimal RFC 6455 WebSocket client on Bun's TCP sockets, for the load generator only.
 *
 * Why not `ws` or Bun's WebSocket: a load generator on ONE core must receive several million
 * frames per second from 1,000 sockets. Dispatching one JS event per frame caps that far below
 * what the servers under test can send, so the generator would measure itself. Here one TCP read
 * (often hundreds of frames) is one callback, and a frame costs a header decode plus a short
 * byte scan. Only what the benchmark needs: text frames, no extensions, no fragmentation
 * (counted as an error), ping answered with pong, client frames masked as the RFC requires.
 */
import type { Socket } from "bun";
import { createHash, randomBytes } from "node:crypto";

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

export interface FrameSink {
  /** The upgrade succeeded (HTTP 101 with a correct Sec-WebSocket-Accept). */
  onOpen(client: RawWebSocket): void;
  /**
   * One text frame: its payload is `buf[start, end)`. `now` is performance.now() taken once for
   * the whole TCP read it came in. The buffer is only valid during the call.
   */
  onText(client: RawWebSocket, buf: Buffer, start: number, end: number, now: number): void;
  /** After all frames of one TCP read were handed over. */
  onChunkEnd?(client: RawWebSocket): void;
  /** The upgrade was refused, the socket closed, or a protocol error happened. */
  onClose(client: RawWebSocket, reason: string): void;
}

export interface ConnectOptions {
  host: string;
  port: number;
  /** Request path with query, e.g. `/ws?token=...`. */
  path: string;
  headers?: Record<string, string>;
}

type SocketData = { client: RawWebSocket };

export class RawWebSocket {
  socket: Socket<SocketData> | null = null;
  open = false;
  closed = false;
  /** Free for the owner (e.g. the subscriber's state). */
  tag = 0;
  private handshake: Buffer | null = Buffer.alloc(0);
  private rest: Buffer | null = null;
  private pending: Buffer[] = [];
  private readonly key = randomBytes(16).toString("base64");

  constructor(
    readonly sink: FrameSink,
    readonly options: ConnectOptions,
  ) {}

  async connect(): Promise<void> {
    const { host, port } = this.options;
    await Bun.connect<SocketData>({
      hostname: host,
      port,
      data: { client: this },
      socket: {
        open: (socket) => {
          socket.data.client.socket = socket;
          socket.data.client.sendHandshake();
        },
        data: (socket, chunk) => socket.data.client.onData(chunk),
        drain: (socket) => socket.data.client.flush(),
        close: (socket) => socket.data.client.finish("socket closed"),
        error: (socket, error) => socket.data.client.finish(`socket error: ${error.message}`),
        connectError: (socket, error) => socket.data.client.finish(`connect error: ${error.message}`),
      },
    });
  }

  /** Sends one text frame. */
  sendText(text: string): void {
    this.write(encodeFrames([text]));
  }

  /** Sends several text frames in one TCP write (the server then reads them in one go). */
  sendTexts(texts: string[]): void {
    this.write(encodeFrames(texts));
  }

  /**
   * Stops reading from the socket: the kernel buffers fill and the server sees a client that no
   * longer reads (its own send buffer grows). Writing still works.
   */
  pause(): void {
    this.socket?.pause();
  }

  /** Reads again after pause(); frames that waited are parsed as they arrive. */
  resume(): void {
    this.socket?.resume();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.socket?.end();
  }

  /** Drops the TCP connection at once (no close handshake); for tear-down of many idle sockets. */
  terminate(): void {
    if (this.closed) return;
    this.closed = true;
    this.socket?.terminate();
  }

  private sendHandshake(): void {
    const { host, port, path, headers = {} } = this.options;
    const extra = Object.entries(headers)
      .map(([k, v]) => `${k}: ${v}\r\n`)
      .join("");
    this.write(
      Buffer.from(
        `GET ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: ${this.key}\r\nSec-WebSocket-Version: 13\r\n${extra}\r\n`,
      ),
    );
  }

  private write(buf: Buffer): void {
    const socket = this.socket;
    if (socket === null || this.closed) return;
    if (this.pending.length > 0) {
      this.pending.push(buf);
      return;
    }
    const written = socket.write(buf);
    if (written < buf.length) this.pending.push(buf.subarray(Math.max(written, 0)));
  }

  private flush(): void {
    const socket = this.socket;
    while (socket !== null && this.pending.length > 0) {
      const buf = this.pending[0]!;
      const written = socket.write(buf);
      if (written < buf.length) {
        this.pending[0] = buf.subarray(Math.max(written, 0));
        return;
      }
      this.pending.shift();
    }
  }

  private reported = false;

  /** Tells the sink once, whatever ended the connection first. */
  private finish(reason: string): void {
    this.closed = true;
    this.open = false;
    if (this.reported) return;
    this.reported = true;
    this.sink.onClose(this, reason);
  }

  private onData(chunk: Buffer): void {
    const now = performance.now();
    if (this.handshake !== null) {
      const got = this.handshake.length === 0 ? chunk : Buffer.concat([this.handshake, chunk]);
      const end = got.indexOf("\r\n\r\n");
      if (end < 0) {
        this.handshake = Buffer.from(got);
        return;
      }
      const head = got.subarray(0, end).toString("latin1");
      this.handshake = null;
      const status = /^HTTP\/1\.1 (\d{3})/.exec(head)?.[1];
      const accept = /\r\nsec-websocket-accept:\s*(\S+)/i.exec(head)?.[1];
      const expected = createHash("sha1").update(this.key + GUID).digest("base64");
      if (status !== "101" || accept !== expected) {
        const body = got.subarray(end + 4).toString("utf8").slice(0, 300);
        this.finish(`upgrade refused: HTTP ${status ?? "?"} ${body}`);
        this.socket?.end();
        return;
      }
      this.open = true;
      this.sink.onOpen(this);
      if (got.length > end + 4) this.parse(got.subarray(end + 4), now);
      return;
    }
    this.parse(chunk, now);
    this.sink.onChunkEnd?.(this);
  }

  private parse(chunk: Buffer, now: number): void {
    let data = chunk;
    if (this.rest !== null) {
      data = Buffer.concat([this.rest, chunk]);
      this.rest = null;
    }
    const len = data.length;
    let i = 0;
    while (i + 2 <= len) {
      const b0 = data[i]!;
      let size = data[i + 1]! & 127;
      let header = 2;
      if (size === 126) {
        if (i + 4 > len) break;
        size = (data[i + 2]! << 8) | data[i + 3]!;
        header = 4;
      } else if (size === 127) {
        if (i + 10 > len) break;
        size = Number(data.readBigUInt64BE(i + 2));
        header = 10;
      }
      const start = i + header;
      const end = start + size;
      if (end > len) break;
      const opcode = b0 & 15;
      if ((b0 & 0x80) === 0 || opcode === 0) {
        this.protocolError("fragmented frames are not supported by this client");
        return;
      }
      if (opcode === 1) this.sink.onText(this, data, start, end, now);
      else if (opcode === 9) this.write(encodeControl(10, data.subarray(start, end)));
      else if (opcode === 8) {
        const code = size >= 2 ? (data[start]! << 8) | data[start + 1]! : 1005;
        const reason = data.subarray(start + 2, end).toString("utf8");
        this.finish(`close frame ${code} ${reason}`);
        this.socket?.end();
        return;
      }
      i = end;
    }
    // copies: Bun may reuse the read buffer after this callback
    if (i < len) this.rest = Buffer.from(data.subarray(i));
  }

  private protocolError(reason: string): void {
    this.finish(reason);
    this.socket?.terminate();
  }
}

/** Masked client text frames, concatenated. */
export function encodeFrames(texts: string[]): Buffer {
  const payloads = texts.map((t) => Buffer.from(t, "utf8"));
  let total = 0;
  for (const p of payloads) total += p.length + (p.length < 126 ? 6 : p.length < 65536 ? 8 : 14);
  const out = Buffer.allocUnsafe(total);
  let o = 0;
  for (const p of payloads) o = writeFrame(out, o, 1, p);
  return out;
}

function encodeControl(opcode: number, payload: Buffer): Buffer {
  const out = Buffer.allocUnsafe(payload.length + 6);
  writeFrame(out, 0, opcode, payload);
  return out;
}

function writeFrame(out: Buffer, offset: number, opcode: number, payload: Buffer): number {
  let o = offset;
  const n = payload.length;
  out[o++] = 0x80 | opcode;
  if (n < 126) {
    out[o++] = 0x80 | n;
  } else if (n < 65536) {
    out[o++] = 0x80 | 126;
    out.writeUInt16BE(n, o);
    o += 2;
  } else {
    out[o++] = 0x80 | 127;
    out.writeBigUInt64BE(BigInt(n), o);
    o += 8;
  }
  const mask = (Math.random() * 0x100000000) >>> 0;
  const m0 = mask >>> 24;
  const m1 = (mask >>> 16) & 255;
  const m2 = (mask >>> 8) & 255;
  const m3 = mask & 255;
  out[o++] = m0;
  out[o++] = m1;
  out[o++] = m2;
  out[o++] = m3;
  const m = [m0, m1, m2, m3];
  for (let j = 0; j < n; j++) out[o + j] = payload[j]! ^ m[j & 3]!;
  return o + n;
}
