import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { CLUSTER, Client, post, startServer, type Frame, type TestServer } from "./helpers.ts";

// Recovery over real sockets: what a client that lost its connection gets back with `since`.

let server: TestServer;
let key: string;
beforeAll(async () => {
  server = await startServer({ HISTORY_DEPT: "10,1h" });
  key = await server.apiKey("acme");
});
afterAll(() => server.stop());

async function publish(s: TestServer, k: string, channel: string, from: number, count: number): Promise<void> {
  const items = Array.from({ length: count }, (_, i) => ({ channel, event: "tick", data: { n: from + i } }));
  const res = await post(s, "/v1/publish", items, k);
  expect(res.status).toBe(200);
}

async function frames(c: Client, n: number): Promise<Frame[]> {
  const out: Frame[] = [];
  for (let i = 0; i < n; i++) out.push(await c.next());
  return out;
}

/** Ticks (our REST publications) among frames; rooms also carry user_joined/user_left, ephemeral (no offset). */
const ticks = (fs: Frame[]) => fs.filter((f) => f.event === "tick").map((f) => f.data.n);
/** The offsets of the frames that have one run from `from` without a hole. */
const contiguous = (fs: Frame[], from: number) => {
  const offsets = fs.flatMap((f) => (f.offset === undefined ? [] : [f.offset]));
  expect(offsets).toEqual(Array.from({ length: offsets.length }, (_, i) => from + i));
};

describe.each([
  ["room:recover", "a chat room (history in the store)"],
  ["global", "a memory channel"],
])("%s, %s", (channel) => {
  test("a client that missed 100 publications gets exactly those after the reply, in order, then live ones, none twice", async () => {
    const before = await Client.open(server, { user: "r1", subChannels: ["*"] });
    await before.request({ type: "subscribe", channel });
    await publish(server, key, channel, 1, 3);
    let last: Frame;
    do last = await before.next();
    while (last.data?.n !== 3);
    before.close();
    await before.closed;

    await publish(server, key, channel, 4, 100);
    const after = await Client.open(server, { user: "r1", subChannels: ["*"] });
    const reply = await after.request({ type: "subscribe", channel, since: { epoch: last.epoch, offset: last.offset } });
    expect(reply).toMatchObject({ ok: true, recovered: true, epoch: last.epoch });
    const missed = await frames(after, reply.offset - last.offset);
    contiguous(missed, last.offset + 1);
    expect(ticks(missed)).toEqual(Array.from({ length: 100 }, (_, i) => 4 + i));
    await publish(server, key, channel, 104, 1);
    const live: Frame[] = [];
    do live.push(await after.next());
    while (live.at(-1)!.data?.n !== 104);
    contiguous(live, reply.offset + 1);
    expect(await after.silentFor(100)).toBe(true);
    after.close();
  });

  test("publications made while the client resubscribes arrive once each, in offset order, after the replay", async () => {
    const c = await Client.open(server, { user: "r2", subChannels: ["*"] });
    const { epoch, offset } = await c.request({ type: "subscribe", channel });
    c.close();
    await c.closed;
    await publish(server, key, channel, 1, 5);
    const again = await Client.open(server, { user: "r2", subChannels: ["*"] });
    // 10 single publishes race the subscribe: some land before the history read, some after.
    const racing = Array.from({ length: 10 }, (_, i) => publish(server, key, channel, 100 + i, 1));
    const reply = await again.request({ type: "subscribe", channel, since: { epoch, offset } });
    await Promise.all(racing);
    expect(reply.recovered).toBe(true);
    const received: Frame[] = [];
    // In a room the user came back within the leave grace: no user_left, no second user_joined.
    while (ticks(received).length < 15) received.push(await again.next());
    expect(received.filter((f) => f.offset === undefined)).toEqual([]);
    contiguous(received, offset + 1);
    expect(ticks(received).slice(0, 5)).toEqual([1, 2, 3, 4, 5]);
    expect(ticks(received).slice(5).sort()).toEqual(Array.from({ length: 10 }, (_, i) => 100 + i));
    expect(await again.silentFor(100)).toBe(true);
    again.close();
  });
});

test("when the missed publications were trimmed the reply says recovered:false, why, and from where history starts; nothing is replayed", async () => {
  const c = await Client.open(server, { user: "t1", subChannels: ["*"] });
  const { epoch, offset } = await c.request({ type: "subscribe", channel: "dept:trim" });
  c.close();
  await c.closed;
  await publish(server, key, "dept:trim", 1, 30);
  const again = await Client.open(server, { user: "t1", subChannels: ["*"] });
  expect(await again.request({ type: "subscribe", channel: "dept:trim", since: { epoch, offset } })).toMatchObject({
    ok: true,
    recovered: false,
    reason: "trimmed",
    history_from: offset + 21,
    epoch,
    offset: offset + 30,
  });
  expect(await again.silentFor(100)).toBe(true);
  await publish(server, key, "dept:trim", 31, 1);
  expect(await again.next()).toMatchObject({ offset: offset + 31 });
  again.close();
});

test(`after a restart chat rooms recover with their epoch and offsets; ${CLUSTER ? "on a cluster other channels too (their history is in Redis)" : "memory channels answer with a new epoch"}`, async () => {
  const s = await startServer();
  const k = await s.apiKey("acme");
  const c = await Client.open(s, { user: "x", subChannels: ["*"] });
  const dept = await c.request({ type: "subscribe", channel: "dept:volatile" });
  await publish(s, k, "dept:volatile", 1, 5);
  await frames(c, 5);
  c.close();
  await c.closed;
  // A backend's publications only: the room's offsets are 1..8.
  await publish(s, k, "room:durable", 1, 5);
  const room = await (await fetch(`${s.http}/v1/publish`, { method: "POST", headers: { authorization: `Bearer ${k}` }, body: JSON.stringify({ channel: "room:durable", event: "tick", data: { n: 0 } }) })).json() as Frame;
  expect(room.offset).toBe(6);
  await publish(s, k, "room:durable", 6, 2);

  const restarted = await s.restart();
  try {
    const again = await Client.open(restarted, { user: "x", subChannels: ["*"] });
    const d = await again.request({ type: "subscribe", channel: "dept:volatile", since: { epoch: dept.epoch, offset: 5 } });
    if (CLUSTER) {
      expect(d).toMatchObject({ recovered: true, epoch: dept.epoch, offset: 5 });
    } else {
      expect(d).toMatchObject({ recovered: false, reason: "epoch_changed", offset: 0 });
      expect(d.epoch).not.toBe(dept.epoch);
    }
    const r = await again.request({ type: "subscribe", channel: "room:durable", since: { epoch: room.epoch, offset: 5 } });
    expect(r).toMatchObject({ recovered: true, epoch: room.epoch, offset: 8 });
    expect((await frames(again, 3)).map((f) => f.data.n)).toEqual([0, 6, 7]);
    // Its own user_joined (ephemeral: no offset) follows the replay, then a new publication at 9.
    const joined = await again.next();
    expect(joined).toMatchObject({ channel: "room:durable", event: "user_joined" });
    expect(joined.offset).toBeUndefined();
    await publish(restarted, k, "room:durable", 9, 1);
    expect(await again.next()).toMatchObject({ channel: "room:durable", offset: 9, epoch: room.epoch });
    again.close();
  } finally {
    await restarted.stop();
  }
});
