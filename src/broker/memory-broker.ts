import type { Server, ServerWebSocket } from "bun";
import type { Broker } from "./broker.ts";

/**
 * One node, in process: Bun's native pub/sub topics (uWS), which serialize a frame once and
 * write it to every subscriber. Keeps the Broker guarantees because Bun publishes synchronously.
 */
export class MemoryBroker implements Broker {
  private server: Server<unknown> | null = null;

  attach(server: Server<unknown>): void {
    this.server = server;
  }

  publish(topic: string, frame: string): number {
    const server = this.server;
    if (server === null) return 0;
    const subscribers = server.subscriberCount(topic);
    if (subscribers > 0) server.publish(topic, frame);
    return subscribers;
  }

  subscribe(ws: ServerWebSocket<unknown>, topic: string): void {
    ws.subscribe(topic);
  }

  unsubscribe(ws: ServerWebSocket<unknown>, topic: string): void {
    ws.unsubscribe(topic);
  }

  isReady(): boolean {
    return this.server !== null;
  }

  async close(): Promise<void> {
    this.server = null;
  }
}
