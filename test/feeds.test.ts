import { afterAll, beforeAll, expect } from "bun:test";
import { MongoClient, type Db } from "mongodb";
import { Client, startServer, type Frame, type TestServer } from "./helpers.ts";
import { emulatorTests, feedEnv, metric, ROULETTES, STRATEGIES, waitFor, waitReady } from "./support/feeds.ts";
import { startEmulator, type Emulator } from "./support/mongo-emulator.ts";

// The MongoDB feed against mongo-java-server (a real wire server with change streams).
const { test, available } = emulatorTests();

let emulator: Emulator;
let mongo: MongoClient;
let db: Db;
let server: TestServer;

beforeAll(async () => {
  if (!available) return;
  emulator = await startEmulator();
  mongo = new MongoClient(emulator.uri());
  db = mongo.db("runcash");
  // Present before sinal starts: the snapshot must carry it.
  await db.collection("roulettes").insertOne({ _id: "pre" as never, tenant: "acme", name: "Preloaded", numbers: [5, 6, 7, 8], secret: "not projected" });
  server = await startServer(feedEnv(emulator.uri(), [ROULETTES, STRATEGIES], { RATE_LIMIT_PER_SEC: "10000", RATE_LIMIT_BURST: "10000" }));
  await waitReady(server);
}, 120_000);

afterAll(async () => {
  await server?.stop();
  await mongo?.close();
  await emulator?.stop();
});

async function subscriber(tenant: string, user: string, channels: string[]): Promise<{ client: Client; replies: Frame[] }> {
  const client = await Client.open(server, { tenant, user, subChannels: ["roulette:*", "strategy:*"] });
  const replies = [];
  for (const channel of channels) replies.push(await client.request({ type: "subscribe", channel }));
  return { client, replies };
}

test("a subscribe to a feed channel answers with the projected, shaped snapshot", async () => {
  const { client, replies } = await subscriber("acme", "snap", ["roulette:pre", "roulette:nothing-here"]);
  expect(replies[0]).toMatchObject({ ok: true, channel: "roulette:pre", offset: 0, recovered: false });
  // fields: name, numbers, n (+ _id); numbers cut to the latest 3.
  expect(replies[0]!.snapshot).toEqual({ _id: "pre", name: "Preloaded", numbers: [6, 7, 8] });
  expect(replies[1]).toMatchObject({ ok: true, snapshot: null });
  const other = await Client.open(server, { tenant: "acme", user: "snap2", subChannels: ["dept:*"] });
  expect((await other.request({ type: "subscribe", channel: "dept:x" })).snapshot).toBeUndefined();
  client.close();
  other.close();
});

test("insert, update and delete reach the right channel of the right tenant and nothing else", async () => {
  const acme = await subscriber("acme", "a1", ["roulette:r1", "roulette:g1", "strategy:r1"]);
  const globex = await subscriber("globex", "g1", ["roulette:r1", "roulette:g1", "strategy:r1"]);
  const roulettes = db.collection("roulettes");

  await roulettes.insertOne({ _id: "r1" as never, tenant: "acme", name: "Lightning", numbers: [1] });
  expect(await acme.client.next()).toMatchObject({
    type: "pub",
    channel: "roulette:r1",
    event: "roulette_update",
    data: { _id: "r1", name: "Lightning", numbers: [1] },
    offset: 1,
    epoch: acme.replies[0]!.epoch,
  });
  await roulettes.updateOne({ _id: "r1" as never }, { $push: { numbers: { $each: [2, 3, 4] } } } as never);
  expect(await acme.client.next()).toMatchObject({ channel: "roulette:r1", event: "roulette_update", data: { numbers: [2, 3, 4] }, offset: 2 });
  await roulettes.deleteOne({ _id: "r1" as never });
  expect(await acme.client.next()).toMatchObject({ channel: "roulette:r1", event: "roulette_deleted", data: { _id: "r1", deleted: true }, offset: 3 });

  await roulettes.insertOne({ _id: "g1" as never, tenant: "globex", name: "Globex wheel", numbers: [] });
  expect(await globex.client.next()).toMatchObject({ channel: "roulette:g1", event: "roulette_update", data: { _id: "g1" }, offset: 1 });

  // strategies: fixed tenant acme, channel from roulette_id.
  await db.collection("strategies").insertOne({ roulette_id: "r1", signal: "red" });
  expect(await acme.client.next()).toMatchObject({ channel: "strategy:r1", event: "strategy_update", data: { roulette_id: "r1", signal: "red" }, offset: 1 });

  expect(await acme.client.silentFor(300)).toBe(true);
  expect(await globex.client.silentFor(0)).toBe(true);
  acme.client.close();
  globex.client.close();
});

