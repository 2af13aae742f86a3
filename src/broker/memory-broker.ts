import type { Server, ServerWebSocket } from "bun";
import type { Broker } from "./broker.ts";

type Socket = ServerWebSocket<unknown>;

/** `<tenant>/user:<id>`: a user's own channel, subscribed by each of that user's connections. */
const isUserTopic = (topic: string) => topic.includes("/user:");

/**
 * One node, in process: Bun's native pub/sub topics (uWS), which serialize a frame once and
 * write it to every subscriber. Keeps the Broker guarantees because Bun publishes synchronously.
 *
 * A user's own channel is the exception: every connection has one, almost always with one or two
 * subscribers (a user's tabs), and a uWS topic per connection costs ~0.7 KB of memory. Those are
 * kept in a map and sent to directly, which keeps 10,000 idle connections ~7 MB lighter.
 */
export class MemoryBroker implements Broker {
  private server: Server<unknown> | null = null;
  /** Local subscribers per uWS topic, so the node knows which channels it serves. */
  private readonly refs = new Map<string, number>();
  /** Subscribers of user topics: the socket itself while there is one (the usual case), else a set. */
  private readonly direct = new Map<string, Socket | Set<Socket>>();
  /** Diverted sockets per topic, with where their frames go instead (see Broker.divert). */
  private readonly diverted = new Map<string, Map<Socket, (frame: string) => void>>();

  attach(server: Server<unknown>): void {
    this.server = server;
  }

  publish(topic: string, frame: string, except?: Socket): number {
    const server = this.server;
    if (server === null) return 0;
    const diverted = this.diverted.size === 0 ? 0 : this.divertFrame(topic, frame, except);
    return diverted + this.deliver(server, topic, frame, except);
  }

  private divertFrame(topic: string, frame: string, except?: Socket): number {
    const sockets = this.diverted.get(topic);
    if (sockets === undefined) return 0;
    let reached = 0;
    for (const [ws, sink] of sockets) {
      if (ws === except) continue;
      sink(frame);
      reached++;
    }
    return reached;
  }

  private deliver(server: Server<unknown>, topic: string, frame: string, except?: Socket): number {    const sockets = this.direct.get(topic);
    if (sockets !== undefined) {
      if (!(sockets instanceof Set)) {
        if (sockets === except) return 0;
        sockets.sendText(frame);
        return 1;
      }
      let reached = 0;
      for (const ws of sockets) {
        if (ws === except) continue;
        ws.sendText(frame);
        reached++;
      }
      return reached;
    }
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

  subscribe(ws: Socket, topic: string): void {
    if (isUserTopic(topic)) {
      this.joinDirect(ws, topic);
      return;
    }
    ws.subscribe(topic);
    this.refs.set(topic, (this.refs.get(topic) ?? 0) + 1);
  }

  unsubscribe(ws: Socket, topic: string): void {
    const sockets = this.diverted.get(topic);
    if (sockets?.delete(ws) && sockets.size === 0) this.diverted.delete(topic);
    if (isUserTopic(topic)) {
      this.leaveDirect(ws, topic);
      return;
    }
    ws.unsubscribe(topic);
    this.unref(topic);
  }

  divert(ws: Socket, topic: string, sink: (frame: string) => void): void {
    let sockets = this.diverted.get(topic);
    if (sockets === undefined) this.diverted.set(topic, (sockets = new Map()));
    const already = sockets.has(ws);
    sockets.set(ws, sink);
    if (already) return;
    if (isUserTopic(topic)) {
      this.leaveDirect(ws, topic);
    } else if (ws.isSubscribed(topic)) {
      ws.unsubscribe(topic);
    } else {
      this.refs.set(topic, (this.refs.get(topic) ?? 0) + 1);
    }
  }

  undivert(ws: Socket, topic: string): void {
    const sockets = this.diverted.get(topic);
    if (sockets === undefined || !sockets.delete(ws)) return;
    if (sockets.size === 0) this.diverted.delete(topic);
    if (isUserTopic(topic)) this.joinDirect(ws, topic);
    else ws.subscribe(topic);
  }

  socketClosed(ws: Socket, topics: readonly string[]): void {
    for (const topic of topics) {
      const sockets = this.diverted.get(topic);
      if (sockets?.delete(ws) && sockets.size === 0) this.diverted.delete(topic);
      if (isUserTopic(topic)) this.leaveDirect(ws, topic);
      else this.unref(topic);
    }
  }

  channelCount(): number {
    return this.refs.size + this.direct.size;
  }

  private joinDirect(ws: Socket, topic: string): void {
    const sockets = this.direct.get(topic);
    if (sockets === undefined) this.direct.set(topic, ws);
    else if (sockets instanceof Set) sockets.add(ws);
    else if (sockets !== ws) this.direct.set(topic, new Set([sockets, ws]));
  }

  private leaveDirect(ws: Socket, topic: string): void {
    const sockets = this.direct.get(topic);
    if (sockets === ws) {
      this.direct.delete(topic);
    } else if (sockets instanceof Set) {
      sockets.delete(ws);
      if (sockets.size === 1) this.direct.set(topic, sockets.values().next().value!);
    }
  }

  private unref(topic: string): void {
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
