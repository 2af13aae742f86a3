import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Client, startServer, type Frame, type TestServer } from "./helpers.ts";

// Presence per channel: who is subscribed to a room (or a channel of a namespace with `presence`),
// counted per user over its tabs, with a leave grace so a page reload announces nothing.

const GRACE_MS = 300;
const NAMESPACES = JSON.stringify([
  { name: "support", presence: true },
  { name: "campaign", join_leave: true },
]);

let server: TestServer;
beforeAll(async () => {
  server = await startServer({ PRESENCE_LEAVE_GRACE_MS: String(GRACE_MS), SWEEP_INTERVAL_MS: "20", SINAL_NAMESPACES: NAMESPACES });
});
afterAll(() => server.stop());

/**
 * A tenant of its own for one test, so no other test's users (going offline after their grace)
 * show up on its `presence` channel: tabs of its users, and its members as a backend reads them.
 */
async function tenant(id: string) {
  const key = await server.apiKey(id);
  return {
    tab: (user: string, name?: string) => Client.open(server, { tenant: id, user, name, subChannels: ["room:*", "support:*", "campaign:*", "presence"] }),
    async presenceOf(channel: string): Promise<{ status: number; body: any }> {
      const res = await fetch(`${server.http}/v1/presence?channel=${channel}`, { headers: { authorization: `Bearer ${key}` } });
      return { status: res.status, body: await res.json() };
    },
  };
}

const joined = (room: string, user: string) => ({ type: "pub", channel: `room:${room}`, event: "user_joined", data: { room, user }, ts: expect.any(Number) });
const left = (room: string, user: string) => ({ type: "pub", channel: `room:${room}`, event: "user_left", data: { room, user }, ts: expect.any(Number) });
const presence = (user: string, status: string) => ({ type: "pub", channel: "presence", event: "presence", data: { user, status }, ts: expect.any(Number) });

/** Subscribes and returns the reply (the frames that follow it stay queued). */
async function subscribe(c: Client, channel: string): Promise<Frame> {
  const reply = await c.request({ type: "subscribe", channel });
  expect(reply).toMatchObject({ ok: true, channel });
  return reply;
}

async function closeTab(c: Client): Promise<void> {
  c.close();
  await c.closed;
}

describe("rooms", () => {
  test("two users with two tabs each join once each, and every subscribe reply lists each user once with its status", async () => {
    const { tab, presenceOf } = await tenant("t-tabs");
    const watcher = await tab("w1");
    expect((await subscribe(watcher, "room:a")).presence).toEqual([{ user: "w1", status: "online" }]);
    expect(await watcher.next()).toEqual(joined("a", "w1"));

    const ana1 = await tab("ana", "Ana");
    const ana2 = await tab("ana", "Ana");
    expect((await subscribe(ana1, "room:a")).presence).toEqual([{ user: "w1", status: "online" }, { user: "ana", name: "Ana", status: "online" }]);
    expect(await ana1.next()).toEqual(joined("a", "ana"));
    expect(await watcher.next()).toEqual(joined("a", "ana"));
    expect((await subscribe(ana2, "room:a")).presence).toEqual([{ user: "w1", status: "online" }, { user: "ana", name: "Ana", status: "online" }]);

    const bob1 = await tab("bob");
    const bob2 = await tab("bob");
    expect(await bob1.request({ type: "presence", status: "busy" })).toMatchObject({ ok: true, status: "busy" });
    await subscribe(bob1, "room:a");
    expect(await bob1.next()).toEqual(joined("a", "bob"));
    const list = (await subscribe(bob2, "room:a")).presence;
    expect(list).toEqual([
      { user: "w1", status: "online" },
      { user: "ana", name: "Ana", status: "online" },
      { user: "bob", status: "busy" },
    ]);

    // One join per user on the wire, however many tabs: the second tabs announced nothing.
    expect(await watcher.next()).toEqual(joined("a", "bob"));
    expect(await watcher.silentFor(100)).toBe(true);
    for (const c of [watcher, ana1, ana2, bob1, bob2]) c.close();
  });

  test("a reload (a tab closed and opened again within the leave grace) announces nothing, in the room or on presence", async () => {
    const { tab, presenceOf } = await tenant("t-reload");
    const watcher = await tab("w2");
    await subscribe(watcher, "presence");
    await subscribe(watcher, "room:b");
    expect(await watcher.next()).toEqual(joined("b", "w2"));

    const before = await tab("cleo");
    expect(await watcher.next()).toEqual(presence("cleo", "online"));
    await subscribe(before, "room:b");
    expect(await watcher.next()).toEqual(joined("b", "cleo"));

    await closeTab(before);
    const after = await tab("cleo");
    // Still a member: listed, and the new tab's subscribe is no join (not even for itself).
    expect((await subscribe(after, "room:b")).presence).toEqual([{ user: "w2", status: "online" }, { user: "cleo", status: "online" }]);
    expect(await after.silentFor(GRACE_MS * 2)).toBe(true);
    expect(await watcher.silentFor(0)).toBe(true);
    watcher.close();
    after.close();
  });

  test("a close past the grace announces user_left once, then offline once, after the grace; the user is listed until then", async () => {
    const { tab, presenceOf } = await tenant("t-close");
    const watcher = await tab("w3");
    await subscribe(watcher, "presence");
    await subscribe(watcher, "room:c");
    expect(await watcher.next()).toEqual(joined("c", "w3"));
    const dan1 = await tab("dan");
    const dan2 = await tab("dan");
    expect(await watcher.next()).toEqual(presence("dan", "online"));
    await subscribe(dan1, "room:c");
    await subscribe(dan2, "room:c");
    expect(await watcher.next()).toEqual(joined("c", "dan"));

    await closeTab(dan1);
    await closeTab(dan2);
    const closedAt = performance.now();
    // In its grace the user is still a member, with its last status.
    expect((await presenceOf("room:c")).body.users).toContainEqual({ user: "dan", status: "online" });
    expect(await watcher.next(2000)).toEqual(left("c", "dan"));
    expect(performance.now() - closedAt).toBeGreaterThanOrEqual(GRACE_MS - 50);
    expect(await watcher.next()).toEqual(presence("dan", "offline"));
    expect(await watcher.silentFor(GRACE_MS)).toBe(true);
    expect((await presenceOf("room:c")).body).toEqual({ channel: "room:c", users: [{ user: "w3", status: "online" }] });
    watcher.close();
  });

  test("an unsubscribe leaves the room after the grace while the user stays online", async () => {
    const { tab, presenceOf } = await tenant("t-unsub");
    const watcher = await tab("w4");
    await subscribe(watcher, "presence");
    await subscribe(watcher, "room:d");
    expect(await watcher.next()).toEqual(joined("d", "w4"));
    const eve = await tab("eve");
    expect(await watcher.next()).toEqual(presence("eve", "online"));
    await subscribe(eve, "room:d");
    expect(await eve.next()).toEqual(joined("d", "eve"));
    expect(await watcher.next()).toEqual(joined("d", "eve"));
    expect(await eve.request({ type: "unsubscribe", channel: "room:d" })).toMatchObject({ ok: true });
    expect(await watcher.next(2000)).toEqual(left("d", "eve"));
    expect(await watcher.silentFor(GRACE_MS)).toBe(true);
    watcher.close();
    eve.close();
  });

  test("GET /v1/presence?channel=room:<id> answers a backend the room's members, each once, with status", async () => {
    const { tab, presenceOf } = await tenant("t-rest");
    const ana1 = await tab("ana", "Ana");
    const ana2 = await tab("ana", "Ana");
    const bob = await tab("bob");
    await bob.request({ type: "presence", status: "away" });
    for (const c of [ana1, ana2, bob]) await subscribe(c, "room:x");
    expect(await presenceOf("room:x")).toEqual({
      status: 200,
      body: { channel: "room:x", users: [{ user: "ana", name: "Ana", status: "online" }, { user: "bob", status: "away" }] },
    });
    expect(await presenceOf("room:nobody")).toEqual({ status: 200, body: { channel: "room:nobody", users: [] } });
    // Backends only: a user's own token is not an admin's.
    const asUser = await fetch(`${server.http}/v1/presence?channel=room:x`, { headers: { authorization: `Bearer ${await server.token({ user: "ana" })}` } });
    expect(asUser.status).toBe(403);
    for (const c of [ana1, ana2, bob]) c.close();
  });
});

