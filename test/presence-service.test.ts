import { expect, test } from "bun:test";
import { parseChannel, type Channel } from "../src/channel.ts";
import { ChannelHistory } from "../src/history/channel-history.ts";
import { MemoryHistory } from "../src/history/memory-history.ts";
import { Metrics } from "../src/metrics.ts";
import { oneSocket } from "./support/one-socket.ts";
import { Namespaces, parseNamespaces } from "../src/namespaces.ts";
import type { Peer } from "../src/peer.ts";
import { MemoryPresenceStore } from "../src/presence/memory-presence-store.ts";
import { PresenceService, type PresenceTimes } from "../src/presence/presence-service.ts";
import type { MemberInfo, MemberKey, PresenceStore, StatusChange } from "../src/presence/presence-store.ts";
import { Publisher } from "../src/publisher.ts";
import { Connection } from "../src/ws/connection.ts";
import { FrameHandlers } from "../src/ws/handlers.ts";
import { Listeners } from "../src/ws/hooks.ts";

// The presence service over its store, below the sockets: over a store that answers with
// Promises (as a shared Redis one will) the subscribe reply waits for the snapshot, frames
// published meanwhile follow the reply, and the subscriber's own user_joined follows both; over
// a store shared by two services (two nodes), the entries of a node that stopped refreshing
// expire after their TTL and the other node announces the leave.

/** The memory store behind a network: every answer comes a macrotask later, in call order. */
class RemoteStore implements PresenceStore {
  readonly inner = new MemoryPresenceStore();
  calls = 0;
  private later<T>(answer: () => T): Promise<T> {
    this.calls++;
    return new Promise((resolve) => setTimeout(() => resolve(answer()), 0));
  }
  add(channel: Channel, member: MemberKey, expiresAt: number, info?: MemberInfo) {
    return this.later(() => this.inner.add(channel, member, expiresAt, info));
  }
  refresh(channel: Channel, member: MemberKey, expiresAt: number) {
    return this.later(() => this.inner.refresh(channel, member, expiresAt));
  }
  remove(channel: Channel, member: MemberKey) {
    return this.later(() => this.inner.remove(channel, member));
  }
  mark(channel: Channel, user: string, change: StatusChange) {
    return this.later(() => this.inner.mark(channel, user, change));
  }
  members(channel: Channel) {
    return this.later(() => this.inner.members(channel));
  }
  find(channel: Channel, users: readonly string[]) {
    return this.later(() => this.inner.find(channel, users));
  }
  expire(now: number) {
    return this.later(() => this.inner.expire(now));
  }
}

const namespaces = new Namespaces(parseNamespaces({ SINAL_NAMESPACES: JSON.stringify([{ name: "support", presence: true, join_leave: true }]) }));

function setup(store: PresenceStore, times: PresenceTimes = { awayAfterMs: 60_000, leaveGraceMs: 0 }) {
  const { ws, sent, broker, hub } = oneSocket();
  const metrics = new Metrics(10);
  // No channel here is durable: the store's history is never asked.
  const publisher = new Publisher(new ChannelHistory(new MemoryHistory(), {} as never, namespaces), broker, metrics);
  const presence = new PresenceService(store, publisher, namespaces, times);
  const listeners = new Listeners([presence], (err) => {
    throw err;
  });
  const conn = new Connection("c1", { user: "u1", tenant: "acme", expiresAt: Date.now() / 1000 + 600, subChannels: ["*"], pubChannels: ["*"], roles: [] }, {} as never, 100, 0);
  conn.ws = ws;
  const handlers = new FrameHandlers(
    {
      respond: {
        reply: (_c, id, fields) => void sent.push(JSON.stringify({ type: "reply", id, ok: true, ...fields })),
        sendFrames: (_c, frames) => void sent.push(...frames),
        budget: () => 1 << 20,
        overflow: () => undefined,
        replay: () => undefined,
      },
      verifier: {} as never,
      publisher,
      hub,
      metrics,
      namespaces,
      listeners,
      maxSubscriptions: 10,
      subscribeExtras: [presence.subscribeExtra()],
    },
    {},
  );
  const frames = () =>
    sent.map((f) => JSON.parse(f) as Record<string, any>).map((f) => (f.type === "reply" ? `reply ${JSON.stringify(f.presence)}` : `${f.event} ${JSON.stringify(f.data)}`));
  return { handlers, conn, presence, listeners, publisher, store, frames };
}

