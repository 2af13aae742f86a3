import type { Position } from "../history/history.ts";

/**
 * Node-level fan-out: carries serialized publications (`pub` frames) between the nodes that serve
 * a topic (`<tenant>/<channel>`). Sockets are not its business: each node's LocalHub
 * (src/hub/local-hub.ts) owns its sockets, tells its broker which topics it serves
 * (`subscribe`/`unsubscribe`) and takes the publications the broker hands it (PublicationSink).
 * Implementations: memory-broker.ts (one node, in process); redis-broker.ts (several nodes).
 *
 * Guarantees every implementation keeps.
 * On the publishing node:
 * - `publish` hands the publication to this node's own hub synchronously, before it returns, and
 *   returns what that hub reached. So the Publisher, which publishes inside the history's
 *   `deliver` (src/history/history.ts), fans a topic's publications out to this node's sockets in
 *   offset order, in the same step as it sequences them, whatever path each took.
 * - `publish` never throws for a topic nobody serves; it returns 0 (and a broker never drops a
 *   publication because this node has no subscriber: other nodes may have some).
 * - The excepted client (a `client` id of a welcome, `Connection.id`) travels with the publication
 *   to every node, so its socket is skipped wherever it is connected.
 * Across nodes (a cluster broker):
 * - A node receives a topic's publications only while it subscribes to the topic, from some time
 *   after `subscribe` until `unsubscribe`; they go to its hub's `deliverFromPeer`, never to
 *   `deliver`, and never its own publications back (the publishing node delivered those already).
 * - Per topic, the publications of one node arrive at every other node in publish order.
 * - Publications of one topic made on different nodes are ordered by their offsets (the history
 *   sequences them); pub/sub may still lose or reorder them between nodes, so a receiving node
 *   compares each publication's offset with the last it delivered for that topic and treats a
 *   gap as lost (its subscribers recover from history). That check is the cluster broker's (the
 *   Redis step), not the hub's; the memory broker cannot lose one. Ephemeral events (typing,
 *   presence changes) carry no offset: between nodes they are best effort.
 * Atomic: on the publishing node, `publish` and its local delivery are one synchronous step (no
 * other publication interleaves with it), and a publication reaches each node whole or not at
 * all. Nothing is atomic across nodes (one node may deliver it, another lose it) or across
 * `publish` calls; a publication's atomicity with its history entry is the history's
 * (HistoryStore.append). Offsets are not the broker's business: the Publisher assigns them
 * before calling `publish`.
 *
 * Counting (metrics `published`/`delivered`, the dashboard): the node that publishes counts the
 * publication and what its own hub reached (publish's return); a node that receives one from a
 * peer counts what its hub reached there (LocalHub's peer-delivery callback). Every delivery is
 * counted once, on the node whose socket got it.
 */
export interface Broker {
  /** Gives the broker this node's hub, once, before any publish or subscribe. */
  attach(hub: PublicationSink): void;
  /**
   * Publishes `frame` on `topic` to every node serving it, skipping the socket of `exceptClient`
   * (for events not echoed to their sender); returns how many sockets of THIS node it reached.
   * `position`: the publication's place in its channel's history (absent for ephemeral events),
   * which a cluster broker uses to deliver in offset order and to find gaps. `sent`: the history
   * already sent the publication to the other nodes when it kept it (RedisHistory's append script
   * publishes it in the broker's envelope, see Deliver); only this node's delivery is left, the
   * same as without it. A broker without peers ignores it.
   */
  publish(topic: string, frame: string, exceptClient?: string, position?: Position, sent?: boolean): number;
  /** This node serves `topic` from now on (its hub got a first local subscriber). */
  subscribe(topic: string): void;
  /** This node no longer serves `topic` (its hub lost the last local subscriber). */
  unsubscribe(topic: string): void;
  /** True while the broker can carry publications (for /ready). */
  isReady(): boolean;
  close(): Promise<void>;
}

/** Where a broker hands publications: a node's LocalHub. Neither method throws. */
export interface PublicationSink {
  /** This node's own publication: delivered to its local sockets now; returns how many it reached. */
  deliver(topic: string, frame: string, exceptClient?: string): number;
  /** A publication made on another node: delivered to the local sockets and counted here. */
  deliverFromPeer(topic: string, frame: string, exceptClient?: string): void;
}