describe("configured namespaces", () => {
  test("a namespace with presence lists its members like a room, and without join_leave announces no joins", async () => {
    const { tab, presenceOf } = await tenant("t-support");
    const fay = await tab("fay");
    const gus = await tab("gus");
    expect((await subscribe(fay, "support:t1")).presence).toEqual([{ user: "fay", status: "online" }]);
    expect((await subscribe(gus, "support:t1")).presence).toEqual([{ user: "fay", status: "online" }, { user: "gus", status: "online" }]);
    expect(await presenceOf("support:t1")).toEqual({ status: 200, body: { channel: "support:t1", users: [{ user: "fay", status: "online" }, { user: "gus", status: "online" }] } });

    // Gus leaves: listed through its grace, gone once its offline (which follows the channel's leave) went out.
    await subscribe(fay, "presence");
    await closeTab(gus);
    expect((await presenceOf("support:t1")).body.users).toContainEqual({ user: "gus", status: "online" });
    expect(await fay.next(2000)).toEqual(presence("gus", "offline"));
    expect((await presenceOf("support:t1")).body.users).toEqual([{ user: "fay", status: "online" }]);
    expect(await fay.silentFor(0)).toBe(true);
    fay.close();
  });

  test("a namespace without presence answers no presence list, and backends are told so", async () => {
    const { tab, presenceOf } = await tenant("t-campaign");
    const hal = await tab("hal");
    const reply = await subscribe(hal, "campaign:spring");
    expect("presence" in reply).toBe(false);
    // join_leave alone still announces the join.
    expect(await hal.next()).toMatchObject({ event: "user_joined", data: { channel: "campaign:spring", user: "hal" } });
    const refused = await presenceOf("campaign:spring");
    expect(refused.status).toBe(400);
    expect(refused.body.error.code).toBe("bad_request");
    hal.close();
  });
});

describe("the tenant's presence channel", () => {
  test("is refused without a grant, and allowed with exactly presence or with *", async () => {
    const none = await Client.open(server, { user: "ivy", subChannels: ["room:*", "presence:*"] });
    expect(await none.request({ type: "subscribe", channel: "presence" })).toMatchObject({
      ok: false,
      error: { code: "forbidden", message: 'not allowed to subscribe to "presence"' },
    });
    for (const subChannels of [["presence"], ["*"]]) {
      const granted = await Client.open(server, { user: "ivy", subChannels });
      expect((await subscribe(granted, "presence")).presence).toContainEqual({ user: "ivy", status: "online" });
      granted.close();
    }
    none.close();
  });
});
