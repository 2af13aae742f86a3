import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import { Backoff, SinalClient, SinalError, type CloseInfo, type Publication, type SinalClientOptions } from "../clients/js/src/index.ts";
import { startServer, type TestServer } from "./helpers.ts";
import { restBaseOf } from "../clients/js/src/rest.ts";
import { FakeSocket } from "./support/sdk-fake-socket.ts";

/** SDK unit tests play the server with FakeSocket; the last block runs against a real server. */

const clients: SinalClient[] = [];
const FAST_BACKOFF = { minMs: 5, maxMs: 40, factor: 2, jitter: 0 };

function makeClient(options: Partial<SinalClientOptions> = {}): SinalClient {
  const client = new SinalClient({ url: "ws://sinal.test/ws", token: "t1", WebSocket: FakeSocket, backoff: FAST_BACKOFF, ...options });
  clients.push(client);
  return client;
}

function nextEvent<T>(emitter: { once(event: any, fn: (payload: T) => void): unknown }, event: string): Promise<T> {
  return new Promise((resolve) => emitter.once(event, resolve));
}

/** Connects a fake-socket client and plays the welcome; returns the socket. */
async function connected(client: SinalClient, welcome: Record<string, unknown> = {}): Promise<FakeSocket> {
  const opened = FakeSocket.next();
  const connecting = client.connect();
  const socket = await opened;
  socket.welcome(welcome);
  await connecting;
  return socket;
}

/** A getToken whose calls the test answers; `calls` counts them. */
function controlledGetToken() {
  const control = {
    calls: 0,
    pending: [] as ((token: string) => void)[],
    called: null as null | (() => void),
    getToken: () =>
      new Promise<string>((resolve) => {
        control.calls++;
        control.pending.push(resolve);
        control.called?.();
      }),
    /** Resolves at the next getToken call. */
    nextCall: () => new Promise<void>((resolve) => (control.called = resolve)),
  };
  return control;
}

/** Resolves when the client's state becomes `state`. */
function stateBecomes(client: SinalClient, state: string): Promise<void> {
  return new Promise((resolve) => {
    const off = client.on("state", (s) => {
      if (s !== state) return;
      off();
      resolve();
    });
  });
}

// Far enough ahead that a loaded machine still schedules the refresh before expiry (a refresh is due halfway: ~1-1.5 s).
const soonExpiry = () => Math.floor(Date.now() / 1000) + 3;

beforeEach(() => FakeSocket.reset());
afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});

describe("Backoff", () => {
  test("delays grow by the factor from minMs and stop at maxMs", () => {
    const backoff = new Backoff({ minMs: 100, maxMs: 1000, factor: 2, jitter: 0 });
    expect(Array.from({ length: 6 }, () => backoff.next())).toEqual([100, 200, 400, 800, 1000, 1000]);
  });

  test("jitter draws each delay from [base * (1 - jitter), base]", () => {
    expect(new Backoff({ minMs: 1000, jitter: 0.5, random: () => 0 }).next()).toBe(1000);
    expect(new Backoff({ minMs: 1000, jitter: 0.5, random: () => 0.999999 }).next()).toBe(500);
    const delays = Array.from({ length: 200 }, () => {
      const b = new Backoff({ minMs: 1000, maxMs: 8000, jitter: 0.5 });
      b.next();
      return b.next(); // base 2000
    });
    expect(Math.min(...delays)).toBeGreaterThanOrEqual(1000);
    expect(Math.max(...delays)).toBeLessThanOrEqual(2000);
    expect(new Set(delays).size).toBeGreaterThan(50);
  });

  test("reset starts over from minMs", () => {
    const backoff = new Backoff({ minMs: 10, maxMs: 100, jitter: 0 });
    backoff.next();
    backoff.next();
    backoff.reset();
    expect(backoff.next()).toBe(10);
  });

  test("refuses settings that make no sense, naming them", () => {
    expect(() => new Backoff({ minMs: 100, maxMs: 50 })).toThrow("backoff.maxMs");
    expect(() => new Backoff({ jitter: 2 })).toThrow("backoff.jitter");
    expect(() => new Backoff({ factor: 0.5 })).toThrow("backoff.factor");
  });
});

