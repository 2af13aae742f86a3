import type { ServerWebSocket } from "bun";
import { MemoryBroker } from "../../src/broker/memory-broker.ts";
import { LocalHub } from "../../src/hub/local-hub.ts";
import type { Connection } from "../../src/ws/connection.ts";

/**
 * One socket as Bun's pub/sub sees it, behind a real LocalHub and MemoryBroker, with no server:
 * what reaches the socket (directly or through a topic it is subscribed to) lands in `sent`.
 * For tests of the subscribe path that need to control timing exactly (no network in between).
 */
export function oneSocket() {
  const sent: string[] = [];
  const topics = new Set<string>();
  const ws = {
    send: (f: string) => (sent.push(f), f.length),
    sendText: (f: string) => (sent.push(f), f.length),
    subscribe: (t: string) => void topics.add(t),
    unsubscribe: (t: string) => void topics.delete(t),
    isSubscribed: (t: string) => topics.has(t),
    getBufferedAmount: () => 0,
  } as unknown as ServerWebSocket<Connection>;
  const broker = new MemoryBroker();
  const hub = new LocalHub(broker);
  broker.attach(hub);
  // Bun's server.publish, for the topics this one socket is subscribed to.
  hub.attach({ subscriberCount: (t: string) => (topics.has(t) ? 1 : 0), publish: (t: string, f: string) => (topics.has(t) ? (sent.push(f), f.length) : 0) } as never);
  return { ws, sent, topics, broker, hub };
}
