import { afterAll, beforeAll, expect } from "bun:test";
import { MongoClient, type Collection } from "mongodb";
import { Client, startServer, type Frame, type TestServer } from "./helpers.ts";
import { emulatorTests, feedEnv, metric, ready, STRATEGIES, waitFor, waitReady } from "./support/feeds.ts";
import { startEmulator, type Emulator } from "./support/mongo-emulator.ts";
import { TcpProxy } from "./support/tcp-proxy.ts";

// Resuming the MongoDB feed: across a restart, across a cut connection, across MongoDB outages.
// Against mongo-java-server, with a TCP proxy between the driver and it.
const { test, available } = emulatorTests();

let emulator: Emulator;
let mongo: MongoClient;
let strategies: Collection;

beforeAll(async () => {
  if (!available) return;
  emulator = await startEmulator();
  mongo = new MongoClient(emulator.uri());
  strategies = mongo.db("runcash").collection("strategies");
}, 120_000);

afterAll(async () => {
  await mongo?.close();
  await emulator?.stop();
});

/** sinal with the strategies feed, reaching MongoDB through `proxy`, on a fresh store. */
function feedServer(proxy: TcpProxy): Promise<TestServer> {
  // Short timeouts so outages are noticed, and retried, within a test's time.
  const uri = `mongodb://127.0.0.1:${proxy.port}/?directConnection=true&serverSelectionTimeoutMS=600&connectTimeoutMS=600`;
  return startServer(feedEnv(uri, [STRATEGIES], { MONGODB_RETRY_MAX_MS: "300" }));
}

async function subscribe(server: TestServer, channel: string, user = "u1"): Promise<{ client: Client; reply: Frame }> {
  const client = await Client.open(server, { tenant: "acme", user, subChannels: ["strategy:*"] });
  return { client, reply: await client.request({ type: "subscribe", channel }) };
}

async function collect(client: Client, count: number, ms = 5000): Promise<Frame[]> {
  const frames: Frame[] = [];
  while (frames.length < count) frames.push(await client.next(ms));
  return frames;
}

test("changes made while sinal was stopped arrive after a restart on the same store: all 50, in order, once", async () => {
  const proxy = await new TcpProxy(emulator.port).listen();
  let server = await feedServer(proxy);
  await waitReady(server);
  const first = await subscribe(server, "strategy:restart");
  await strategies.insertOne({ roulette_id: "restart", seq: 0 });
  expect(await first.client.next()).toMatchObject({ event: "strategy_update", data: { seq: 0 }, offset: 1 });
  first.client.close();

  server = await server.restart(async () => {
    for (let seq = 1; seq <= 50; seq++) await strategies.insertOne({ roulette_id: "restart", seq });
    // MongoDB looks down at first, so the client is subscribed before the feed resumes.
    proxy.passing = false;
  });
  expect((await server.store.feeds.get("strategies"))?.source).toBe("runcash.strategies");
  const { client, reply } = await subscribe(server, "strategy:restart");
  expect(reply).toMatchObject({ ok: true, offset: 0, snapshot: null });
  proxy.passing = true;

  const frames = await collect(client, 50);
  expect(frames.map((f) => f.data.seq)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
  expect(frames.map((f) => f.offset)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
  expect(new Set(frames.map((f) => f.epoch)).size).toBe(1);
  expect(await client.silentFor(400)).toBe(true);
  client.close();
  await server.stop();
  await proxy.close();
});

test("cutting the driver's connection during a getMore loses nothing and repeats nothing", async () => {
  const proxy = await new TcpProxy(emulator.port).listen();
  const server = await feedServer(proxy);
  await waitReady(server);
  const { client, reply } = await subscribe(server, "strategy:cut");
  for (let seq = 1; seq <= 10; seq++) await strategies.insertOne({ roulette_id: "cut", seq });
  const before = await collect(client, 10);

  const acceptedBefore = proxy.accepted;
  // The feed polls without pause against the emulator, so a getMore is in flight on one of them.
  expect(proxy.cutAll()).toBeGreaterThan(0);
  for (let seq = 11; seq <= 20; seq++) await strategies.insertOne({ roulette_id: "cut", seq });
  const after = await collect(client, 10);

  const all = [...before, ...after];
  expect(all.map((f) => f.data.seq)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
  expect(all.map((f) => f.offset)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
  // The driver resumed in place: same epoch, no snapshot reload.
  expect(all.every((f) => f.epoch === reply.epoch)).toBe(true);
  expect(proxy.accepted).toBeGreaterThan(acceptedBefore);
  expect((await metric(server, "sinal_feed_epoch_resets_total", { feed: "strategies" })) ?? 0).toBe(0);
  expect(await client.silentFor(300)).toBe(true);
  client.close();
  await server.stop();
  await proxy.close();
});

test("MongoDB unreachable: /ready answers 503 naming the feed, and the feed recovers when it comes up", async () => {
  const proxy = await new TcpProxy(emulator.port).listen();
  proxy.passing = false;
  const server = await feedServer(proxy);
  // Start-up is not blocked: the server answers at once.
  const down = await ready(server);
  expect(down.status).toBe(503);
  expect(down.body.failing).toContain("feed:strategies");
  await waitFor("a failed attempt", async () => ((await metric(server, "sinal_feed_retries_total", { feed: "strategies" })) ?? 0) > 0);
  expect((await ready(server)).body.failing).toEqual(["feed:strategies"]);
  expect(await metric(server, "sinal_feed_up", { feed: "strategies" })).toBe(0);

  proxy.passing = true;
  await waitReady(server);
  const { client, reply } = await subscribe(server, "strategy:outage");
  await strategies.insertOne({ roulette_id: "outage", seq: 1 });
  expect(await client.next()).toMatchObject({ data: { seq: 1 }, offset: 1 });

  // Down again while running: changes made meanwhile arrive once it is back, in the same epoch.
  proxy.passing = false;
  proxy.cutAll();
  await waitFor("/ready 503", async () => (await ready(server)).status === 503);
  expect((await ready(server)).body.failing).toEqual(["feed:strategies"]);
  for (let seq = 2; seq <= 5; seq++) await strategies.insertOne({ roulette_id: "outage", seq });
  proxy.passing = true;
  const frames = await collect(client, 4, 10_000);
  expect(frames.map((f) => [f.data.seq, f.offset])).toEqual([[2, 2], [3, 3], [4, 4], [5, 5]]);
  expect(frames.every((f) => f.epoch === reply.epoch)).toBe(true);
  await waitReady(server);
  client.close();
  await server.stop();
  await proxy.close();
});

test("stopping while MongoDB is unreachable does not wait for the driver's timeouts", async () => {
  const proxy = await new TcpProxy(emulator.port).listen();
  proxy.passing = false;
  // A server selection timeout far beyond the expected stop time.
  const uri = `mongodb://127.0.0.1:${proxy.port}/?directConnection=true&serverSelectionTimeoutMS=20000`;
  const server = await startServer(feedEnv(uri, [STRATEGIES]));
  await waitFor("a connection attempt", () => proxy.accepted > 0);
  const started = Date.now();
  await server.stop();
  expect(Date.now() - started).toBeLessThan(2_000);
  await proxy.close();
});
