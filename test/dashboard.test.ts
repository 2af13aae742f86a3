import { afterAll, beforeAll, expect, test } from "bun:test";
import { parseChannel } from "../src/channel.ts";
import { Activity } from "../src/stats/activity.ts";
import { TopKeys } from "../src/stats/rolling.ts";
import { Client, post, startServer, type TestServer } from "./helpers.ts";

let server: TestServer;
let acmeKey: string;
let otherKey: string;

beforeAll(async () => {
  server = await startServer();
  acmeKey = await server.apiKey("acme");
  otherKey = await server.apiKey("other");
});
afterAll(() => server.stop());

async function dashboard(credential: string): Promise<{ status: number; body: any }> {
  const res = await fetch(`${server.http}/v1/dashboard`, { headers: { authorization: `Bearer ${credential}` } });
  return { status: res.status, body: await res.json() };
}

test("shows the caller's tenant: connections, messages, notifications, busiest channels, deliveries and the chart", async () => {
  const watcher = await Client.open(server, { tenant: "acme", user: "watcher", subChannels: ["*"] });
  expect((await watcher.request({ type: "subscribe", channel: "roulette:dash-1" })).ok).toBe(true);

  for (const number of [7, 12, 0]) {
    expect((await post(server, "/v1/publish", { channel: "roulette:dash-1", event: "roulette_update", data: { number } }, acmeKey)).status).toBe(200);
    expect((await watcher.next()).data.number).toBe(number);
  }
  expect((await post(server, "/v1/rooms/dash-room/messages", { sender: "bob", content: "hi" }, acmeKey)).status).toBe(200);
  expect((await post(server, "/v1/notifications", { user: "watcher", category: "info", title: "t", message: "m" }, acmeKey)).status).toBe(200);
  expect((await watcher.next()).event).toBe("notification");

  const { status, body } = await dashboard(acmeKey);
  expect(status).toBe(200);
  expect(body.tenant).toBe("acme");
  expect(body.connections).toEqual({ current: 1, subscriptions: expect.any(Number), opened_last_hour: 1 });
  expect(body.last_hour).toMatchObject({ messages: 1, notifications: 1, connects: 1 });
  expect(body.last_hour.events).toBeGreaterThanOrEqual(5);
  // 3 roulette spins and 1 notification reached the watcher's socket.
  expect(body.last_hour.deliveries).toBeGreaterThanOrEqual(4);
  expect(body.deliveries_per_sec).toBeGreaterThan(0);
  expect(body.top_channels[0]).toEqual({ channel: "roulette:dash-1", events: 3 });
  expect(body.top_channels.map((c: any) => c.channel)).toContain("room:dash-room");
  expect(body.drops).toEqual({ dropped_sends: 0, conflated: 0, slow_consumer_closes: 0, total: 0 });
  expect(body.delivery_ratio).toBe(1);
  expect(body.uptime_s).toBeGreaterThanOrEqual(0);
  expect(body.series.per_minute).toHaveLength(60);
  expect(body.series.live.interval_s).toBe(10);
  expect(body.series.live.points).toHaveLength(60);
  const live = body.series.live.points;
  expect(live.reduce((sum: number, p: any) => sum + p.messages, 0)).toBe(1);
  expect(live[live.length - 1].t).toBeLessThanOrEqual(body.generated_at);
  watcher.close();
  await watcher.closed;
});

test("an admin token reads its own tenant; a user token without the admin role is refused", async () => {
  const admin = await server.token({ tenant: "acme", user: "boss", roles: ["admin"] });
  const ok = await dashboard(admin);
  expect(ok.status).toBe(200);
  expect(ok.body.tenant).toBe("acme");

  const user = await server.token({ tenant: "acme", user: "u1", subChannels: ["*"] });
  const refused = await dashboard(user);
  expect(refused.status).toBe(403);
  expect(refused.body.error.code).toBe("forbidden");

  const anonymous = await fetch(`${server.http}/v1/dashboard`);
  expect(anonymous.status).toBe(401);
  expect(((await anonymous.json()) as any).error.code).toBe("unauthorized");
});

test("never shows another tenant's numbers", async () => {
  const before = (await dashboard(acmeKey)).body;
  const other = await Client.open(server, { tenant: "other", user: "spy", subChannels: ["*"] });
  expect((await other.request({ type: "subscribe", channel: "room:secret" })).ok).toBe(true);
  for (let i = 0; i < 4; i++) expect((await post(server, "/v1/publish", { channel: "room:secret", event: "e", data: { i } }, otherKey)).status).toBe(200);
  expect((await post(server, "/v1/rooms/secret/messages", { sender: "spy", content: "psst" }, otherKey)).status).toBe(200);

  const acme = (await dashboard(acmeKey)).body;
  expect(acme.connections.current).toBe(before.connections.current);
  expect(acme.last_hour.events).toBe(before.last_hour.events);
  expect(acme.last_hour.messages).toBe(before.last_hour.messages);
  expect(acme.top_channels.map((c: any) => c.channel)).not.toContain("room:secret");

  const theirs = (await dashboard(otherKey)).body;
  expect(theirs.tenant).toBe("other");
  expect(theirs.connections.current).toBe(1);
  expect(theirs.last_hour.messages).toBe(1);
  expect(theirs.top_channels[0].channel).toBe("room:secret");
  expect(theirs.top_channels.map((c: any) => c.channel)).not.toContain("roulette:dash-1");
  other.close();
  await other.closed;
});

test("activity forgets what is older than an hour and keeps a bounded set of channels", () => {
  let now = Date.UTC(2026, 0, 1, 12, 0, 0);
  const activity = new Activity(() => now);
  // 1,000 distinct quiet channels and one busy one: the busy one stays on top.
  for (let i = 0; i < 1000; i++) {
    activity.published(parseChannel("t1", `room:r${i}`), "new_message", 1);
    activity.published(parseChannel("t1", "roulette:busy"), "roulette_update", 2);
  }
  const snap = activity.snapshot("t1");
  expect(snap.topChannels[0]).toEqual({ channel: "roulette:busy", events: 1000 });
  expect(snap.topChannels.length).toBeLessThanOrEqual(8);
  expect(snap.lastHour).toMatchObject({ events: 2000, messages: 1000, deliveries: 3000 });

  activity.closed({ tenant: "t1" }, 4009);
  activity.closed({ tenant: "t1" }, 1000);
  expect(activity.snapshot("t1").slowConsumerCloses).toBe(1);
  expect(activity.snapshot("t2").slowConsumerCloses).toBe(0);

  now += 61 * 60_000;
  const later = activity.snapshot("t1");
  expect(later.lastHour.events).toBe(0);
  expect(later.topChannels).toEqual([]);
  expect(later.slowConsumerCloses).toBe(1);
});

test("the channel sketch holds at most twice its capacity and never loses or undercounts a heavy key", () => {
  const sketch = new TopKeys(4);
  for (let i = 0; i < 10_000; i++) {
    sketch.add(`room:quiet-${i}`);
    if (i % 3 === 0) sketch.add("room:heavy");
  }
  const entries = new Map(sketch.entries());
  expect(entries.size).toBeLessThanOrEqual(8);
  expect(entries.get("room:heavy")).toBeGreaterThanOrEqual(3334);
  expect(Math.max(...entries.values())).toBe(entries.get("room:heavy")!);
});
