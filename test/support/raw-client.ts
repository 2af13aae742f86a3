import net from "node:net";
import type { Frame } from "../helpers.ts";

/** A WebSocket client on a bare TCP socket, so the test decides when it reads. */
export class RawClient {
  private buffer: Buffer<ArrayBufferLike> = Buffer.alloc(0);
  readonly frames: Frame[] = [];
  closeCode: number | null = null;
  private constructor(private readonly socket: net.Socket) {
    socket.on("data", (chunk: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      this.parse();
    });
  }

  static async open(s: { port: number }, token: string): Promise<RawClient> {
    const socket = net.connect(s.port, "127.0.0.1");
    await new Promise((resolve) => socket.once("connect", resolve));
    socket.write(
      `GET /ws?token=${token} HTTP/1.1\r\nHost: 127.0.0.1:${s.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    );
    const head: Buffer = await new Promise((resolve) => socket.once("data", resolve));
    const end = head.indexOf("\r\n\r\n");
    if (!head.subarray(0, end).toString().startsWith("HTTP/1.1 101")) throw new Error(`upgrade refused: ${head}`);
    const client = new RawClient(socket);
    client.buffer = head.subarray(end + 4);
    client.parse();
    return client;
  }

  /** Sends one masked text frame (clients must mask). */
  send(frame: unknown): void {
    const payload = Buffer.from(typeof frame === "string" ? frame : JSON.stringify(frame));
    const mask = Buffer.from([1, 2, 3, 4]);
    const masked = payload.map((b, i) => b ^ mask[i % 4]!);
    const head =
      payload.length < 126
        ? Buffer.from([0x81, 0x80 | payload.length])
        : Buffer.from([0x81, 0x80 | 126, payload.length >> 8, payload.length & 0xff]);
    if (payload.length > 0xffff) throw new Error("test frames stay under 64 KiB");
    this.socket.write(Buffer.concat([head, mask, masked]));
  }

  stopReading(): void {
    this.socket.pause();
  }

  readAgain(): void {
    this.socket.resume();
  }

  async until(predicate: () => boolean, ms = 10_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!predicate()) {
      if (Date.now() > deadline) throw new Error(`condition not met within ${ms} ms (${this.frames.length} frames, close ${this.closeCode})`);
      await Bun.sleep(5);
    }
  }

  destroy(): void {
    this.socket.destroy();
  }

  private parse(): void {
    for (;;) {
      if (this.buffer.length < 2) return;
      const opcode = this.buffer[0]! & 0x0f;
      let length = this.buffer[1]! & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (this.buffer.length < 4) return;
        length = this.buffer.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (this.buffer.length < 10) return;
        length = Number(this.buffer.readBigUInt64BE(2));
        offset = 10;
      }
      if (this.buffer.length < offset + length) return;
      const payload = this.buffer.subarray(offset, offset + length);
      this.buffer = this.buffer.subarray(offset + length);
      if (opcode === 0x1) this.frames.push(JSON.parse(payload.toString()));
      else if (opcode === 0x8) this.closeCode = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
    }
  }
}

