import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Client, post, startServer, type TestServer } from "./helpers.ts";

let server: TestServer;
beforeAll(async () => (server = await startServer({ MAX_FRAME_BYTES: "4096" })));
afterAll(() => server.stop());

const open = (opts = {}) => Client.open(server, { subChannels: ["dept:*", "sync:sales"], pubChannels: ["dept:*"], ...opts });

describe("client frames", () => {
  test("subscribe replies with channel, epoch, offset and recovered:false; a repeat is harmless", async () => {
    const c = await open();
    const first = await c.request({ type: "subscribe", channel: "dept:1" });
    expect(first).toEqual({ type: "reply", id: 1, ok: true, channel: "dept:1", epoch: expect.any(String), offset: 0, recovered: false });
    const again = await c.request({ type: "subscribe", channel: "dept:1" });
    expect(again).toMatchObject({ ok: true, offset: 0 });
    c.close();
  });

  test("publish reaches every subscriber, the publisher included, with consecutive offsets", async () => {
    const a = await open();
    const b = await open({ user: "u2" });
    await a.request({ type: "subscribe", channel: "dept:pub" });
    await b.request({ type: "subscribe", channel: "dept:pub" });
    a.send({ type: "publish", id: "p1", channel: "dept:pub", event: "note", data: { n: 1 } });
    // The publication is fanned out before the reply is written.
    const pubA = await a.next();
    expect(pubA).toMatchObject({ type: "pub", channel: "dept:pub", event: "note", data: { n: 1 }, offset: 1 });
    expect(await a.next()).toEqual({ type: "reply", id: "p1", ok: true, offset: 1, epoch: pubA.epoch });
    expect(await b.next()).toEqual(pubA);
    a.send({ type: "publish", channel: "dept:pub", event: "note", data: 2 });
    expect((await a.next()).offset).toBe(2);
    expect((await b.next()).offset).toBe(2);
    a.close();
    b.close();
  });

  test("publish without a pub_channels grant is forbidden and publishes nothing", async () => {
    const a = await open();
    const watcher = await open({ user: "w" });
    await watcher.request({ type: "subscribe", channel: "sync:sales" });
    const reply = await a.request({ type: "publish", channel: "sync:sales", event: "x", data: {} });
    expect(reply).toEqual({ type: "reply", id: 1, ok: false, error: { code: "forbidden", message: 'not allowed to publish to "sync:sales"' } });
    expect(await watcher.silentFor(150)).toBe(true);
    a.close();
    watcher.close();
  });

  test("unsubscribe stops delivery", async () => {
    const a = await open();
    await a.request({ type: "subscribe", channel: "dept:u" });
    expect(await a.request({ type: "unsubscribe", channel: "dept:u" })).toEqual({ type: "reply", id: 2, ok: true, channel: "dept:u" });
    expect((await post(server, "/v1/publish", { channel: "dept:u", event: "x", data: 1 }, await server.apiKey("acme"))).status).toBe(200);
    expect(await a.silentFor(150)).toBe(true);
    a.close();
  });

  test("ping with an id gets a reply, without one a pong", async () => {
    const a = await open();
    expect(await a.request({ type: "ping" })).toEqual({ type: "reply", id: 1, ok: true });
    a.send({ type: "ping" });
    expect(await a.next()).toEqual({ type: "pong" });
    a.close();
  });

  test("the server subscribes every connection to its own user channel", async () => {
    const a = await open({ user: "self" });
    expect((await post(server, "/v1/publish", { channel: "user:self", event: "direct", data: { hi: 1 } }, await server.apiKey("acme"))).status).toBe(200);
    expect(await a.next()).toMatchObject({ type: "pub", channel: "user:self", event: "direct", data: { hi: 1 }, offset: 1 });
    a.close();
  });

  test("subscribe with since answers recovered:true and replays what was missed; another epoch is recovered:false", async () => {
    const a = await open();
    const { epoch } = await a.request({ type: "subscribe", channel: "dept:since" });
    a.send({ type: "publish", channel: "dept:since", event: "e", data: 1 });
    expect(await a.next()).toMatchObject({ type: "pub", offset: 1 });
    const b = await open({ user: "u9" });
    expect(await b.request({ type: "subscribe", channel: "dept:since", since: { epoch, offset: 1 } })).toMatchObject({ ok: true, offset: 1, recovered: true });
    const c = await open({ user: "u10" });
    expect(await c.request({ type: "subscribe", channel: "dept:since", since: { epoch, offset: 0 } })).toMatchObject({ ok: true, offset: 1, recovered: true });
    expect(await c.next()).toMatchObject({ type: "pub", channel: "dept:since", offset: 1, epoch, data: 1 });
    const d = await open({ user: "u11" });
    expect(await d.request({ type: "subscribe", channel: "dept:since", since: { epoch: "other", offset: 1 } })).toMatchObject({ recovered: false, reason: "epoch_changed" });
    for (const x of [a, b, c, d]) x.close();
  });
});

