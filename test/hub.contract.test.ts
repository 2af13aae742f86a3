import { afterAll, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import type { Server, ServerWebSocket } from "bun";
import { LocalHub } from "../src/hub/local-hub.ts";
import { Client, startServer } from "./helpers.ts";

// The LocalHub guarantees (src/hub/local-hub.ts), on a real Bun server with real sockets.

type Socket = ServerWebSocket<unknown>;

/** Written to a socket directly after what a test delivered: frames on one socket keep their order. */
const FENCE = "fence";

/** What the hub told its broker about the topics this node serves, in order. */
class Interest {
  readonly calls: string[] = [];
  subscribe(topic: string): void {
    this.calls.push(`+${topic}`);
  }
  unsubscribe(topic: string): void {
    this.calls.push(`-${topic}`);
  }
}

let server: Server<unknown>;
const opening = new Map<string, (ws: Socket) => void>();
let hub: LocalHub;
let interest: Interest;
let peerDeliveries: [string, number][];
let made = 0;

beforeAll(() => {
  server = Bun.serve<{ id: string }>({
    port: 0,
    hostname: "127.0.0.1",
    fetch(req, srv) {
      const id = new URL(req.url).searchParams.get("id")!;
      return srv.upgrade(req, { data: { id } }) ? undefined : new Response("no", { status: 400 });
    },
    websocket: {
      open: (ws) => opening.get(ws.data.id)!(ws as Socket),
      message() {},
    },
  }) as Server<unknown>;
});
afterAll(() => server.stop(true));

beforeEach(() => {
  interest = new Interest();
  peerDeliveries = [];
  hub = new LocalHub(interest, (topic, reached) => void peerDeliveries.push([topic, reached]));
  hub.attach(server);
});

/** A client socket and its server side, registered with the hub under its client id. */
class Peer {
  private readonly received: string[] = [];
  private wake: (() => void) | null = null;
  socket!: Socket;

  constructor(
    readonly id: string,
    readonly ws: WebSocket,
  ) {
    ws.onmessage = (e) => {
      this.received.push(String(e.data));
      this.wake?.();
    };
  }

  /** Every frame the socket got since the last call, in order (up to a fence written now). */
  async got(): Promise<string[]> {
    this.socket.sendText(FENCE);
    while (!this.received.includes(FENCE)) await new Promise<void>((resolve) => (this.wake = resolve));
    return this.received.splice(0).slice(0, -1);
  }

  closed(topics: string[]): void {
    hub.socketClosed(this.socket, this.id, topics);
    this.ws.close();
  }
}

async function connect(): Promise<Peer> {
  const id = `client-${++made}`;
  const socket = new Promise<Socket>((resolve) => opening.set(id, resolve));
  const ws = new WebSocket(`ws://127.0.0.1:${server.port}/?id=${id}`);
  const peer = new Peer(id, ws);
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = reject;
  });
  peer.socket = await socket;
  opening.delete(id);
  hub.opened(peer.socket, id);
  return peer;
}

const numbers = (n: number) => Array.from({ length: n }, (_, i) => String(i + 1));

