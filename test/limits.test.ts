import { describe, expect, test } from "bun:test";
import { connect as tcpConnect } from "node:net";
import { parseChannel } from "../src/channel.ts";
import { Client, startServer, type TestServer } from "./helpers.ts";

async function withServer(env: Record<string, string>, body: (s: TestServer) => Promise<void>) {
  const server = await startServer(env);
  try {
    await body(server);
  } finally {
    await server.stop();
  }
}

/** Opens a socket without waiting for a welcome; resolves with the close the server sends. */
function openAndAwaitClose(url: string): Promise<{ code: number; reason: string; frames: string[] }> {
  const frames: string[] = [];
  const socket = new WebSocket(url);
  socket.onmessage = (e) => frames.push(String(e.data));
  return new Promise((resolve) => (socket.onclose = (e) => resolve({ code: e.code, reason: e.reason, frames })));
}

describe("per-connection frame rate", () => {
  test("frames past the bucket get rate_limited; a sustained flood closes with 4008; others are unaffected", () =>
    withServer({ RATE_LIMIT_PER_SEC: "5", RATE_LIMIT_BURST: "10", RATE_LIMIT_MAX_REJECTED: "20" }, async (server) => {
      const flooder = await Client.open(server, { user: "flood" });
      const bystander = await Client.open(server, { user: "calm" });
      for (let i = 0; i < 200; i++) flooder.send({ type: "ping" });
      const seen: string[] = [];
      for (;;) {
        const frame = await flooder.next().catch(() => null);
        if (frame === null) break;
        seen.push(frame.type === "error" ? frame.error.code : frame.type);
      }
      expect(await flooder.closed).toEqual({ code: 4008, reason: "rate limit exceeded" });
      const pongs = seen.filter((s) => s === "pong").length;
      expect(pongs).toBeGreaterThanOrEqual(10);
      expect(pongs).toBeLessThanOrEqual(12); // the burst, plus at most what refilled meanwhile
      expect(seen.slice(0, 10)).toEqual(Array(10).fill("pong"));
      expect(seen.filter((s) => s === "rate_limited").length).toBe(21);
      expect(await bystander.request({ type: "ping" })).toMatchObject({ ok: true });
      bystander.close();
    }));

  test("a rate limited frame with an id gets a reply error with that id", () =>
    withServer({ RATE_LIMIT_PER_SEC: "1", RATE_LIMIT_BURST: "1" }, async (server) => {
      const c = await Client.open(server);
      c.send({ type: "ping", id: 1 });
      c.send({ type: "ping", id: 2 });
      expect(await c.next()).toEqual({ type: "reply", id: 1, ok: true });
      expect(await c.next()).toEqual({ type: "reply", id: 2, ok: false, error: { code: "rate_limited", message: "too many frames; slow down" } });
      c.close();
    }));
});

test("subscriptions past MAX_SUBSCRIPTIONS are refused with too_many_subscriptions", () =>
  withServer({ MAX_SUBSCRIPTIONS: "2" }, async (server) => {
    const c = await Client.open(server, { subChannels: ["dept:*"] });
    expect(await c.request({ type: "subscribe", channel: "dept:1" })).toMatchObject({ ok: true });
    expect(await c.request({ type: "subscribe", channel: "dept:2" })).toMatchObject({ ok: true });
    expect(await c.request({ type: "subscribe", channel: "dept:3" })).toMatchObject({ ok: false, error: { code: "too_many_subscriptions" } });
    await c.request({ type: "unsubscribe", channel: "dept:1" });
    expect(await c.request({ type: "subscribe", channel: "dept:3" })).toMatchObject({ ok: true });
    c.close();
  }));

describe("connection limits", () => {
  test("a user's connection past MAX_CONNECTIONS_PER_USER is closed with 4010 without a welcome", () =>
    withServer({ MAX_CONNECTIONS_PER_USER: "2" }, async (server) => {
      const a = await Client.open(server, { user: "tabby" });
      const b = await Client.open(server, { user: "tabby" });
      const third = await openAndAwaitClose(`${server.ws}?token=${await server.token({ user: "tabby" })}`);
      expect(third).toEqual({ code: 4010, reason: "too many connections for this user", frames: [] });
      const otherUser = await Client.open(server, { user: "someone" });
      a.close();
      await a.closed;
      const again = await Client.open(server, { user: "tabby" });
      for (const c of [b, otherUser, again]) c.close();
    }));

  test("a tenant's connection past MAX_CONNECTIONS_PER_TENANT is closed with 4010; other tenants connect", () =>
    withServer({ MAX_CONNECTIONS_PER_TENANT: "2" }, async (server) => {
      const a = await Client.open(server, { tenant: "small", user: "1" });
      const b = await Client.open(server, { tenant: "small", user: "2" });
      const third = await openAndAwaitClose(`${server.ws}?token=${await server.token({ tenant: "small", user: "3" })}`);
      expect(third.code).toBe(4010);
      expect(third.reason).toBe("too many connections for this tenant");
      const other = await Client.open(server, { tenant: "big", user: "1" });
      for (const c of [a, b, other]) c.close();
    }));
});

