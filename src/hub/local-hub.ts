import type { Server, ServerWebSocket } from "bun";
import type { PublicationSink } from "../broker/broker.ts";

type Socket = ServerWebSocket<unknown>;

/** Who the hub tells which topics this node serves: its Broker. */
export interface TopicInterest {
  subscribe(topic: string): void;
  unsubscribe(topic: string): void;
}

/** Told after a publication from another node was delivered here, with how many sockets it reached. */
export type PeerDelivered = (topic: string, reached: number) => void;

/** `<tenant>/user:<id>`: a user's own channel, subscribed by each of that user's connections. */
const isUserTopic = (topic: string) => topic.includes("/user:");

/**
 * This node's sockets and the topics they are subscribed to; delivers serialized frames to them.
 * Publications reach it through the Broker (PublicationSink), which it tells the topics this node
 * serves: `interest.subscribe` when a topic gets its first local subscriber, `unsubscribe` when it
 * loses its last (a diverted socket counts as a subscriber).
 *
 * Guarantees:
 * - `deliver` is synchronous: the frames of one topic reach each subscriber (or its divert sink)
 *   in the order they were delivered.
 * - A socket gets a topic's frames from the moment `subscribe` returns until `unsubscribe` or its
 *   close; never a frame of a topic it is not subscribed to (tenant isolation rests on it: a topic
 *   starts with its tenant).
 * - `exceptClient` names a client (the `client` of its welcome): its socket, when it is on this
 *   node and was registered with `opened`, gets nothing of that delivery, subscribed or diverted.
 * - The client ids it keeps are those of the sockets opened and not yet closed (`socketClosed`).
 *
 * Bun's native pub/sub topics (uWS) serialize a frame once and write it to every subscriber;
 * `ws.publish` skips its own socket, which is how an excepted client on this node is skipped.
 * A user's own channel is the exception: every connection has one, almost always with one or two
 * subscribers (a user's tabs), and a uWS topic per connection costs ~0.7 KB of memory. Those are
 * kept in a map and sent to directly, which keeps 10,000 idle connections ~7 MB lighter.
 */
export class LocalHub implements PublicationSink {
  private server: Server<unknown> | null = null;
  /** Local subscribers (subscribed or diverted) per topic: the topics this node serves. */
  private readonly refs = new Map<string, number>();
  /** Subscribers of user topics: the socket itself while there is one (the usual case), else a set. */
  private readonly direct = new Map<string, Socket | Set<Socket>>();
  /** Diverted sockets per topic, with where their frames go instead (see divert). */
  private readonly diverted = new Map<string, Map<Socket, (frame: string) => void>>();
  /** The open sockets by client id, so a publication (maybe from another node) can skip its sender. */
  private readonly clients = new Map<string, Socket>();

  constructor(
    private readonly interest: TopicInterest,
    private readonly peerDelivered: PeerDelivered = () => undefined,
  ) {}

  /** Gives the hub the listening server, once, before any delivery. */
  attach(server: Server<unknown>): void {
    this.server = server;
  }

  /** A socket opened for `clientId`: a delivery that excepts that client skips it. */
  opened(ws: Socket, clientId: string): void {
    this.clients.set(clientId, ws);
  }

  /**
   * A socket closed while subscribed to `topics` (the runtime may already have dropped it from
   * them); also forgets its client id. Called once for every socket given to `opened`.
   */
  socketClosed(ws: Socket, clientId: string, topics: readonly string[]): void {
    if (this.clients.get(clientId) === ws) this.clients.delete(clientId);
    for (const topic of topics) {
      const sockets = this.diverted.get(topic);
      if (sockets?.delete(ws) && sockets.size === 0) this.diverted.delete(topic);
      if (isUserTopic(topic)) this.leaveDirect(ws, topic);
      this.unref(topic);
    }
  }

  deliver(topic: string, frame: string, exceptClient?: string): number {
    const server = this.server;
    if (server === null) return 0;
    const except = exceptClient === undefined ? undefined : this.clients.get(exceptClient);
    const diverted = this.diverted.size === 0 ? 0 : this.divertFrame(topic, frame, except);
    return diverted + this.send(server, topic, frame, except);
  }