describe("LocalHub", () => {
  for (const name of ["room:1", "user:u1"]) {
    test(`delivers a topic's frames to each subscriber in order, and never to the same channel of another tenant (${name})`, async () => {
      const [a, b, other] = [await connect(), await connect(), await connect()];
      hub.subscribe(a.socket, `t1/${name}`);
      hub.subscribe(b.socket, `t1/${name}`);
      hub.subscribe(other.socket, `t2/${name}`);
      for (const frame of numbers(50)) expect(hub.deliver(`t1/${name}`, frame)).toBe(2);
      expect(await a.got()).toEqual(numbers(50));
      expect(await b.got()).toEqual(numbers(50));
      expect(await other.got()).toEqual([]);
      expect(hub.deliver(`t3/${name}`, "nobody")).toBe(0);
      expect(hub.channelCount()).toBe(2);
      for (const p of [a, b]) p.closed([`t1/${name}`]);
      other.closed([`t2/${name}`]);
    });
  }

  for (const topic of ["t1/dept:x", "t1/user:x"]) {
    test(`skips the excepted client's socket by its client id, subscribed or diverted, and only that one (${topic})`, async () => {
      const [a, b, c] = [await connect(), await connect(), await connect()];
      hub.subscribe(a.socket, topic);
      hub.subscribe(b.socket, topic);
      expect(hub.deliver(topic, "1", a.id)).toBe(1);
      // Excepting a client that is not subscribed, or one on another node, skips nobody.
      expect(hub.deliver(topic, "2", c.id)).toBe(2);
      expect(hub.deliver(topic, "3", "a-client-of-another-node")).toBe(2);
      const sunk: string[] = [];
      hub.divert(a.socket, topic, (f) => sunk.push(f));
      expect(hub.deliver(topic, "4", a.id)).toBe(1);
      expect(hub.deliver(topic, "5", b.id)).toBe(1);
      hub.undivert(a.socket, topic);
      expect(hub.deliver(topic, "6", b.id)).toBe(1);
      expect(sunk).toEqual(["5"]);
      expect(await a.got()).toEqual(["2", "3", "6"]);
      expect(await b.got()).toEqual(["1", "2", "3", "4"]);
      expect(await c.got()).toEqual([]);
      for (const p of [a, b]) p.closed([topic]);
      c.closed([]);
    });
  }

  for (const topic of ["t1/dept:held", "t1/user:held"]) {
    test(`a divert sends that socket's frames of the topic to the sink in order, and undivert resumes delivery (${topic})`, async () => {
      const [held, other, fresh] = [await connect(), await connect(), await connect()];
      hub.subscribe(held.socket, topic);
      hub.subscribe(other.socket, topic);
      const sunk: string[] = [];
      hub.divert(held.socket, topic, () => sunk.push("replaced sink"));
      hub.divert(held.socket, topic, (f) => sunk.push(f));
      // A divert of a socket not subscribed subscribes it.
      const freshSunk: string[] = [];
      hub.divert(fresh.socket, topic, (f) => freshSunk.push(f));
      expect(hub.deliver(topic, "1")).toBe(3);
      expect(hub.deliver(topic, "2")).toBe(3);
      hub.undivert(held.socket, topic);
      hub.undivert(held.socket, topic);
      // Unsubscribing ends a divert too: nothing more to the sink, nothing to the socket.
      hub.unsubscribe(fresh.socket, topic);
      expect(hub.deliver(topic, "3")).toBe(2);
      expect(sunk).toEqual(["1", "2"]);
      expect(freshSunk).toEqual(["1", "2"]);
      // Diverted frames are the sink's to send: the socket itself got only what came after undivert.
      expect(await held.got()).toEqual(["3"]);
      expect(await other.got()).toEqual(["1", "2", "3"]);
      expect(await fresh.got()).toEqual([]);
      expect(hub.channelCount()).toBe(1);
      held.closed([topic]);
      other.closed([topic]);
      fresh.closed([]);
      expect(hub.channelCount()).toBe(0);
    });
  }

  test("unsubscribe stops delivery; a close releases the socket's topics, diverted ones too", async () => {
    const c = await connect();
    hub.subscribe(c.socket, "t1/room:2");
    hub.subscribe(c.socket, "t1/room:3");
    hub.subscribe(c.socket, "t1/user:c");
    hub.divert(c.socket, "t1/room:4", () => undefined);
    expect(hub.channelCount()).toBe(4);
    hub.unsubscribe(c.socket, "t1/room:2");
    expect(hub.deliver("t1/room:2", "gone")).toBe(0);
    expect(hub.channelCount()).toBe(3);
    hub.socketClosed(c.socket, c.id, ["t1/room:3", "t1/user:c", "t1/room:4"]);
    expect(hub.channelCount()).toBe(0);
    expect(hub.deliver("t1/user:c", "gone")).toBe(0);
    expect(hub.deliver("t1/room:4", "gone")).toBe(0);
    expect(await c.got()).toEqual([]);
    c.ws.close();
  });

  test("tells its broker when a topic gets its first local subscriber and when it loses its last, diverted or not", async () => {
    const [a, b] = [await connect(), await connect()];
    hub.subscribe(a.socket, "t1/room:9");
    hub.subscribe(b.socket, "t1/room:9");
    hub.subscribe(b.socket, "t1/room:9");
    hub.divert(b.socket, "t1/room:9", () => undefined);
    hub.unsubscribe(a.socket, "t1/room:9");
    hub.unsubscribe(a.socket, "t1/room:9");
    expect(interest.calls).toEqual(["+t1/room:9"]);
    hub.unsubscribe(b.socket, "t1/room:9");
    expect(interest.calls).toEqual(["+t1/room:9", "-t1/room:9"]);
    hub.subscribe(a.socket, "t1/user:u");
    hub.divert(b.socket, "t1/user:u", () => undefined);
    hub.divert(a.socket, "t1/user:u", () => undefined);
    hub.socketClosed(a.socket, a.id, ["t1/user:u"]);
    expect(interest.calls).toEqual(["+t1/room:9", "-t1/room:9", "+t1/user:u"]);
    hub.socketClosed(b.socket, b.id, ["t1/user:u"]);
    expect(interest.calls).toEqual(["+t1/room:9", "-t1/room:9", "+t1/user:u", "-t1/user:u"]);
    // A second close report of the same socket changes nothing.
    hub.socketClosed(b.socket, b.id, ["t1/user:u"]);
    expect(interest.calls).toHaveLength(4);
    a.ws.close();
    b.ws.close();
  });

  test("keeps the client ids of open sockets only: every close forgets one, and an except naming a closed client skips nobody", async () => {
    const [a, b, c] = [await connect(), await connect(), await connect()];
    expect(hub.clientCount()).toBe(3);
    const topic = "t1/room:ids";
    for (const p of [a, b, c]) hub.subscribe(p.socket, topic);
    hub.unsubscribe(a.socket, topic);
    hub.socketClosed(a.socket, a.id, []);
    expect(hub.clientCount()).toBe(2);
    expect(hub.deliver(topic, "x", a.id)).toBe(2);
    // A socket closing under an id since taken by another socket leaves that one's entry alone.
    hub.opened(c.socket, b.id);
    hub.socketClosed(b.socket, b.id, []);
    expect(hub.deliver(topic, "y", b.id)).toBe(1);
    hub.socketClosed(c.socket, b.id, []);
    hub.socketClosed(c.socket, c.id, []);
    expect(hub.clientCount()).toBe(0);
    expect(await a.got()).toEqual([]);
    expect(await b.got()).toEqual(["x", "y"]);
    expect(await c.got()).toEqual(["x"]);
    for (const p of [a, b, c]) p.ws.close();
  });

  test("a publication from another node is delivered like one of this node, and reported with what it reached", async () => {
    const [a, b] = [await connect(), await connect()];
    hub.subscribe(a.socket, "t1/room:peer");
    hub.subscribe(b.socket, "t1/room:peer");
    hub.deliverFromPeer("t1/room:peer", "1");
    hub.deliverFromPeer("t1/room:peer", "2", b.id);
    hub.deliverFromPeer("t2/room:peer", "3");
    expect(peerDeliveries).toEqual([
      ["t1/room:peer", 2],
      ["t1/room:peer", 1],
      ["t2/room:peer", 0],
    ]);
    expect(await a.got()).toEqual(["1", "2"]);
    expect(await b.got()).toEqual(["1"]);
    for (const p of [a, b]) p.closed(["t1/room:peer"]);
  });

  test("delivers nothing before it has a server", () => {
    const detached = new LocalHub(new Interest());
    expect(detached.deliver("t1/room:1", "x")).toBe(0);
  });
});

