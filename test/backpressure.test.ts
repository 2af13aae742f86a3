import { afterAll, beforeAll, expect, test } from "bun:test";
import { Client, post, startServer, type Frame, type TestServer } from "./helpers.ts";
import { RawClient } from "./support/raw-client.ts";

// Slow consumers over a raw TCP socket that upgrades, subscribes and then stops reading (the
// kernel then stops acknowledging, and Bun starts buffering for it), against a real server.

let server: TestServer;
let key: string;
beforeAll(async () => {
  server = await startServer({
    SLOW_CONSUMER_BYTES: String(256 * 1024),
    CONFLATE_AFTER_BYTES: String(16 * 1024),
    SWEEP_INTERVAL_MS: "20",
    HISTORY_ROOM: "5000,1h",
    RATE_LIMIT_BURST: "1000",
    TYPING_THROTTLE_MS: "0",
  });
  key = await server.apiKey("acme");
});
afterAll(() => server.stop());

const filler = "x".repeat(4000);

let published = new Map<string, number>();
async function publishMany(channel: string, count: number, batch = 100): Promise<void> {
  const start = (published.get(channel) ?? 0) + 1;
  published.set(channel, start + count - 1);
  for (let from = start; from < start + count; from += batch) {
    const items = Array.from({ length: Math.min(batch, start + count - from) }, (_, i) => ({ channel, event: "tick", data: { n: from + i, filler } }));
    expect((await post(server, "/v1/publish", items, key)).status).toBe(200);
  }
}

function rssMb(): number {
  Bun.gc(true);
  return process.memoryUsage().rss / 1024 / 1024;
}

test("a client that stops reading on a chat channel is closed with 4009 after an unbroken run of offsets, then recovers the rest from history", async () => {
  const raw = await RawClient.open(server, await server.token({ user: "slow-chat", subChannels: ["room:*"] }));
  raw.send({ type: "subscribe", channel: "room:slow", id: 1 });
  await raw.until(() => raw.frames.some((f) => f.id === 1));
  raw.stopReading();
  const rssBefore = rssMb();
  // ~8 MB of messages: past what the kernel absorbs (~4 MB on loopback) and past the 256 KiB bound.
  await publishMany("room:slow", 2000);
  const rssAfter = rssMb();
  raw.readAgain();
  await raw.until(() => raw.closeCode !== null);
  expect(raw.closeCode).toBe(4009);
  const ticks = raw.frames.filter((f) => f.event === "tick");
  expect(ticks.length).toBeGreaterThan(0);
  expect(ticks.length).toBeLessThan(2000);
  expect(ticks.map((f) => f.data.n)).toEqual(Array.from({ length: ticks.length }, (_, i) => i + 1));
  // Nothing was skipped silently: Bun never hit its own limit for this socket.
  expect(server.sinal.metrics.totals().droppedSends).toBe(0);
  expect(rssAfter - rssBefore).toBeLessThan(64);
  raw.destroy();

  const last = ticks.at(-1)!;
  const again = await Client.open(server, { user: "slow-chat", subChannels: ["room:*"] });
  const reply = await again.request({ type: "subscribe", channel: "room:slow", since: { epoch: last.epoch, offset: last.offset } });
  expect(reply.recovered).toBe(true);
  const rest: number[] = [];
  while (rest.at(-1) !== 2000) {
    const f = await again.next();
    if (f.event === "tick") rest.push(f.data.n);
  }
  expect(rest).toEqual(Array.from({ length: 2000 - last.data.n }, (_, i) => last.data.n + 1 + i));
  again.close();
});

test("a client that stops reading on a feed channel is not closed; once it reads again it gets the latest value, marked conflated", async () => {
  const raw = await RawClient.open(server, await server.token({ user: "slow-feed", subChannels: ["roulette:*"] }));
  raw.send({ type: "subscribe", channel: "roulette:7", id: 1 });
  await raw.until(() => raw.frames.some((f) => f.id === 1));
  raw.stopReading();
  const conflatedBefore = server.sinal.metrics.totals().conflated;
  const rssBefore = rssMb();
  await publishMany("roulette:7", 3000);
  const rssAfter = rssMb();
  raw.readAgain();
  await raw.until(() => raw.frames.at(-1)?.data?.n === 3000);
  expect(raw.closeCode).toBeNull();
  const updates = raw.frames.filter((f) => f.event === "tick");
  expect(updates.length).toBeLessThan(3000);
  const latest = updates.at(-1)!;
  expect(latest.offset).toBe(3000);
  expect(latest.conflated).toBeGreaterThan(0);
  // Order is kept: every update received is newer than the one before.
  for (let i = 1; i < updates.length; i++) expect(updates[i]!.offset).toBeGreaterThan(updates[i - 1]!.offset);
  expect(server.sinal.metrics.totals().conflated - conflatedBefore).toBeGreaterThan(0);
  expect(rssAfter - rssBefore).toBeLessThan(64);
  const metrics = await (await fetch(`${server.http}/metrics`)).text();
  expect(metrics).toMatch(/sinal_conflated_total\{kind="roulette"\} [1-9]/);
  // Caught up: back on Bun's pub/sub, live updates arrive one by one again.
  await raw.until(() => server.sinal.metrics.slowClients === 0);
  await publishMany("roulette:7", 1);
  await raw.until(() => raw.frames.at(-1)?.offset === 3001);
  expect(raw.frames.at(-1)!.conflated).toBeUndefined();
  raw.destroy();
});

test("typing from a room is conflated for a client that is behind while its chat messages all still arrive", async () => {
  const raw = await RawClient.open(server, await server.token({ user: "slow-typing", subChannels: ["room:*"] }));
  raw.send({ type: "subscribe", channel: "room:typing", id: 1 });
  await raw.until(() => raw.frames.some((f) => f.id === 1));
  raw.stopReading();
  // Messages until it is behind (past 16 KiB queued) but far from the 256 KiB bound.
  let sent = 0;
  while (server.sinal.metrics.slowClients === 0) {
    if (sent >= 3000) throw new Error("the client never fell behind");
    await publishMany("room:typing", 10, 10);
    sent += 10;
    await Bun.sleep(sent > 800 ? 25 : 0);
  }
  // A reader that keeps up sees every typing change; the one behind only the latest.
  const watcher = await Client.open(server, { user: "watcher", subChannels: ["room:*"] });
  await watcher.request({ type: "subscribe", channel: "room:typing" });
  const typist = await Client.open(server, { user: "typist", subChannels: ["room:*"] });
  for (let i = 0; i < 6; i++) typist.send({ type: "typing", room: "typing", typing: i % 2 === 0 });
  const seen: Frame[] = [];
  while (seen.length < 6) {
    const f = await watcher.next();
    if (f.event === "typing") seen.push(f);
  }
  await publishMany("room:typing", 1, 1);
  raw.readAgain();
  await raw.until(() => server.sinal.metrics.slowClients === 0 && raw.frames.some((f) => f.event === "typing"));
  await raw.until(() => raw.frames.some((f) => f.data?.n === sent + 1));
  const typing = raw.frames.filter((f) => f.event === "typing");
  const ticks = raw.frames.filter((f) => f.event === "tick").map((f) => f.data.n);
  expect(ticks).toEqual(Array.from({ length: sent + 1 }, (_, i) => i + 1));
  expect(typing).toHaveLength(1);
  expect(typing[0]!.data).toEqual(seen.at(-1)!.data);
  expect(typing[0]!.conflated).toBe(5);
  for (const c of [watcher, typist]) c.close();
  raw.destroy();
});