describe("bad frames get the documented answer and the connection keeps working", () => {
  async function expectStillWorks(c: Client) {
    expect(await c.request({ type: "ping" })).toMatchObject({ type: "reply", ok: true });
  }

  test("malformed JSON gets an error frame", async () => {
    const c = await open();
    c.send("{not json");
    expect(await c.next()).toEqual({ type: "error", error: { code: "bad_request", message: "frame is not valid JSON" } });
    c.send("[1,2]");
    expect(await c.next()).toEqual({ type: "error", error: { code: "bad_request", message: "frame must be a JSON object" } });
    await expectStillWorks(c);
    c.close();
  });

  test("an unknown type is answered unknown_type, with the id when one was given", async () => {
    const c = await open();
    c.send({ type: "teleport", id: 5 });
    expect(await c.next()).toEqual({ type: "reply", id: 5, ok: false, error: { code: "unknown_type", message: 'unknown frame type "teleport"' } });
    c.send({ type: "teleport" });
    expect((await c.next()).error.code).toBe("unknown_type");
    c.send({ id: 6 });
    expect(await c.next()).toEqual({ type: "reply", id: 6, ok: false, error: { code: "bad_request", message: 'frame needs a string field "type"' } });
    await expectStillWorks(c);
    c.close();
  });

  test("wrong field types name the field", async () => {
    const c = await open();
    c.send({ type: "subscribe", id: 1, channel: 42 });
    expect(await c.next()).toMatchObject({ id: 1, ok: false, error: { code: "bad_request", message: expect.stringMatching(/^channel: /) } });
    c.send({ type: "publish", id: 2, channel: "dept:1", event: "has space", data: 1 });
    expect(await c.next()).toMatchObject({ id: 2, ok: false, error: { code: "bad_request", message: expect.stringMatching(/^event: /) } });
    c.send({ type: "subscribe", id: 3, channel: "dept:1", since: { epoch: "x", offset: -1 } });
    expect(await c.next()).toMatchObject({ id: 3, ok: false, error: { code: "bad_request", message: expect.stringMatching(/^since\/offset: /) } });
    c.send({ type: "ping", id: { nested: true } });
    expect(await c.next()).toEqual({ type: "error", error: { code: "bad_request", message: "id must be a safe integer (|id| < 2^53) or a string of at most 128 characters" } });
    await expectStillWorks(c);
    c.close();
  });

  test("unknown channel kinds and malformed names are refused", async () => {
    const c = await open({ subChannels: ["*"] });
    expect(await c.request({ type: "subscribe", channel: "lobby:1" })).toMatchObject({ ok: false, error: { code: "unknown_channel", message: 'unknown channel "lobby:1"' } });
    expect(await c.request({ type: "subscribe", channel: "global:x" })).toMatchObject({ ok: false, error: { code: "unknown_channel" } });
    expect(await c.request({ type: "subscribe", channel: "room" })).toMatchObject({ ok: false, error: { code: "unknown_channel" } });
    expect(await c.request({ type: "subscribe", channel: "acme/dept:1" })).toMatchObject({ ok: false, error: { code: "bad_request" } });
    expect(await c.request({ type: "subscribe", channel: "dept:a b" })).toMatchObject({ ok: false, error: { code: "bad_request" } });
    await expectStillWorks(c);
    c.close();
  });

  test("a frame over the size limit closes that socket with 1009; other clients keep working", async () => {
    const big = await open();
    const other = await open({ user: "other" });
    big.send({ type: "ping", pad: "x".repeat(5000) });
    expect((await big.closed).code).toBe(1009);
    await expectStillWorks(other);
    other.close();
  });

  test("a binary frame closes that socket with 1008; other clients keep working", async () => {
    const bin = await open();
    const other = await open({ user: "other2" });
    bin.socket.send(new Uint8Array([1, 2, 3]));
    expect(await bin.closed).toEqual({ code: 1008, reason: "binary frames are not accepted" });
    await expectStillWorks(other);
    other.close();
  });

  test("rejected frames are counted by code in /metrics", async () => {
    const c = await open();
    c.send("{nope");
    await c.next();
    const text = await (await fetch(`${server.http}/metrics`)).text();
    expect(text).toMatch(/sinal_rejected_frames_total\{code="bad_request"\} [1-9]/);
    c.close();
  });
});

test("a barrage of random garbage frames is answered frame by frame and the connection stays usable", async () => {
  const c = await Client.open(server);
  let seed = 42;
  const rand = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  const pick = <T>(xs: T[]) => xs[Math.floor(rand() * xs.length)]!;
  const values = [null, true, 0, -1, 1e308, "", "dept:1", [], {}, { a: [1] }, "x".repeat(300)];
  const frames: string[] = [];
  for (let i = 0; i < 60; i++) {
    const kind = rand();
    if (kind < 0.3) frames.push(String.fromCharCode(...Array.from({ length: 1 + Math.floor(rand() * 40) }, () => 32 + Math.floor(rand() * 90))));
    else if (kind < 0.4) frames.push("[".repeat(2000) + "]".repeat(2000));
    else {
      const frame: Record<string, unknown> = { type: pick(["subscribe", "publish", "unsubscribe", "refresh", "ping", "nope", 7, null]) };
      for (const field of ["channel", "event", "data", "since", "token", "id"]) if (rand() < 0.5) frame[field] = pick(values);
      frames.push(JSON.stringify(frame));
    }
  }
  for (const f of frames) c.send(f);
  for (let i = 0; i < frames.length; i++) {
    const answer = await c.next();
    expect(["error", "reply", "pong"]).toContain(answer.type);
  }
  expect(await c.silentFor(100)).toBe(true);
  expect(await c.request({ type: "ping" })).toMatchObject({ ok: true });
  c.close();
});
