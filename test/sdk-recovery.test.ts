import { afterAll, afterEach, beforeAll, expect, test } from "bun:test";
import { SinalClient, type CloseInfo, type RecoveredEvent } from "../clients/js/src/index.ts";
import { post, startServer, type TestServer } from "./helpers.ts";
import { Inbox, run } from "./support/sdk-inbox.ts";
import { SdkProxy } from "./support/sdk-proxy.ts";

// The SDK against a real server behind a TCP proxy that fails: what a user sees after the network
// comes back. History: dept channels keep 1000 (more than the test publishes), system only 10.

let server: TestServer;
let key: string;
let proxy: SdkProxy;
const clients: SinalClient[] = [];

beforeAll(async () => {
  server = await startServer({ HISTORY_DEPT: "1000,1h", HISTORY_SYSTEM: "10,1h" });
  key = await server.apiKey("acme");
  proxy = new SdkProxy(server.port).start();
});
afterEach(() => {
  for (const c of clients.splice(0)) c.close();
  proxy.up();
});
afterAll(async () => {
  proxy.stop();
  await server.stop();
});

async function sdkClient(user: string): Promise<SinalClient> {
  const token = await server.token({ user, subChannels: ["dept:*", "room:*"] });
  const client = new SinalClient({ url: `ws://127.0.0.1:${proxy.port}/ws`, token, backoff: { minMs: 20, maxMs: 200 } });
  clients.push(client);
  return client;
}

async function restPublish(channel: string, n: number): Promise<void> {
  const res = await post(server, "/v1/publish", { channel, event: "tick", data: { n } }, key);
  expect(res.status).toBe(200);
}

function nextEvent<T>(emitter: { once(event: any, fn: (payload: T) => void): unknown }, event: string): Promise<T> {
  return new Promise((resolve) => emitter.once(event, resolve));
}

/** Cuts the network and resolves once the client noticed (and plans to reconnect). */
async function cutNetwork(client: SinalClient): Promise<void> {
  const closed = nextEvent<CloseInfo>(client, "close");
  expect(proxy.down()).toBeGreaterThan(0);
  expect((await closed).reconnect).toBe(true);
}

test("after a network cut, the 100 publications made over REST meanwhile come back once each, in order, with recovered; then live ones", async () => {
  const client = await sdkClient("rec1");
  const sub = client.subscribe("dept:recovery");
  const inbox = new Inbox(sub);
  await client.connect();
  const reply = await sub.ready;
  for (let n = 1; n <= 3; n++) await restPublish("dept:recovery", n);
  await inbox.until(() => inbox.pubs.length === 3, "3 live publications");

  await cutNetwork(client);
  for (let n = 4; n <= 103; n++) await restPublish("dept:recovery", n);
  const recovered = nextEvent<RecoveredEvent>(sub, "recovered");
  proxy.up();

  expect(await recovered).toEqual({ since: { epoch: reply.epoch, offset: reply.offset + 3 }, epoch: reply.epoch, offset: reply.offset + 103, replayed: 100 });
  const missed = inbox.pubs.slice(3);
  expect(missed.map((p) => (p.data as { n: number }).n)).toEqual(run(4, 100));
  for (let n = 104; n <= 106; n++) await restPublish("dept:recovery", n);
  await inbox.until(() => inbox.pubs.length >= 106, "3 live publications after the recovery");
  expect(inbox.pubs.map((p) => (p.data as { n: number }).n)).toEqual(run(1, 106));
  expect(inbox.offsets()).toEqual(run(reply.offset + 1, 106));
  expect(inbox.gaps).toEqual([]);
});

test("a chat room recovers the messages sent while the client was cut off, from the store's history", async () => {
  const client = await sdkClient("rec2");
  const sub = client.subscribe("room:rec");
  const inbox = new Inbox(sub);
  await client.connect();
  const reply = await sub.ready;
  await inbox.until(() => inbox.pubs.some((p) => p.event === "user_joined"), "own user_joined");

  await cutNetwork(client);
  for (let i = 1; i <= 20; i++) {
    const res = await post(server, "/v1/rooms/rec/messages", { sender: "agent7", content: `m${i}` }, key);
    expect(res.status).toBeLessThan(300);
  }
  const recovered = nextEvent<RecoveredEvent>(sub, "recovered");
  proxy.up();
  const { replayed } = await recovered;
  const contents = () => inbox.pubs.filter((p) => p.event === "new_message").map((p) => (p.data as { content: string }).content);
  expect(contents()).toEqual(run(1, 20).map((i) => `m${i}`));
  expect(replayed).toBeGreaterThanOrEqual(20);
  // Back within the leave grace (PRESENCE_LEAVE_GRACE_MS): no user_left, no second user_joined.
  // A message after the return is the marker: anything the return announced came before it.
  expect((await post(server, "/v1/rooms/rec/messages", { sender: "agent7", content: "after" }, key)).status).toBe(200);
  await inbox.until(() => contents().length === 21, "the message after the return");
  expect(inbox.pubs.filter((p) => p.event === "user_joined" || p.event === "user_left").map((p) => p.event)).toEqual(["user_joined"]);
  // Joins and leaves are ephemeral: the offsets are the messages', without a hole.
  expect(inbox.offsets()).toEqual(run(reply.offset + 1, 21));
  expect(inbox.gaps).toEqual([]);
});

test("when the server no longer keeps what was missed, the subscription reports a gap and goes on live", async () => {
  const client = await sdkClient("rec3");
  const sub = client.subscribe("system");
  const inbox = new Inbox(sub);
  await client.connect();
  const reply = await sub.ready;

  await cutNetwork(client);
  for (let n = 1; n <= 30; n++) await restPublish("system", n);
  proxy.up();
  await inbox.until(() => inbox.gaps.length === 1, "a gap");
  expect(inbox.gaps[0]).toMatchObject({ reason: "trimmed", since: { epoch: reply.epoch, offset: reply.offset }, epoch: reply.epoch, offset: reply.offset + 30 });
  expect(inbox.pubs).toEqual([]);
  await restPublish("system", 31);
  await inbox.until(() => inbox.pubs.length === 1, "the live publication after the gap");
  expect(inbox.pubs[0]).toMatchObject({ offset: reply.offset + 31, data: { n: 31 } });
  expect(inbox.recovered).toEqual([]);
});