/**
 * Two nodes' presence services over one memory store, and a watcher: a connection of the first
 * setup's subscribed to the tenant's `presence` channel; `frames` is what it received.
 */
async function twoNodesWatched(times: PresenceTimes) {
  const store = new MemoryPresenceStore();
  const { handlers, conn, listeners, publisher, frames } = setup(store, times);
  listeners.opened(conn);
  await handlers.handle(conn, { type: "subscribe", id: 1, channel: "presence" });
  const nodes = [new PresenceService(store, publisher, namespaces, times), new PresenceService(store, publisher, namespaces, times)] as const;
  return { nodes, frames };
}

test("over a store that answers later, the reply carries the snapshot, then what was published meanwhile, then the subscriber's own join", async () => {
  const store = new RemoteStore();
  const { handlers, conn, presence, listeners, publisher, frames } = setup(store);
  const room = parseChannel("acme", "support:7", namespaces);
  // Another user, on another connection, already in the channel: plain values, no socket.
  const ana: Peer = { tenant: "acme", user: "ana", client: "c0", name: "Ana" };
  presence.opened(ana);
  presence.subscribed(ana, room);
  listeners.opened(conn);
  await Bun.sleep(5);
  const calls = store.calls;

  const answered = handlers.handle(conn, { type: "subscribe", id: 1, channel: "support:7" });
  // The snapshot is being read: nothing is written yet, and a publication now is held for after the reply.
  expect(answered).toBeInstanceOf(Promise);
  publisher.publishEphemeral(room, "note", { n: 1 });
  expect(frames()).toEqual([]);
  await answered;
  expect(store.calls).toBeGreaterThan(calls);
  await Bun.sleep(5);
  expect(frames()).toEqual([
    `reply ${JSON.stringify([{ user: "ana", name: "Ana", status: "online" }, { user: "u1", status: "online" }])}`,
    'note {"n":1}',
    'user_joined {"channel":"support:7","user":"u1"}',
  ]);

  // Its close (no grace here) is a leave once the store answers.
  listeners.closed(conn, 1000);
  await Bun.sleep(5);
  expect(await presence.members(room)).toEqual([{ user: "ana", name: "Ana", status: "online" }]);
});

test("the entries of a node that stops refreshing expire after their TTL, and another node announces the leave once", async () => {
  const store = new MemoryPresenceStore();
  // This node watches the tenant's presence channel through its one connection.
  const times = { awayAfterMs: 600_000, leaveGraceMs: 0, memberTtlMs: 60_000, refreshEveryMs: 25_000 };
  const { handlers, conn, presence: here, listeners, publisher, frames } = setup(store, times);
  listeners.opened(conn);
  await handlers.handle(conn, { type: "subscribe", id: 1, channel: "presence" });
  const node = (store: PresenceStore) => new PresenceService(store, publisher, namespaces, times);
  const alive = node(store);
  const stopped = node(store);
  const watcher = node(store);
  const start = Date.now();
  alive.opened({ tenant: "acme", user: "al", client: "a1" });
  stopped.opened({ tenant: "acme", user: "st", client: "s1", name: "St" });
  const events = () => frames().filter((f) => !f.startsWith("reply"));
  expect(events()).toEqual(['presence {"user":"al","status":"online"}', 'presence {"user":"st","name":"St","status":"online"}']);

  // Two minutes on: `alive` refreshed every 25 s; `stopped` never swept again (its process died).
  for (let t = start + 25_000; t <= start + 120_000; t += 25_000) {
    alive.sweep(t);
    here.sweep(t);
  }
  watcher.sweep(start + 120_000);
  expect(events().slice(2)).toEqual(['presence {"user":"st","name":"St","status":"offline"}']);
  expect((await watcher.snapshot("acme")).map((e) => e.user)).toEqual(["u1", "al"]);
  // Expired once: no node announces it again.
  alive.sweep(start + 121_000);
  watcher.sweep(start + 122_000);
  expect(events().length).toBe(3);
});

