import { createServer, connect, type Server, type Socket } from "node:net";

/**
 * A TCP proxy on a free loopback port in front of a server, for fault tests: it can refuse new
 * connections (the server looks down) and cut every open connection (a network failure in the
 * middle of whatever was in flight, e.g. a change stream's getMore).
 */
export class TcpProxy {
  private readonly server: Server;
  private readonly pairs = new Set<[Socket, Socket]>();
  /** When false, new connections are accepted and closed at once. */
  passing = true;
  /** Connections accepted so far (refused ones included). */
  accepted = 0;
  port = 0;

  constructor(private readonly targetPort: number) {
    this.server = createServer((client) => this.onConnection(client));
  }

  async listen(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.port = (this.server.address() as { port: number }).port;
    return this;
  }

  private onConnection(client: Socket): void {
    this.accepted++;
    if (!this.passing) {
      client.destroy();
      return;
    }
    const upstream = connect(this.targetPort, "127.0.0.1");
    const pair: [Socket, Socket] = [client, upstream];
    this.pairs.add(pair);
    splice(client, upstream, () => this.pairs.delete(pair));
  }

  /** Destroys every open connection; returns how many there were. */
  cutAll(): number {
    const count = this.pairs.size;
    for (const [client, upstream] of [...this.pairs]) {
      client.destroy();
      upstream.destroy();
    }
    this.pairs.clear();
    return count;
  }

  get open(): number {
    return this.pairs.size;
  }

  async close(): Promise<void> {
    this.cutAll();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/**
 * Pipes the bytes of two sockets both ways, untouched; when either closes or fails, destroys both
 * (a half-open pair would hide the failure from the other side) and calls `onClosed` once.
 */
export function splice(client: Socket, upstream: Socket, onClosed: () => void): void {
  let closed = false;
  const drop = () => {
    client.destroy();
    upstream.destroy();
    if (closed) return;
    closed = true;
    onClosed();
  };
  client.on("error", drop).on("close", drop);
  upstream.on("error", drop).on("close", drop);
  client.pipe(upstream);
  upstream.pipe(client);
}