describe("connecting and reconnecting", () => {
  test("offers the token as the bearer subprotocol beside sinal.v1", async () => {
    const socket = await connected(makeClient({ token: "abc.def.ghi" }));
    expect(socket.protocols).toEqual(["sinal.v1", "bearer.abc.def.ghi"]);
    expect(socket.url).toBe("ws://sinal.test/ws");
  });

  test("reconnect delays grow while attempts fail, are capped, and start over after a welcome", async () => {
    const client = makeClient();
    const closes: CloseInfo[] = [];
    client.on("close", (c) => closes.push(c));
    const first = FakeSocket.next();
    client.connect();
    let socket = await first;
    for (let i = 0; i < 5; i++) {
      const next = FakeSocket.next();
      socket.serverClose(1006);
      socket = await next;
    }
    expect(closes.map((c) => c.delayMs)).toEqual([5, 10, 20, 40, 40]);
    socket.welcome();
    const next = FakeSocket.next();
    socket.serverClose(1006);
    await next;
    expect(closes.at(-1)).toEqual({ code: 1006, reason: "", reconnect: true, delayMs: 5 });
  });

  test("reconnects with backoff after 1001, 4008, 4009, 4010 and 1006", async () => {
    const client = makeClient();
    let socket = await connected(client);
    for (const code of [1001, 4008, 4009, 4010, 1006]) {
      const closed = nextEvent<CloseInfo>(client, "close");
      const next = FakeSocket.next();
      socket.serverClose(code);
      expect(await closed).toMatchObject({ code, reconnect: true });
      socket = await next;
      socket.welcome();
    }
    expect(client.state).toBe("connected");
  });

  test("never reconnects after 4003 (forbidden)", async () => {
    const client = makeClient();
    const socket = await connected(client);
    const states: string[] = [];
    client.on("state", (s) => states.push(s));
    const closed = nextEvent<CloseInfo>(client, "close");
    socket.serverClose(4003, "forbidden");
    expect(await closed).toEqual({ code: 4003, reason: "forbidden", reconnect: false });
    expect(client.state).toBe("disconnected");
    expect(states).toEqual(["disconnected"]);
    await expect(client.publish("dept:a", "e", {})).rejects.toMatchObject({ code: "closed" });
    // Ten times the first backoff delay: a reconnect would have opened a socket by now.
    await Bun.sleep(50);
    expect(FakeSocket.all).toHaveLength(1);
  });

  test("a socket that is not welcomed within connectTimeoutMs is dropped and retried", async () => {
    const client = makeClient({ connectTimeoutMs: 20 });
    const next = FakeSocket.next();
    client.connect();
    const first = await next;
    const closed = await nextEvent<CloseInfo>(client, "close");
    expect(closed).toMatchObject({ code: 4000, reconnect: true });
    expect(first.closedWith?.code).toBe(4000);
    const second = await FakeSocket.next();
    second.welcome();
    expect(client.state).toBe("connected");
  });

  test("state goes connecting, connected, reconnecting, connecting, connected", async () => {
    const client = makeClient();
    const states: string[] = [];
    client.on("state", (s) => states.push(s));
    const socket = await connected(client);
    const next = FakeSocket.next();
    socket.serverClose(1006);
    (await next).welcome();
    expect(states).toEqual(["connecting", "connected", "reconnecting", "connecting", "connected"]);
  });
});