describe("the gateway and its hub", () => {
  test("registers every welcomed connection's client id and forgets it on every close path", async () => {
    const server = await startServer({ MAX_CONNECTIONS_PER_USER: "1", SWEEP_INTERVAL_MS: "50" });
    const { hub } = server.sinal;
    try {
      const first = await Client.open(server, { user: "u1" });
      expect(hub.clientCount()).toBe(1);
      // Refused at open (4010): never registered.
      const refused = new WebSocket(`${server.ws}?token=${await server.token({ user: "u1" })}`);
      const refusal = await new Promise<number>((resolve) => (refused.onclose = (e) => resolve(e.code)));
      expect(refusal).toBe(4010);
      expect(hub.clientCount()).toBe(1);
      // Closed by the client.
      first.close();
      await first.closed;
      expect(hub.clientCount()).toBe(0);
      // Closed by the server (its token expired).
      const expiring = await Client.open(server, { user: "u2", ttlSec: 1 });
      expect(hub.clientCount()).toBe(1);
      expect((await expiring.closed).code).toBe(4001);
      expect(hub.clientCount()).toBe(0);
      // Closed by the drain of a stopping server.
      await Client.open(server, { user: "u3" });
      await Client.open(server, { user: "u4" });
      expect(hub.clientCount()).toBe(2);
    } finally {
      await server.stop();
    }
    expect(hub.clientCount()).toBe(0);
    expect(hub.channelCount()).toBe(0);
  });
});

describe("a publication from another node, in a running sinal", () => {
  test("reaches the subscribed sockets but its sender's, and counts the deliveries here, not a publication", async () => {
    const server = await startServer();
    try {
      const key = await server.apiKey("acme");
      const connect = async (user: string) => {
        const { client, welcome } = await Client.connect(`${server.ws}?token=${await server.token({ user, subChannels: ["*"] })}`);
        expect((await client.request({ type: "subscribe", channel: "dept:peer" })).ok).toBe(true);
        return { client, id: welcome.client as string };
      };
      const sender = await connect("sam");
      const reader = await connect("rita");
      const before = { ...server.sinal.metrics.tenant("acme") };
      const dashboard = async () =>
        ((await (await fetch(`${server.http}/v1/dashboard`, { headers: { authorization: `Bearer ${key}` } })).json()) as any).last_hour;
      const shownBefore = await dashboard();
      const frame = JSON.stringify({ type: "pub", channel: "dept:peer", event: "typing", data: { user: "sam" }, ts: 1 });
      server.sinal.hub.deliverFromPeer("acme/dept:peer", frame, sender.id);
      expect(await reader.client.next()).toEqual(JSON.parse(frame));
      // The sender's socket got nothing of it: its next frame is the reply to this ping.
      expect(await sender.client.request({ type: "ping" })).toMatchObject({ type: "reply", ok: true });
      const after = server.sinal.metrics.tenant("acme");
      expect(after.deliveries - before.deliveries).toBe(1);
      expect(after.publications).toBe(before.publications);
      const shown = await dashboard();
      expect(shown.deliveries - shownBefore.deliveries).toBe(1);
      expect(shown.events).toBe(shownBefore.events);
      for (const c of [sender, reader]) c.client.close();
    } finally {
      await server.stop();
    }
  });
});