test("a user's status is decided over its connections on every node, and each change is published once", async () => {
  // Entries outlast the test: no node's sweep expires another's here.
  const { nodes: [one, two], frames } = await twoNodesWatched({ awayAfterMs: 60_000, leaveGraceMs: 0, memberTtlMs: 3_600_000, refreshEveryMs: 25_000 });
  const onOne: Peer = { tenant: "acme", user: "mia", client: "m1" };
  const onTwo: Peer = { tenant: "acme", user: "mia", client: "m2" };
  const start = Date.now();
  one.opened(onOne);
  two.opened(onTwo);
  const events = () => frames().filter((f) => f.startsWith("presence") && f.includes("mia"));
  expect(events()).toEqual(['presence {"user":"mia","status":"online"}']);

  // Node one saw no frame for the away time, node two did: still online, nothing published.
  two.active(onTwo, start + 50_000);
  one.sweep(start + 61_000);
  two.sweep(start + 61_000);
  expect(events()).toHaveLength(1);
  expect(await one.statusOf("acme", ["mia"])).toEqual([{ user: "mia", status: "online" }]);
  // Now neither did: away, once, whichever node noticed last.
  two.sweep(start + 111_000);
  one.sweep(start + 111_000);
  expect(events()).toEqual(['presence {"user":"mia","status":"online"}', 'presence {"user":"mia","status":"away"}']);
  // A frame on node one brings the user back for every node.
  one.active(onOne, start + 112_000);
  expect(events().at(-1)).toBe('presence {"user":"mia","status":"online"}');
  expect(await two.statusOf("acme", ["mia"])).toEqual([{ user: "mia", status: "online" }]);

  // A status chosen on node two holds on node one too: activity there does not undo it.
  expect(await two.choose(onTwo, "busy")).toBe("busy");
  one.sweep(start + 200_000);
  one.active(onOne, start + 201_000);
  expect(events().slice(3)).toEqual(['presence {"user":"mia","status":"busy"}']);
  expect(await one.choose(onOne, "online")).toBe("online");
  expect(events().slice(3)).toEqual(['presence {"user":"mia","status":"busy"}', 'presence {"user":"mia","status":"online"}']);

  // Node one's connection closes while node two's is idle: the user is away, announced once.
  two.sweep(start + 400_000);
  expect(events()).toHaveLength(5);
  one.closed(onOne);
  expect(events().slice(5)).toEqual(['presence {"user":"mia","status":"away"}']);
});

test("a node that dies with the only active connection of a user leaves it away once its entries expire", async () => {
  const { nodes: [alive, dead], frames } = await twoNodesWatched({ awayAfterMs: 10_000, leaveGraceMs: 0, memberTtlMs: 60_000, refreshEveryMs: 25_000 });
  const start = Date.now();
  alive.opened({ tenant: "acme", user: "ivo", client: "i1" });
  dead.opened({ tenant: "acme", user: "ivo", client: "i2" });
  const events = () => frames().filter((f) => f.startsWith("presence") && f.includes("ivo"));
  // The live node's connection idles; the dead node's entry says active until it expires (60 s).
  alive.sweep(start + 25_000);
  alive.sweep(start + 50_000);
  expect(events()).toEqual(['presence {"user":"ivo","status":"online"}']);
  alive.sweep(start + 75_000);
  expect(events()).toEqual(['presence {"user":"ivo","status":"online"}', 'presence {"user":"ivo","status":"away"}']);
  expect(await alive.statusOf("acme", ["ivo"])).toEqual([{ user: "ivo", status: "away" }]);
});

test("a node cut off past the TTL comes back: its connection's entry is added again and the status it moves is published", async () => {
  const { nodes: [cutOff, other], frames } = await twoNodesWatched({ awayAfterMs: 10_000, leaveGraceMs: 0, memberTtlMs: 60_000, refreshEveryMs: 25_000 });
  const start = Date.now();
  const active: Peer = { tenant: "acme", user: "uma", client: "a1" };
  cutOff.opened(active);
  other.opened({ tenant: "acme", user: "uma", client: "b1" });
  const events = () => frames().filter((f) => f.startsWith("presence") && f.includes("uma"));
  // The other node's connection idles and it refreshes; the cut-off node does neither until +70 s.
  other.sweep(start + 25_000);
  other.sweep(start + 50_000);
  other.sweep(start + 65_000);
  expect(events()).toEqual(['presence {"user":"uma","status":"online"}', 'presence {"user":"uma","status":"away"}']);
  // Back: its live connection is active (a frame just came), so the user is online again, announced.
  cutOff.active(active, start + 69_000);
  cutOff.sweep(start + 70_000);
  expect(events().slice(2)).toEqual(['presence {"user":"uma","status":"online"}']);
  expect(await other.statusOf("acme", ["uma"])).toEqual([{ user: "uma", status: "online" }]);
});