describe("tokens", () => {
  test("refreshes with a refresh frame before the token expires, from one getToken call", async () => {
    let calls = 0;
    const client = makeClient({ getToken: () => `t${++calls + 1}`, refreshMarginMs: 60_000 });
    const socket = await connected(client, { expires_at: soonExpiry() });
    const refresh = await socket.nextSent("refresh");
    expect(refresh.token).toBe("t2");
    expect(calls).toBe(1);
    socket.reply(refresh, { expires_at: Math.floor(Date.now() / 1000) + 3600 });
    expect(FakeSocket.all).toHaveLength(1);
  });

  test("after a 4001 close, connects again with a token from getToken", async () => {
    const tokens = controlledGetToken();
    const client = makeClient({ getToken: tokens.getToken });
    const socket = await connected(client);
    const called = tokens.nextCall();
    socket.serverClose(4001, "token expired");
    await called;
    const next = FakeSocket.next();
    tokens.pending[0]!("fresh");
    expect((await next).token).toBe("fresh");
    expect(tokens.calls).toBe(1);
  });

  test("a 4001 close without getToken stops the client", async () => {
    const client = makeClient();
    const socket = await connected(client);
    const closed = nextEvent<CloseInfo>(client, "close");
    socket.serverClose(4001);
    expect(await closed).toMatchObject({ code: 4001, reconnect: false });
    expect(client.state).toBe("disconnected");
  });

  test("a close before any welcome (an HTTP 401) gets a new token before the next attempt", async () => {
    const tokens = controlledGetToken();
    const client = makeClient({ getToken: tokens.getToken });
    const first = FakeSocket.next();
    client.connect();
    const called = tokens.nextCall();
    (await first).serverClose(1006);
    await called;
    const next = FakeSocket.next();
    tokens.pending[0]!("fresh");
    expect((await next).token).toBe("fresh");
  });

  test("a reconnect while a refresh waits for getToken joins that call, uses its token and sends no refresh", async () => {
    const tokens = controlledGetToken();
    const client = makeClient({ getToken: tokens.getToken, refreshMarginMs: 60_000 });
    const called = tokens.nextCall();
    const first = await connected(client, { expires_at: soonExpiry() });
    await called; // the refresh timer asked for a token
    const connecting = stateBecomes(client, "connecting");
    first.serverClose(1006);
    await connecting; // the new attempt waits for the same getToken call
    const next = FakeSocket.next();
    tokens.pending[0]!("fresh");
    const second = await next;
    second.welcome();
    expect(second.token).toBe("fresh");
    expect(tokens.calls).toBe(1);
    expect([...first.sentOf("refresh"), ...second.sentOf("refresh")]).toEqual([]);
  });

  test("a 4001 while a refresh waits for getToken makes no second call", async () => {
    const tokens = controlledGetToken();
    const client = makeClient({ getToken: tokens.getToken, refreshMarginMs: 60_000 });
    const called = tokens.nextCall();
    const first = await connected(client, { expires_at: soonExpiry() });
    await called;
    const next = FakeSocket.next();
    first.serverClose(4001);
    tokens.pending[0]!("fresh");
    expect((await next).token).toBe("fresh");
    expect(tokens.calls).toBe(1);
  });

  test("a 4001 racing a refresh frame reconnects with the refreshed token without calling getToken again", async () => {
    let calls = 0;
    const client = makeClient({ getToken: () => `t${++calls + 1}`, refreshMarginMs: 60_000 });
    const first = await connected(client, { expires_at: soonExpiry() });
    await first.nextSent("refresh"); // sent with t2, never answered: the server expired the old token first
    const next = FakeSocket.next();
    first.serverClose(4001);
    expect((await next).token).toBe("t2");
    expect(calls).toBe(1);
  });

  test("concurrent refresh() calls share one getToken call", async () => {
    const tokens = controlledGetToken();
    const client = makeClient({ getToken: tokens.getToken });
    const socket = await connected(client);
    const a = client.refresh();
    const b = client.refresh();
    tokens.pending[0]!("fresh");
    const frames = await socket.sentCount("refresh", 2);
    for (const f of frames) socket.reply(f, { expires_at: 2_000_000_000 });
    expect(await a).toEqual({ expires_at: 2_000_000_000 });
    expect(await b).toEqual({ expires_at: 2_000_000_000 });
    expect(tokens.calls).toBe(1);
    expect(frames.map((f) => f.token)).toEqual(["fresh", "fresh"]);
  });
});