describe("token lifetime", () => {
  test("a connection whose token expires without refresh is closed with 4001", () =>
    withServer({ SWEEP_INTERVAL_MS: "50" }, async (server) => {
      const c = await Client.open(server, { ttlSec: 1 });
      const started = Date.now();
      expect(await c.closed).toEqual({ code: 4001, reason: "token expired" });
      expect(Date.now() - started).toBeLessThan(2500);
    }));

  test("refresh with a fresh token for the same user extends the connection", () =>
    withServer({ SWEEP_INTERVAL_MS: "50" }, async (server) => {
      const c = await Client.open(server, { user: "r", ttlSec: 1 });
      const fresh = await server.token({ user: "r", ttlSec: 60 });
      const reply = await c.request({ type: "refresh", token: fresh });
      expect(reply).toEqual({ type: "reply", id: 1, ok: true, expires_at: expect.any(Number) });
      expect(reply.expires_at).toBeGreaterThan(Date.now() / 1000 + 50);
      await Bun.sleep(1500); // past the first token's expiry: the connection must still be open
      expect(await c.request({ type: "ping" })).toMatchObject({ ok: true });
      c.close();
    }));

  test("refresh refuses another user's token and an invalid token, and keeps the connection", () =>
    withServer({}, async (server) => {
      const c = await Client.open(server, { user: "r" });
      expect(await c.request({ type: "refresh", token: await server.token({ user: "someone-else" }) })).toMatchObject({
        ok: false,
        error: { code: "forbidden" },
      });
      expect(await c.request({ type: "refresh", token: await server.token({ user: "r", tenant: "globex" }) })).toMatchObject({
        ok: false,
        error: { code: "forbidden" },
      });
      expect(await c.request({ type: "refresh", token: "nope" })).toMatchObject({ ok: false, error: { code: "unauthorized", message: "token is malformed" } });
      expect(await c.request({ type: "ping" })).toMatchObject({ ok: true });
      c.close();
    }));
});

/** Reads server frames from raw bytes until a close frame; returns its code. */
function closeCodeIn(bytes: Buffer): number | null {
  let at = bytes.indexOf("\r\n\r\n") + 4;
  while (at + 2 <= bytes.length) {
    const opcode = bytes[at]! & 0x0f;
    let length = bytes[at + 1]! & 0x7f;
    let header = 2;
    if (length === 126) {
      length = bytes.readUInt16BE(at + 2);
      header = 4;
    } else if (length === 127) {
      length = Number(bytes.readBigUInt64BE(at + 2));
      header = 10;
    }
    if (at + header + length > bytes.length) return null;
    if (opcode === 0x8) return bytes.readUInt16BE(at + header);
    at += header + length;
  }
  return null;
}

test("a client that stops reading is closed with 4009 once its send buffer passes the bound; readers keep receiving", () =>
  withServer({ SLOW_CONSUMER_BYTES: String(256 * 1024), SWEEP_INTERVAL_MS: "20" }, async (server) => {
    const token = await server.token({ user: "slow", subChannels: ["dept:*"] });
    const reader = await Client.open(server, { user: "fast", subChannels: ["dept:*"] });
    await reader.request({ type: "subscribe", channel: "dept:firehose" });

    // A raw TCP client: handshake, subscribe, then stop reading so the server's buffer grows.
    const socket = tcpConnect(server.port, "127.0.0.1");
    const chunks: Buffer[] = [];
    socket.on("data", (d) => chunks.push(Buffer.from(d)));
    await new Promise((r) => socket.once("connect", r));
    socket.write(
      `GET /ws?token=${token} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    while (!Buffer.concat(chunks).includes('"type":"welcome"')) await Bun.sleep(5);
    const subscribe = Buffer.from(JSON.stringify({ type: "subscribe", id: 1, channel: "dept:firehose" }));
    const mask = Buffer.from([1, 2, 3, 4]);
    socket.write(Buffer.concat([Buffer.from([0x81, 0x80 | subscribe.length]), mask, subscribe.map((b, i) => b ^ mask[i % 4]!)]));
    while (!Buffer.concat(chunks).includes('"id":1')) await Bun.sleep(5);
    socket.pause();

    const channel = parseChannel("acme", "dept:firehose");
    const payload = "x".repeat(16 * 1024);
    let slowClosed = false;
    for (let i = 0; i < 4000 && !slowClosed; i++) {
      await server.sinal.publisher.publish(channel, "tick", { i, payload });
      if (i % 50 === 49) {
        await Bun.sleep(25);
        slowClosed = server.sinal.gateway.size === 1;
      }
    }
    expect(slowClosed).toBe(true);
    const metrics = await (await fetch(`${server.http}/metrics`)).text();
    expect(metrics).toMatch(/sinal_slow_consumer_closes_total 1/);

    // The reader got every publication, in order.
    let last = 0;
    for (;;) {
      const f = await reader.next(200).catch(() => null);
      if (f === null) break;
      expect(f.offset).toBe(last + 1);
      last = f.offset;
    }
    expect(last).toBeGreaterThan(16);

    // The slow client, once it reads again, finds the 4009 close after what was queued.
    socket.resume();
    const deadline = Date.now() + 5000;
    let code: number | null = null;
    while (code === null && Date.now() < deadline) {
      await Bun.sleep(20);
      code = closeCodeIn(Buffer.concat(chunks));
    }
    expect(code).toBe(4009);
    socket.destroy();
    reader.close();
  }));