  deliverFromPeer(topic: string, frame: string, exceptClient?: string): void {
    this.peerDelivered(topic, this.deliver(topic, frame, exceptClient));
  }

  private divertFrame(topic: string, frame: string, except: Socket | undefined): number {
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

  private send(server: Server<unknown>, topic: string, frame: string, except: Socket | undefined): number {
    const sockets = this.direct.get(topic);
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

  /** Subscribes the socket to `topic` (nothing if it already is, subscribed or diverted). */
  subscribe(ws: Socket, topic: string): void {
    if (this.diverted.get(topic)?.has(ws)) return;
    if (isUserTopic(topic)) {
      if (!this.joinDirect(ws, topic)) return;
    } else {
      if (ws.isSubscribed(topic)) return;
      ws.subscribe(topic);
    }
    this.ref(topic);
  }

  unsubscribe(ws: Socket, topic: string): void {
    const sockets = this.diverted.get(topic);
    if (sockets?.delete(ws)) {
      if (sockets.size === 0) this.diverted.delete(topic);
    } else if (isUserTopic(topic)) {
      if (!this.leaveDirect(ws, topic)) return;
    } else {
      if (!ws.isSubscribed(topic)) return;
      ws.unsubscribe(topic);
    }
    this.unref(topic);
  }

  /**
   * From now on the socket's frames of `topic` go to `sink` instead of the socket, subscribing it
   * first if it is not (a later `unsubscribe` or close ends it too). Used while a subscribe reads
   * history asynchronously (the reply and the replay must come before any live frame), and for a
   * slow client whose frames are conflated. A second divert of the same pair replaces the sink.
   */
  divert(ws: Socket, topic: string, sink: (frame: string) => void): void {
    let sockets = this.diverted.get(topic);
    if (sockets === undefined) this.diverted.set(topic, (sockets = new Map()));
    const already = sockets.has(ws);
    sockets.set(ws, sink);
    if (already) return;
    if (isUserTopic(topic)) {
      if (!this.leaveDirect(ws, topic)) this.ref(topic);
    } else if (ws.isSubscribed(topic)) {
      ws.unsubscribe(topic);
    } else {
      this.ref(topic);
    }
  }

  /** Ends a divert: later frames of `topic` go to the socket directly again. */
  undivert(ws: Socket, topic: string): void {
    const sockets = this.diverted.get(topic);
    if (sockets === undefined || !sockets.delete(ws)) return;
    if (sockets.size === 0) this.diverted.delete(topic);
    if (isUserTopic(topic)) this.joinDirect(ws, topic);
    else ws.subscribe(topic);
  }

  /** Topics with at least one local subscriber. */
  channelCount(): number {
    return this.refs.size;
  }

  /** Client ids of open sockets this hub keeps (bounded by the open connections). */
  clientCount(): number {
    return this.clients.size;
  }

  /** Adds the socket to a user topic's direct subscribers; false when it already was one. */
  private joinDirect(ws: Socket, topic: string): boolean {
    const sockets = this.direct.get(topic);
    if (sockets === undefined) this.direct.set(topic, ws);
    else if (sockets instanceof Set) {
      if (sockets.has(ws)) return false;
      sockets.add(ws);
    } else if (sockets !== ws) this.direct.set(topic, new Set([sockets, ws]));
    else return false;
    return true;
  }

  /** Takes the socket out of a user topic's direct subscribers; false when it was not one. */
  private leaveDirect(ws: Socket, topic: string): boolean {
    const sockets = this.direct.get(topic);
    if (sockets === ws) {
      this.direct.delete(topic);
      return true;
    }
    if (!(sockets instanceof Set) || !sockets.delete(ws)) return false;
    if (sockets.size === 1) this.direct.set(topic, sockets.values().next().value!);
    return true;
  }

  private ref(topic: string): void {
    const before = this.refs.get(topic) ?? 0;
    this.refs.set(topic, before + 1);
    if (before === 0) this.interest.subscribe(topic);
  }

  private unref(topic: string): void {
    const left = (this.refs.get(topic) ?? 0) - 1;
    if (left > 0) {
      this.refs.set(topic, left);
      return;
    }
    if (left < 0) return;
    this.refs.delete(topic);
    this.interest.unsubscribe(topic);
  }
}