describe("subscriptions", () => {
  test("resubscribes every channel with since after a reconnect and reports recovered with the replay count", async () => {
    const client = makeClient();
    const a = client.subscribe("room:1");
    const b = client.subscribe("room:2");
    const got: number[] = [];
    a.on("publication", (p) => got.push(p.offset!));
    const first = await connected(client);
    const [subA, subB] = first.sentOf("subscribe");
    expect(subA).toMatchObject({ channel: "room:1" });
    expect(subA!.since).toBeUndefined();
    first.reply(subA!, { channel: "room:1", epoch: "e1", offset: 5, recovered: false });
    first.reply(subB!, { channel: "room:2", epoch: "e2", offset: 7, recovered: false });
    expect(await a.ready).toMatchObject({ epoch: "e1", offset: 5 });
    first.receive({ type: "pub", channel: "room:1", event: "x", data: {}, epoch: "e1", offset: 6 });

    const next = FakeSocket.next();
    first.serverClose(1006);
    const second = await next;
    second.welcome();
    const resubs = second.sentOf("subscribe");
    expect(resubs.map((f) => [f.channel, f.since])).toEqual([
      ["room:1", { epoch: "e1", offset: 6 }],
      ["room:2", { epoch: "e2", offset: 7 }],
    ]);
    const recovered = nextEvent(a, "recovered");
    second.reply(resubs[0]!, { channel: "room:1", epoch: "e1", offset: 8, recovered: true });
    expect(a.state).toBe("subscribed");
    second.receive({ type: "pub", channel: "room:1", event: "x", data: {}, epoch: "e1", offset: 7 });
    second.receive({ type: "pub", channel: "room:1", event: "x", data: {}, epoch: "e1", offset: 8 });
    expect(await recovered).toEqual({ since: { epoch: "e1", offset: 6 }, epoch: "e1", offset: 8, replayed: 2 });
    expect(got).toEqual([6, 7, 8]);
  });

  test("a resubscribe the server cannot recover is a gap naming the reason", async () => {
    const client = makeClient();
    const sub = client.subscribe("room:1");
    const got: number[] = [];
    sub.on("publication", (p) => got.push(p.offset!));
    const first = await connected(client);
    first.reply(first.sentOf("subscribe")[0]!, { channel: "room:1", epoch: "e1", offset: 5, recovered: false });
    const next = FakeSocket.next();
    first.serverClose(4009);
    const second = await next;
    second.welcome();
    const gap = nextEvent(sub, "gap");
    second.reply(second.sentOf("subscribe")[0]!, { channel: "room:1", epoch: "e1", offset: 90, recovered: false, reason: "trimmed", history_from: 40 });
    expect(await gap).toEqual({ reason: "trimmed", since: { epoch: "e1", offset: 5 }, epoch: "e1", offset: 90, historyFrom: 40 });
    second.receive({ type: "pub", channel: "room:1", event: "x", data: {}, epoch: "e1", offset: 91 });
    expect(got).toEqual([91]);
    expect(sub.position).toEqual({ epoch: "e1", offset: 91 });
  });

  test("a refused subscription rejects ready with the server's code, ends, and is not sent again", async () => {
    const client = makeClient();
    const sub = client.subscribe("dept:secret");
    const first = await connected(client);
    const errored = nextEvent<SinalError>(sub, "error");
    first.replyError(first.sentOf("subscribe")[0]!, "forbidden", "not allowed");
    const err = await sub.ready.catch((e) => e);
    expect(err).toBeInstanceOf(SinalError);
    expect(err.code).toBe("forbidden");
    expect((await errored).code).toBe("forbidden");
    expect(sub.state).toBe("unsubscribed");
    expect(client.getSubscription("dept:secret")).toBeUndefined();
    const next = FakeSocket.next();
    first.serverClose(1006);
    const second = await next;
    second.welcome();
    expect(second.sentOf("subscribe")).toEqual([]);
  });

  test("a rate_limited subscribe is tried again", async () => {
    const client = makeClient({ retryDelayMs: 5 });
    const sub = client.subscribe("room:1");
    const socket = await connected(client);
    const again = socket.nextSent("subscribe");
    socket.replyError(socket.sentOf("subscribe")[0]!, "rate_limited");
    socket.reply(await again, { channel: "room:1", epoch: "e", offset: 0, recovered: false });
    expect(await sub.ready).toMatchObject({ offset: 0 });
  });

  test("a subscribe reply arriving after unsubscribe() is ignored; subscribing again starts afresh", async () => {
    const client = makeClient();
    const old = client.subscribe("room:1");
    const socket = await connected(client);
    const [first] = socket.sentOf("subscribe");
    void old.unsubscribe();
    const fresh = client.subscribe("room:1");
    expect(fresh).not.toBe(old);
    socket.reply(first!, { channel: "room:1", epoch: "e", offset: 3, recovered: false });
    expect(old.state).toBe("unsubscribed");
    expect(fresh.state).toBe("subscribing");
    const second = socket.sentOf("subscribe")[1]!;
    expect(second.since).toBeUndefined();
    socket.reply(second, { channel: "room:1", epoch: "e", offset: 4, recovered: false });
    expect(await fresh.ready).toMatchObject({ offset: 4 });
  });

  test("unsubscribe tells the server and stops deliveries", async () => {
    const client = makeClient();
    const sub = client.subscribe("room:1");
    const socket = await connected(client);
    socket.reply(socket.sentOf("subscribe")[0]!, { channel: "room:1", epoch: "e", offset: 0, recovered: false });
    await sub.ready;
    const got: Publication[] = [];
    sub.on("publication", (p) => got.push(p));
    const done = sub.unsubscribe();
    const frame = socket.sentOf("unsubscribe")[0]!;
    expect(frame.channel).toBe("room:1");
    socket.reply(frame, { channel: "room:1" });
    await done;
    socket.receive({ type: "pub", channel: "room:1", event: "x", data: {}, epoch: "e", offset: 1 });
    expect(got).toEqual([]);
    expect(client.getSubscription("room:1")).toBeUndefined();
  });
});