test("a document that moves to another channel leaves the old one with its delete event", async () => {
  const acme = await subscriber("acme", "a3", ["strategy:m1", "strategy:m2"]);
  const strategies = db.collection("strategies");
  await strategies.insertOne({ _id: "s1" as never, roulette_id: "m1", signal: "red" });
  expect(await acme.client.next()).toMatchObject({ channel: "strategy:m1", event: "strategy_update", offset: 1 });
  await strategies.updateOne({ _id: "s1" as never }, { $set: { roulette_id: "m2" } });
  expect(await acme.client.next()).toMatchObject({ channel: "strategy:m1", event: "strategy_deleted", data: { _id: "s1", deleted: true }, offset: 2 });
  expect(await acme.client.next()).toMatchObject({ channel: "strategy:m2", event: "strategy_update", data: { roulette_id: "m2" }, offset: 1 });
  // A delete carries only the _id: the feed remembers which channel the document fed.
  await strategies.deleteOne({ _id: "s1" as never });
  expect(await acme.client.next()).toMatchObject({ channel: "strategy:m2", event: "strategy_deleted", data: { _id: "s1", deleted: true }, offset: 2 });
  const again = await acme.client.request({ type: "subscribe", channel: "strategy:m2" });
  expect(again).toMatchObject({ offset: 2, snapshot: null });
  acme.client.close();
});

test("a document without a valid tenant is skipped and counted, never published", async () => {
  const acme = await subscriber("acme", "a2", ["roulette:nt1", "roulette:nt2", "roulette:ok1"]);
  const before = (await metric(server, "sinal_feed_skipped_total", { feed: "roulettes", reason: "no_tenant" })) ?? 0;
  const roulettes = db.collection("roulettes");
  await roulettes.insertOne({ _id: "nt1" as never, numbers: [1] });
  await roulettes.insertOne({ _id: "nt2" as never, tenant: "Not A Tenant!", numbers: [1] });
  // Changes are published in order: once ok1 arrives, nt1 and nt2 were handled.
  await roulettes.insertOne({ _id: "ok1" as never, tenant: "acme", numbers: [1] });
  expect(await acme.client.next()).toMatchObject({ channel: "roulette:ok1", offset: 1 });
  expect(await acme.client.silentFor(200)).toBe(true);
  expect(await metric(server, "sinal_feed_skipped_total", { feed: "roulettes", reason: "no_tenant" })).toBe(before + 2);
  acme.client.close();
});

test("snapshot then stream under concurrent writes: no gap, no duplicate, snapshot = state at the reply's offset", async () => {
  const roulettes = db.collection("roulettes");
  const witness = await subscriber("acme", "witness", ["roulette:hot"]);
  await roulettes.insertOne({ _id: "hot" as never, tenant: "acme", numbers: [], n: 0 });
  const first = await witness.client.next();
  expect(first).toMatchObject({ offset: 1, data: { n: 0 } });
  const seen: Frame[] = [first];

  const WRITES = 150;
  const writer = (async () => {
    for (let i = 1; i <= WRITES; i++) await roulettes.updateOne({ _id: "hot" as never }, { $set: { n: i }, $push: { numbers: i } } as never);
  })();
  // Late subscribers join while the writer runs.
  const late: { client: Client; reply: Frame }[] = [];
  for (let i = 0; i < 6; i++) {
    await Bun.sleep(15 + i * 10);
    const { client, replies } = await subscriber("acme", `late${i}`, ["roulette:hot"]);
    late.push({ client, reply: replies[0]! });
  }
  await writer;
  const total = WRITES + 1;
  while (seen.length < total) seen.push(await witness.client.next());
  expect(seen.map((f) => f.offset)).toEqual(Array.from({ length: total }, (_, i) => i + 1));
  expect(seen.at(-1)!.data.n).toBe(WRITES);

  for (const { client, reply } of late) {
    const k = reply.offset as number;
    expect(reply.epoch).toBe(first.epoch);
    // The snapshot is exactly the data of the publication at the reply's offset.
    expect(reply.snapshot).toEqual(seen[k - 1]!.data);
    const rest: Frame[] = [];
    while (rest.length < total - k) rest.push(await client.next());
    expect(rest.map((f) => f.offset)).toEqual(Array.from({ length: total - k }, (_, i) => k + i + 1));
    expect(rest.map((f) => f.data)).toEqual(seen.slice(k).map((f) => f.data));
    expect(await client.silentFor(0)).toBe(true);
    client.close();
  }
  expect(late.some(({ reply }) => reply.offset > 1 && reply.offset < total)).toBe(true);
  witness.client.close();
});

test("feed metrics: events per feed and lag", async () => {
  await waitFor("events counted", async () => ((await metric(server, "sinal_feed_events_total", { feed: "roulettes", op: "insert" })) ?? 0) > 0);
  expect(await metric(server, "sinal_feed_events_total", { feed: "roulettes", op: "update" })).toBeGreaterThan(0);
  expect(await metric(server, "sinal_feed_events_total", { feed: "roulettes", op: "delete" })).toBeGreaterThanOrEqual(1);
  expect(await metric(server, "sinal_feed_up", { feed: "roulettes" })).toBe(1);
  const lag = await metric(server, "sinal_feed_lag_seconds", { feed: "roulettes" });
  expect(lag).toBeGreaterThanOrEqual(0);
  // The emulator's cluster time has whole seconds.
  expect(lag).toBeLessThan(5);
});
