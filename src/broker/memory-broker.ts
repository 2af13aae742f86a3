import type { Server, ServerWebSocket } from "bun";
import type { Broker } from "./broker.ts";

/**
 * One node, in process: Bun's native pub/sub topics (uWS), which serialize a frame once and
 * write it to every subscriber. Keeps the Broker guarantees because Bun publishes synchronously.
 */
export class MemoryBroker implements Broker {
  private server: Server<unknown> | null = null;
  /** Local subscribers per topic, so the node knows which channels it serves. */
  private readonly refs = new Map<string, number>();

  attach(server: Server<unknown>): void {
    this.server = server;
  }

  publish(topic: string, frame: string, except?: ServerWebSocket<unknown>): number {
    const server = this.server;
    if (server === null) return 0;
    const subscribers = server.subscriberCount(topic);
    if (subscribers === 0) return 0;
    // ws.publish reaches every subscriber but that socket itself.
    if (except !== undefined) {
      except.publish(topic, frame);
      return except.isSubscribed(topic) ? subscribers - 1 : subscribers;
    }
    server.publish(topic, frame);
    return subscribers;
  }

  subscribe(ws: ServerWebSocket<unknown>, topic: string): void {
    ws.subscribe(topic);
    this.refs.set(topic, (this.refs.get(topic) ?? 0) + 1);
  }

  unsubscribe(ws: ServerWebSocket<unknown>, topic: string): void {
    ws.unsubscribe(topic);
    this.release(topic);
  }

  socketClosed(topics: readonly string[]): void {
    for (const topic of topics) this.release(topic);
  }

  channelCount(): number {
    return this.refs.size;
  }

  private release(topic: string): void {
    const left = (this.refs.get(topic) ?? 1) - 1;
    if (left <= 0) this.refs.delete(topic);
    else this.refs.set(topic, left);
  }

  isReady(): boolean {
    return this.server !== null;
  }

  async close(): Promise<void> {
    this.server = null;
  }
}
