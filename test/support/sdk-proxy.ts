import type { Socket, TCPSocketListener } from "bun";

/**
 * A TCP proxy in front of a server, built on Bun.listen and Bun.connect, for SDK fault tests:
 * `down()` cuts every open connection at once and refuses new ones (the network or the load
 * balancer failed), `up()` lets connections through again. Bytes are piped with backpressure:
 * what a socket cannot take now is queued and written on `drain`.
 */
export class SdkProxy {
  private listener: TCPSocketListener<Side> | null = null;
  private readonly open = new Set<Side>();
  private passing = true;
  /** Connections accepted while up (refused ones not counted). */
  accepted = 0;

  constructor(private readonly targetPort: number) {}

  get port(): number {
    return this.listener!.port;
  }

  /** Open client connections. */
  get connections(): number {
    return this.open.size;
  }

  start(): this {
    this.listener = Bun.listen<Side>({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        open: (client) => this.accept(client),
        data: (client, chunk) => client.data.peer.write(chunk),
        drain: (client) => client.data.flush(),
        close: (client) => this.closePair(client.data),
        error: (client) => this.closePair(client.data),
      },
    });
    return this;
  }

  /** Cuts every connection and refuses new ones until `up()`; returns how many were cut. */
  down(): number {
    this.passing = false;
    const count = this.open.size;
    for (const side of [...this.open]) this.closePair(side);
    return count;
  }

  up(): void {
    this.passing = true;
  }

  stop(): void {
    this.down();
    this.listener?.stop(true);
  }

  private accept(client: Socket<Side>): void {
    if (!this.passing) {
      client.terminate();
      return;
    }
    this.accepted++;
    const clientSide = new Side(client);
    const serverSide = new Side(null);
    clientSide.peer = serverSide;
    serverSide.peer = clientSide;
    client.data = clientSide;
    this.open.add(clientSide);
    Bun.connect<Side>({
      hostname: "127.0.0.1",
      port: this.targetPort,
      data: serverSide,
      socket: {
        open: (upstream) => serverSide.attach(upstream),
        data: (upstream, chunk) => upstream.data.peer.write(chunk),
        drain: (upstream) => upstream.data.flush(),
        close: () => this.closePair(clientSide),
        error: () => this.closePair(clientSide),
      },
    }).catch(() => this.closePair(clientSide));
  }

  private closePair(side: Side | undefined): void {
    if (side === undefined) return;
    const clientSide = this.open.has(side) ? side : side.peer;
    if (!this.open.delete(clientSide)) return;
    clientSide.end();
    clientSide.peer.end();
  }
}

/** One end of a piped pair: the socket and the bytes it could not take yet. */
class Side {
  peer!: Side;
  private readonly queue: Uint8Array[] = [];
  private ended = false;

  constructor(private socket: Socket<Side> | null) {}

  /** The upstream connected: write what the client sent meanwhile. */
  attach(socket: Socket<Side>): void {
    this.socket = socket;
    if (this.ended) socket.terminate();
    else this.flush();
  }

  write(chunk: Uint8Array): void {
    if (this.ended) return;
    if (this.socket === null || this.queue.length > 0) {
      this.queue.push(new Uint8Array(chunk)); // copied: Bun may reuse the buffer after the callback
      return;
    }
    const written = this.socket.write(chunk);
    if (written < chunk.byteLength) this.queue.push(new Uint8Array(chunk.subarray(Math.max(0, written))));
  }

  flush(): void {
    if (this.socket === null) return;
    while (this.queue.length > 0) {
      const head = this.queue[0]!;
      const written = this.socket.write(head);
      if (written < head.byteLength) {
        this.queue[0] = head.subarray(Math.max(0, written));
        return;
      }
      this.queue.shift();
    }
  }

  /** Cuts the connection without a goodbye (no WebSocket close frame passes). */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    this.queue.length = 0;
    this.socket?.terminate();
  }
}