describe("offsets", () => {
  /** A client subscribed to room:1 at epoch "e", offset 5; returns the socket and what the app got. */
  async function subscribedAt5() {
    const client = makeClient();
    const sub = client.subscribe("room:1");
    const got: number[] = [];
    const gaps: unknown[] = [];
    sub.on("publication", (p) => got.push(p.offset!));
    sub.on("gap", (g) => gaps.push(g));
    const socket = await connected(client);
    socket.reply(socket.sentOf("subscribe")[0]!, { channel: "room:1", epoch: "e", offset: 5, recovered: false });
    await sub.ready;
    const pub = (offset: number, extra: Record<string, unknown> = {}) =>
      socket.receive({ type: "pub", channel: "room:1", event: "x", data: { offset }, epoch: "e", offset, ...extra });
    return { client, sub, socket, got, gaps, pub };
  }

  test("drops publications with an offset already seen", async () => {
    const { got, pub } = await subscribedAt5();
    for (const o of [6, 7, 7, 5, 6, 8]) pub(o);
    expect(got).toEqual([6, 7, 8]);
  });

  test("an unannounced jump is filled by subscribing again with since; nothing twice, nothing out of order", async () => {
    const { sub, socket, got, gaps, pub } = await subscribedAt5();
    pub(6);
    const fill = socket.nextSent("subscribe");
    pub(9);
    const frame = await fill;
    expect(frame.since).toEqual({ epoch: "e", offset: 6 });
    pub(10);
    expect(got).toEqual([6]);
    const recovered = nextEvent<{ replayed: number }>(sub, "recovered");
    socket.reply(frame, { channel: "room:1", epoch: "e", offset: 10, recovered: true });
    for (const o of [7, 8, 9, 10]) pub(o);
    pub(11);
    expect(got).toEqual([6, 7, 8, 9, 10, 11]);
    expect((await recovered).replayed).toBe(4);
    expect(gaps).toEqual([]);
    expect(socket.sentOf("subscribe")).toHaveLength(2);
  });

  test("a jump the server cannot fill is a gap, and the stream goes on from the reply's offset", async () => {
    const { socket, got, gaps, pub } = await subscribedAt5();
    const fill = socket.nextSent("subscribe");
    pub(9);
    socket.reply(await fill, { channel: "room:1", epoch: "e", offset: 12, recovered: false, reason: "trimmed", history_from: 10 });
    pub(13);
    expect(gaps).toEqual([{ reason: "trimmed", since: { epoch: "e", offset: 5 }, epoch: "e", offset: 12, historyFrom: 10 }]);
    expect(got).toEqual([13]);
  });

  test("a conflated publication skips offsets on purpose: delivered, no gap, no resubscribe", async () => {
    const { socket, got, gaps, pub } = await subscribedAt5();
    pub(6);
    pub(9, { conflated: 2 });
    pub(10);
    expect(got).toEqual([6, 9, 10]);
    expect(gaps).toEqual([]);
    expect(socket.sentOf("subscribe")).toHaveLength(1);
  });

  test("ephemeral publications (no offset) pass through untouched", async () => {
    const { client, sub, socket } = await subscribedAt5();
    const got: Publication[] = [];
    sub.on("publication", (p) => got.push(p));
    const all: Publication[] = [];
    client.on("publication", (p) => all.push(p));
    const typing = { type: "pub", channel: "room:1", event: "typing", data: { room: "1", user: "u2", typing: true } };
    socket.receive(typing);
    socket.receive(typing);
    expect(got).toEqual([typing, typing]);
    expect(all).toHaveLength(2);
  });

  test("a publication in a new epoch is a gap with reason epoch_changed, then delivered", async () => {
    const { sub, got, gaps, socket } = await subscribedAt5();
    socket.receive({ type: "pub", channel: "room:1", event: "x", data: {}, epoch: "f", offset: 1 });
    expect(gaps).toEqual([{ reason: "epoch_changed", since: null, epoch: "f", offset: 0 }]);
    expect(got).toEqual([1]);
    expect(sub.position).toEqual({ epoch: "f", offset: 1 });
  });

  test("publications on channels without a subscription (the own user: channel) reach the client's event", async () => {
    const client = makeClient();
    const socket = await connected(client);
    const got = nextEvent<Publication>(client, "publication");
    socket.receive({ type: "pub", channel: "user:u1", event: "notification", data: { id: 1 }, epoch: "e", offset: 1 });
    expect(await got).toMatchObject({ channel: "user:u1", event: "notification" });
  });
});

