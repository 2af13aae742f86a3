import { afterAll, beforeAll, expect, test } from "bun:test";
import { Client, post, startServer, type TestServer } from "./helpers.ts";

let server: TestServer;
beforeAll(async () => (server = await startServer()));
afterAll(() => server.stop());

const grants = { subChannels: ["dept:*"], pubChannels: ["dept:*", "global"] };

test("two tenants on the same channel name never see each other's publications", async () => {
  const acme = await Client.open(server, { tenant: "acme", user: "a", ...grants });
  const globex = await Client.open(server, { tenant: "globex", user: "a", ...grants });
  for (const c of [acme, globex]) {
    await c.request({ type: "subscribe", channel: "dept:1" });
    await c.request({ type: "subscribe", channel: "global" });
  }
  acme.send({ type: "publish", channel: "dept:1", event: "secret", data: "acme only" });
  expect(await acme.next()).toMatchObject({ type: "pub", channel: "dept:1", data: "acme only", offset: 1 });
  globex.send({ type: "publish", channel: "global", event: "news", data: "globex only" });
  expect(await globex.next()).toMatchObject({ type: "pub", channel: "global", data: "globex only", offset: 1 });
  // Each tenant's channel has its own offsets: globex's first dept:1 publication is offset 1 too.
  const globexKey = await server.apiKey("globex");
  const res = await post(server, "/v1/publish", { channel: "dept:1", event: "hello", data: "from globex backend" }, globexKey);
  expect(await res.json()).toMatchObject({ offset: 1 });
  expect(await globex.next()).toMatchObject({ data: "from globex backend", offset: 1 });
  expect(await acme.silentFor(200)).toBe(true);
  expect(await globex.silentFor(50)).toBe(true);
  acme.close();
  globex.close();
});

test("a user can never subscribe to another user's channel, even with sub_channels '*'", async () => {
  const c = await Client.open(server, { user: "alice", subChannels: ["*"] });
  expect(await c.request({ type: "subscribe", channel: "user:bob" })).toEqual({
    type: "reply",
    id: 1,
    ok: false,
    error: { code: "forbidden", message: 'not allowed to subscribe to "user:bob"' },
  });
  expect(await c.request({ type: "subscribe", channel: "user:alice" })).toMatchObject({ ok: true });
  c.close();
});

test("a direct publication to user:bob reaches only bob's connections of that tenant", async () => {
  const bob = await Client.open(server, { tenant: "acme", user: "bob" });
  const otherBob = await Client.open(server, { tenant: "globex", user: "bob" });
  const key = await server.apiKey("acme");
  await post(server, "/v1/publish", { channel: "user:bob", event: "notification", data: { n: 1 } }, key);
  expect(await bob.next()).toMatchObject({ channel: "user:bob", event: "notification" });
  expect(await otherBob.silentFor(150)).toBe(true);
  bob.close();
  otherBob.close();
});

test("a client cannot publish into another user's channel, even with pub_channels '*'", async () => {
  const c = await Client.open(server, { user: "mallory", pubChannels: ["*"] });
  const reply = await c.request({ type: "publish", channel: "user:bob", event: "x", data: 1 });
  expect(reply.error).toEqual({ code: "forbidden", message: 'not allowed to publish to "user:bob"' });
  c.close();
});

test("always-allowed channels need no grant; others, presence included, follow the sub_channels patterns", async () => {
  const c = await Client.open(server, { subChannels: ["dept:sales", "sync:*"] });
  for (const channel of ["global", "system", "dept:sales", "sync:a.b@c"]) {
    expect(await c.request({ type: "subscribe", channel })).toMatchObject({ ok: true, channel });
  }
  for (const channel of ["presence", "dept:support", "room:1", "roulette:7"]) {
    expect(await c.request({ type: "subscribe", channel })).toMatchObject({ ok: false, error: { code: "forbidden" } });
  }
  c.close();
});
