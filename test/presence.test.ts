import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { connect as tcpConnect } from "node:net";
import { Client, startServer, type TestServer } from "./helpers.ts";

let server: TestServer;
let key: string;
beforeAll(async () => {
  // No leave grace here: offline at the close (the grace is in presence-channels.test.ts).
  server = await startServer({ PRESENCE_AWAY_AFTER_MS: "400", SWEEP_INTERVAL_MS: "25", PRESENCE_LEAVE_GRACE_MS: "0" });
  key = await server.apiKey("acme");
});
afterAll(() => server.stop());

const presenceOf = (user: string, status: string, name?: string) => ({
  type: "pub",
  channel: "presence",
  event: "presence",
  data: name === undefined ? { user, status } : { user, name, status },
  ts: expect.any(Number),
});

async function watch(tenant = "acme", user = "watcher") {
  const c = await Client.open(server, { tenant, user, subChannels: ["room:*", "presence"] });
  const reply = await c.request({ type: "subscribe", channel: "presence" });
  return { c, reply };
}

describe("presence", () => {
  test("subscribing to presence answers with the snapshot; two tabs are one online and one offline", async () => {
    const { c: watcher, reply } = await watch("acme", "w1");
    expect(reply.presence).toContainEqual({ user: "w1", status: "online" });
    const tab1 = await Client.open(server, { user: "carol", name: "Carol" });
    expect(await watcher.next()).toEqual(presenceOf("carol", "online", "Carol"));
    const tab2 = await Client.open(server, { user: "carol", name: "Carol" });
    tab1.close();
    await tab1.closed;
    expect(await watcher.silentFor(150)).toBe(true);
    const again = await watcher.request({ type: "subscribe", channel: "presence" });
    expect(again.presence).toContainEqual({ user: "carol", name: "Carol", status: "online" });
    tab2.close();
    expect(await watcher.next()).toEqual(presenceOf("carol", "offline", "Carol"));
    watcher.close();
  });

  test("a client chooses busy and away; presence offline on close keeps no offset", async () => {
    const { c: watcher } = await watch("acme", "w2");
    const dave = await Client.open(server, { user: "dave" });
    expect(await watcher.next()).toEqual(presenceOf("dave", "online"));
    expect(await dave.request({ type: "presence", status: "busy" })).toEqual({ type: "reply", id: 1, ok: true, status: "busy" });
    expect(await watcher.next()).toEqual(presenceOf("dave", "busy"));
    // A chosen status survives activity.
    expect(await dave.request({ type: "ping" })).toMatchObject({ ok: true });
    expect(await dave.request({ type: "presence", status: "online" })).toMatchObject({ status: "online" });
    expect(await watcher.next()).toEqual(presenceOf("dave", "online"));
    expect(await dave.request({ type: "presence", status: "sleeping" })).toMatchObject({ ok: false, error: { code: "bad_request" } });
    dave.close();
    expect(await watcher.next()).toEqual(presenceOf("dave", "offline"));
    watcher.close();
  });

  test("a user idle past the away time becomes away, and online again on its next frame; a keepalive ping is not activity", async () => {
    const { c: watcher } = await watch("acme", "w3");
    const idle = await Client.open(server, { user: "idler" });
    expect(await watcher.next()).toEqual(presenceOf("idler", "online"));
    // The watcher itself goes idle too; skip its own presence events.
    const next = async () => {
      for (;;) {
        const f = await watcher.next(2000);
        if (f.data?.user === "idler") return f;
      }
    };
    expect(await next()).toEqual(presenceOf("idler", "away"));
    idle.send({ type: "ping" });
    expect(await idle.next()).toEqual({ type: "pong" });
    // The ping kept the socket open without making the user present.
    expect(await next().then(() => "changed", () => "still away")).toBe("still away");
    idle.send({ type: "subscribe", id: 1, channel: "global" });
    expect(await next()).toEqual(presenceOf("idler", "online"));
    idle.close();
    expect(await next()).toEqual(presenceOf("idler", "offline"));
    watcher.close();
  });

  test("GET /v1/presence lists the tenant's users, or a room's, with status", async () => {
    const erin = await Client.open(server, { user: "erin", subChannels: ["room:*"] });
    expect(await erin.request({ type: "subscribe", channel: "room:p1" })).toMatchObject({ ok: true });
    const frank = await Client.open(server, { user: "frank" });
    await frank.request({ type: "presence", status: "busy" });
    const all = (await (await fetch(`${server.http}/v1/presence`, { headers: { authorization: `Bearer ${key}` } })).json()) as any;
    expect(all.channel).toBe("presence");
    expect(all.users).toContainEqual({ user: "erin", status: "online" });
    expect(all.users).toContainEqual({ user: "frank", status: "busy" });
    const room = (await (await fetch(`${server.http}/v1/presence?channel=room:p1`, { headers: { authorization: `Bearer ${key}` } })).json()) as any;
    expect(room).toEqual({ channel: "room:p1", users: [{ user: "erin", status: "online" }] });
    const bad = await fetch(`${server.http}/v1/presence?channel=dept:x`, { headers: { authorization: `Bearer ${key}` } });
    expect(bad.status).toBe(400);
    const other = (await (await fetch(`${server.http}/v1/presence`, { headers: { authorization: `Bearer ${await server.apiKey("globex")}` } })).json()) as any;
    expect(other.users).toEqual([]);
    erin.close();
    frank.close();
  });

  test("another tenant's watcher sees none of these changes", async () => {
    const { c: foreign } = await watch("globex", "spy");
    const acmeUser = await Client.open(server, { user: "quiet" });
    acmeUser.close();
    await acmeUser.closed;
    expect(await foreign.silentFor(150)).toBe(true);
    foreign.close();
  });
});

test("a client that vanishes without a close frame goes offline once the idle timeout passes", async () => {
  const idleServer = await startServer({ IDLE_TIMEOUT_S: "2", PING_INTERVAL_MS: "1000", PRESENCE_LEAVE_GRACE_MS: "0" });
  try {
    const watcher = await Client.open(idleServer, { user: "w", subChannels: ["presence"] });
    await watcher.request({ type: "subscribe", channel: "presence" });
    // A raw socket that completes the handshake, then never answers a ping nor sends a frame.
    const token = await idleServer.token({ user: "ghost" });
    const socket = tcpConnect(idleServer.port, "127.0.0.1");
    await new Promise((r) => socket.once("connect", r));
    socket.write(
      `GET /ws?token=${token} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    expect(await watcher.next()).toMatchObject({ event: "presence", data: { user: "ghost", status: "online" } });
    const started = Date.now();
    // The watcher answers pings (its client does) and stays; the ghost is cut after the idle timeout.
    for (;;) {
      const f = await watcher.next(15_000);
      if (f.data?.user === "ghost") {
        expect(f.data.status).toBe("offline");
        break;
      }
    }
    expect(Date.now() - started).toBeLessThan(12_000);
    socket.destroy();
    watcher.close();
  } finally {
    await idleServer.stop();
  }
}, 20_000);