describe("requests and liveness", () => {
  test("a request without a reply rejects with code timeout", async () => {
    const client = makeClient({ requestTimeoutMs: 20 });
    await connected(client);
    const err = await client.publish("dept:a", "e", {}).catch((e) => e);
    expect(err).toBeInstanceOf(SinalError);
    expect(err.code).toBe("timeout");
  });

  test("an ok:false reply rejects with the server's code and context", async () => {
    const client = makeClient();
    const socket = await connected(client);
    const locking = client.lock("customer:77");
    const frame = socket.sentOf("lock")[0]!;
    expect(frame).toEqual({ type: "lock", resource: "customer:77", id: frame.id });
    socket.replyError(frame, "locked", "held by u2", { lock: { resource: "customer:77", user: "u2", since: 1 } });
    const err = await locking.catch((e) => e);
    expect(err.code).toBe("locked");
    expect(err.message).toBe("held by u2");
    expect(err.details.lock.user).toBe("u2");
  });

  test("each frame helper sends the contract's frame and resolves with the reply's result", async () => {
    const client = makeClient();
    const socket = await connected(client);
    const answer = async <T>(promise: Promise<T>, type: string, fields: Record<string, unknown>) => {
      const frame = socket.sentOf(type).at(-1)!;
      socket.reply(frame, fields);
      return { frame, result: await promise };
    };
    const message = { id: 3, room: "42", sender: "u1", content: "hi", created_at: 1, client_msg_id: "m1" };
    const sent = await answer(client.sendMessage("42", "hi", "m1"), "message", { message });
    expect(sent.frame).toMatchObject({ room: "42", content: "hi", client_msg_id: "m1" });
    expect(sent.result).toEqual(message);
    const auto = client.sendMessage("42", "again");
    expect(socket.sentOf("message").at(-1)!.client_msg_id).toBeString();
    socket.reply(socket.sentOf("message").at(-1)!, { message });
    await auto;
    expect((await answer(client.publish("dept:a", "ev", { a: 1 }), "publish", { offset: 4, epoch: "e" })).result).toMatchObject({ offset: 4, epoch: "e" });
    expect((await answer(client.typing("42", false), "typing", {})).frame).toMatchObject({ room: "42", typing: false });
    expect((await answer(client.read("42", 3), "read", { message_id: 3 })).result).toBe(3);
    expect((await answer(client.setPresence("busy"), "presence", { status: "busy" })).frame).toMatchObject({ status: "busy" });
    expect((await answer(client.unlock("customer:77"), "unlock", { released: true })).result).toBe(true);
  });

  test("requests made while connecting are sent at the welcome", async () => {
    const client = makeClient();
    const next = FakeSocket.next();
    client.connect();
    const publishing = client.publish("dept:a", "e", { n: 1 });
    const socket = await next;
    expect(socket.sent).toEqual([]);
    socket.welcome();
    const frame = socket.sentOf("publish")[0]!;
    socket.reply(frame, { offset: 1, epoch: "e" });
    expect(await publishing).toMatchObject({ offset: 1 });
  });

  test("requests in flight when the socket closes reject with disconnected; close() rejects the rest with closed", async () => {
    const client = makeClient();
    const socket = await connected(client);
    const inFlight = client.publish("dept:a", "e", {}).catch((e) => e.code);
    socket.serverClose(1006);
    expect(await inFlight).toBe("disconnected");
    const queued = client.publish("dept:a", "e", {}).catch((e) => e.code);
    client.close();
    expect(await queued).toBe("closed");
  });

  test("pings every ping_interval_ms and drops a socket that does not answer within pongTimeoutMs", async () => {
    const client = makeClient({ pongTimeoutMs: 30 });
    const socket = await connected(client, { ping_interval_ms: 10 });
    socket.reply(await socket.nextSent("ping"), {});
    await socket.nextSent("ping"); // left unanswered
    const next = FakeSocket.next();
    const closed = await nextEvent<CloseInfo>(client, "close");
    expect(closed).toMatchObject({ code: 4000, reconnect: true });
    expect(socket.closedWith?.code).toBe(4000);
    await next;
  });
});

