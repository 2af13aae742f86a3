import type { Broker, PublicationSink } from "./broker.ts";

/**
 * One node, in process: the whole cluster is this node, so a publication goes straight to its
 * hub, synchronously (see the Broker guarantees); there are no peers, nothing to subscribe to and
 * nothing to lose between nodes. It costs one function call per publication over the hub itself.
 */
export class MemoryBroker implements Broker {
  private hub: PublicationSink | null = null;
  private closed = false;

  attach(hub: PublicationSink): void {
    this.hub = hub;
  }

  publish(topic: string, frame: string, exceptClient?: string): number {
    const hub = this.hub;
    return hub === null ? 0 : hub.deliver(topic, frame, exceptClient);
  }

  // The node's own hub already knows which topics it serves; there are no other nodes to tell.
  subscribe(_topic: string): void {}

  unsubscribe(_topic: string): void {}

  isReady(): boolean {
    return this.hub !== null && !this.closed;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.hub = null;
  }
}
