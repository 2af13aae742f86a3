import { connect, createServer, type Server, type Socket } from "node:net";
import { splice } from "./tcp-proxy.ts";

interface Backend {
  port: number;
  up: boolean;
  /** Proxied connections open now, each as its [client, upstream] pair. */
  pairs: Set<[Socket, Socket]>;
  /** Connections sent to this backend so far. */
  routed: number;
}

/**
 * A layer-4 load balancer in the test process, in front of several servers on 127.0.0.1: each
 * accepted connection goes, whole and untouched (HTTP, WebSocket upgrades and frames alike), to
 * the next backend that is up, round robin. It checks no health of its own: the test says which
 * backend is down (`setUp`), as a load balancer's health check would after a while, and cuts a dead
 * node's connections (`dropConnections`) when it wants its clients to see them go. A connection
 * routed to a backend that refuses it (a killed node still marked up) is closed at once.
 *
 * One TCP connection is one routing decision: an HTTP client that keeps its connection alive
 * keeps its backend, so a test that wants a request per backend sends `connection: close` or
 * opens WebSockets.
 *
 * @example
 * const balancer = await LoadBalancer.start([node0.port, node1.port]);
 * balancer.setUp(1, false); // node 1 gets no new connections
 * balancer.dropConnections(0); // node 0's clients see their connections close
 * await balancer.close();
 */
export class LoadBalancer {
  private readonly server: Server;
  private readonly backends: Backend[];
  private cursor = 0;
  /** Connections closed at once because no backend was up. */
  refused = 0;
  port = 0;

  private constructor(ports: number[]) {
    this.backends = ports.map((port) => ({ port, up: true, pairs: new Set(), routed: 0 }));
    this.server = createServer((client) => this.onConnection(client));
  }

  /** A balancer on a free port of 127.0.0.1 in front of `ports` (all marked up). */
  static async start(ports: number[]): Promise<LoadBalancer> {
    const balancer = new LoadBalancer(ports);
    await new Promise<void>((resolve, reject) => {
      balancer.server.once("error", reject);
      balancer.server.listen(0, "127.0.0.1", resolve);
    });
    balancer.port = (balancer.server.address() as { port: number }).port;
    return balancer;
  }

  /** http://127.0.0.1:<port> */
  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** A backend marked down gets no new connection; the ones it has stay open. */
  setUp(index: number, up: boolean): void {
    this.backend(index).up = up;
  }

  isUp(index: number): boolean {
    return this.backend(index).up;
  }

  /** Sends the backend's new connections to `port` from now on (a node restarted on another port). */
  setPort(index: number, port: number): void {
    this.backend(index).port = port;
  }

  /** Destroys every open connection to the backend, both sides; returns how many there were. */
  dropConnections(index: number): number {
    const { pairs } = this.backend(index);
    const count = pairs.size;
    for (const [client, upstream] of [...pairs]) {
      client.destroy();
      upstream.destroy();
    }
    pairs.clear();
    return count;
  }

  /** Connections to the backend open now. */
  active(index: number): number {
    return this.backend(index).pairs.size;
  }

  /** Connections sent to the backend so far (refused and closed ones included). */
  routed(index: number): number {
    return this.backend(index).routed;
  }

  async close(): Promise<void> {
    for (let i = 0; i < this.backends.length; i++) this.dropConnections(i);
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private backend(index: number): Backend {
    const backend = this.backends[index];
    if (backend === undefined) throw new RangeError(`no backend ${index} (there are ${this.backends.length})`);
    return backend;
  }

  /** The next backend that is up, from the cursor on; null when all are down. */
  private pick(): Backend | null {
    for (let step = 0; step < this.backends.length; step++) {
      const index = (this.cursor + step) % this.backends.length;
      const backend = this.backends[index]!;
      if (!backend.up) continue;
      this.cursor = index + 1;
      return backend;
    }
    return null;
  }

  private onConnection(client: Socket): void {
    const backend = this.pick();
    if (backend === null) {
      this.refused++;
      client.destroy();
      return;
    }
    backend.routed++;
    const upstream = connect(backend.port, "127.0.0.1");
    const pair: [Socket, Socket] = [client, upstream];
    backend.pairs.add(pair);
    splice(client, upstream, () => backend.pairs.delete(pair));
  }
}