describe("HTTP calls", () => {
  test("go to the server beside the /ws endpoint: same host, http(s), the path without /ws", () => {
    expect(restBaseOf("wss://rt.example.com/ws")).toBe("https://rt.example.com");
    expect(restBaseOf("ws://localhost:3000/sinal/ws?x=1")).toBe("http://localhost:3000/sinal");
    expect(restBaseOf("https://rt.example.com/ws/")).toBe("https://rt.example.com");
  });

  test("an httpUrl that is not http(s) is refused when the client is made, naming the option", () => {
    expect(() => makeClient({ httpUrl: "ftp://x" })).toThrow("httpUrl");
  });
});

describe("against a real server", () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startServer();
  });
  afterAll(async () => {
    await server.stop();
  });

  const realClient = (options: Partial<SinalClientOptions> & { token?: string }) => {
    const client = new SinalClient({ url: server.ws, backoff: { minMs: 20, maxMs: 200 }, ...options });
    clients.push(client);
    return client;
  };

  test("connects, subscribes and receives its own publication once", async () => {
    const token = await server.token({ user: "sdk1", subChannels: ["dept:*"], pubChannels: ["dept:*"] });
    const client = realClient({ token });
    const welcome = await client.connect();
    expect(welcome).toMatchObject({ type: "welcome", user: "sdk1", tenant: "acme" });
    const sub = client.subscribe("dept:sdk");
    const reply = await sub.ready;
    expect(reply).toMatchObject({ channel: "dept:sdk", recovered: false });
    const got = nextEvent<Publication>(sub, "publication");
    const published = await client.publish("dept:sdk", "hello", { n: 1 });
    expect(published.offset).toBe(reply.offset + 1);
    expect(await got).toMatchObject({ channel: "dept:sdk", event: "hello", data: { n: 1 }, offset: published.offset, epoch: reply.epoch });
  });

  test("a chat message resolves with the stored message and reaches the room as new_message", async () => {
    const client = realClient({ token: await server.token({ user: "sdk2", subChannels: ["room:*"] }) });
    await client.connect();
    const room = client.subscribe("room:sdk");
    await room.ready;
    const messages: Publication[] = [];
    room.on("publication", (p) => p.event === "new_message" && messages.push(p));
    const message = await client.sendMessage("sdk", "hi there", "cm-1");
    expect(message).toMatchObject({ room: "sdk", sender: "sdk2", content: "hi there", client_msg_id: "cm-1" });
    const again = await client.sendMessage("sdk", "hi there", "cm-1");
    expect(again.id).toBe(message.id);
    expect(messages.map((p) => (p.data as { id: number }).id)).toEqual([message.id]);
  });

  test("server refusals reject with their codes: publish and subscribe forbidden, unknown channel kind", async () => {
    const client = realClient({ token: await server.token({ user: "sdk3", subChannels: [], pubChannels: [] }) });
    await client.connect();
    await expect(client.publish("dept:x", "e", {})).rejects.toMatchObject({ code: "forbidden" });
    await expect(client.subscribe("dept:x").ready).rejects.toMatchObject({ code: "forbidden" });
    await expect(client.subscribe("nope:1").ready).rejects.toMatchObject({ code: "unknown_channel" });
    expect(client.state).toBe("connected");
  });

  test("a lock held by another user rejects with locked and names the holder", async () => {
    const a = realClient({ token: await server.token({ user: "lockA", subChannels: ["sync:*"] }) });
    const b = realClient({ token: await server.token({ user: "lockB", subChannels: ["sync:*"] }) });
    await Promise.all([a.connect(), b.connect()]);
    expect((await a.lock("customer:77")).lock).toMatchObject({ resource: "customer:77", user: "lockA" });
    const err = await b.lock("customer:77").catch((e) => e);
    expect(err.code).toBe("locked");
    expect(err.details.lock.user).toBe("lockA");
    expect(await a.unlock("customer:77")).toBe(true);
  });

  test("an expired token is refused (HTTP 401); getToken provides one and the client connects", async () => {
    const expired = await server.token({ user: "sdk4", ttlSec: -60 });
    let calls = 0;
    const client = realClient({ token: expired, getToken: async () => (calls++, server.token({ user: "sdk4" })) });
    expect(await client.connect()).toMatchObject({ user: "sdk4" });
    expect(calls).toBe(1);
  });

  test("roomMessages pages a granted room's messages and unread counts the user's own, with the client's token", async () => {
    const key = await server.apiKey("acme");
    const ids: number[] = [];
    for (const content of ["one", "two", "three"]) {
      const res = await fetch(`${server.http}/v1/rooms/sdk-hist/messages`, { method: "POST", headers: { authorization: `Bearer ${key}` }, body: JSON.stringify({ sender: "agent", content }) });
      ids.push(((await res.json()) as { id: number }).id);
    }
    const client = realClient({ token: await server.token({ user: "sdk6", subChannels: ["room:sdk-hist"] }) });
    // No socket needed: a page can show the conversation before it is connected.
    const first = await client.roomMessages("sdk-hist", { limit: 2 });
    expect(first.messages.map((m) => m.content)).toEqual(["three", "two"]);
    expect(first.next_before).toBe(ids[1]!);
    const older = await client.roomMessages("sdk-hist", { before: first.next_before!, limit: 2 });
    expect(older).toEqual({ messages: [expect.objectContaining({ id: ids[0], sender: "agent", content: "one" })], next_before: null });
    expect(await client.unread("sdk-hist")).toBe(3);
    await client.connect();
    await client.read("sdk-hist", ids[1]!);
    expect(await client.unread("sdk-hist")).toBe(1);
  });

  test("a room the token does not cover rejects with forbidden; an unreachable server with network", async () => {
    const token = await server.token({ user: "sdk7", subChannels: ["room:mine"] });
    const client = realClient({ token });
    await expect(client.roomMessages("theirs")).rejects.toMatchObject({ code: "forbidden", message: 'not a participant of room "theirs"' });
    await expect(client.unread("theirs")).rejects.toMatchObject({ code: "forbidden" });
    const nowhere = realClient({ token, httpUrl: "http://127.0.0.1:1" });
    await expect(nowhere.unread("mine")).rejects.toMatchObject({ code: "network" });
  });

  test("an HTTP call refused 401 gets a new token from getToken and is tried once more", async () => {
    const expired = await server.token({ user: "sdk8", subChannels: ["room:*"], ttlSec: -60 });
    let calls = 0;
    const client = realClient({ token: expired, getToken: async () => (calls++, server.token({ user: "sdk8", subChannels: ["room:*"] })) });
    expect(await client.roomMessages("sdk-fresh")).toEqual({ messages: [], next_before: null });
    expect(calls).toBe(1);
    // Without getToken the 401 is the answer.
    const stuck = realClient({ token: expired });
    await expect(stuck.unread("sdk-fresh")).rejects.toMatchObject({ code: "unauthorized" });
  });

  test("httpUrl sends the HTTP calls elsewhere than the socket's server", async () => {
    const client = realClient({ url: "ws://127.0.0.1:1/ws", httpUrl: `${server.http}/`, token: await server.token({ user: "sdk9", subChannels: ["room:*"] }) });
    expect(await client.unread("sdk-else")).toBe(0);
  });

  test("a publication another client published carries from: its user, connection id and name", async () => {
    const publisher = realClient({ token: await server.token({ user: "sdk10", name: "Ten", pubChannels: ["dept:*"] }) });
    const watcher = realClient({ token: await server.token({ user: "sdk11", subChannels: ["dept:*"] }) });
    const [welcome] = await Promise.all([publisher.connect(), watcher.connect()]);
    const sub = watcher.subscribe("dept:sdk-from");
    await sub.ready;
    const got = nextEvent<Publication>(sub, "publication");
    await publisher.publish("dept:sdk-from", "hello", {});
    expect((await got).from).toEqual({ user: "sdk10", client: welcome.client, name: "Ten" });
  });

  test("refreshes a short-lived token on the open connection before it expires", async () => {
    const client = realClient({ token: await server.token({ user: "sdk5", ttlSec: 2 }), getToken: () => server.token({ user: "sdk5", ttlSec: 3600 }), refreshMarginMs: 60_000 });
    const refreshed = nextEvent<{ expiresAt: number }>(client, "refreshed");
    const welcome = await client.connect();
    const { expiresAt } = await refreshed;
    expect(expiresAt).toBeGreaterThan(welcome.expires_at + 3000);
    expect(client.state).toBe("connected");
  });
});
