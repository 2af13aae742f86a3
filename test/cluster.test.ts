import { afterAll, beforeAll, describe, expect } from "bun:test";
import { Client, post, startServer, type Frame, type TestServer } from "./helpers.ts";
import { postgresTests, startDatabase, type Postgres } from "./support/postgres.ts";
import { redisTests, startRedis, type RedisServer } from "./support/redis.ts";
import { RedisHistory } from "../src/history/redis-history.ts";
import type { DeliveredPositions, Position } from "../src/history/history.ts";
import { RedisKeys } from "../src/redis/keys.ts";
import { connectRedis, openRedis } from "../src/redis/redis-client.ts";

/**
 * Appends to a channel's shared history in Redis as a node would, but publishes nothing: what a
 * publication lost on its way between nodes looks like to the others.
 */
async function appendUnpublished(url: string, topic: string, data: string[], size: number): Promise<void> {
  const redis = connectRedis({ url, commandTimeoutMs: 1000, prefix: "sinal" }, "test");
  await openRedis(redis, 2000);
  const untracked: DeliveredPositions = { get: () => undefined, ready: async () => undefined, seed: (_t, p) => p, reset: (_t, p) => p };
  const history = new RedisHistory(redis, new RedisKeys("sinal"), untracked, { maxTopicsPerTenant: 1000, metaTtlMs: 60_000, idempotencyTtlMs: 60_000 });
  const channel = topic.slice(topic.indexOf("/") + 1);
  for (const item of data) {
    const frame = (p: Position) => `{"type":"pub","channel":"${channel}","event":"n","data":"${item}","offset":${p.offset},"epoch":"${p.epoch}","ts":1}`;
    await history.append(topic, frame, { size, ttlMs: 60_000 }, () => undefined);
  }
  redis.disconnect();
}

// Two sinal nodes sharing one Redis and one PostgreSQL, in this process, over real sockets: what a
// client sees across nodes. (The three-node bed with a balancer and SIGKILLs is test/cluster-bed.)

const redisAvailable = redisTests().available;
const { test, available: pgAvailable } = postgresTests();

describe.if(redisAvailable && pgAvailable)("two nodes on one Redis and one PostgreSQL", () => {
  let redis: RedisServer;
  let database: Postgres;
  let a: TestServer;
  let b: TestServer;
  let keyA: string;
  let keyB: string;

  beforeAll(async () => {
    [redis, database] = await Promise.all([startRedis(), startDatabase()]);
    const env = { REDIS_URL: redis.url, DATABASE_URL: database.url, LOG_LEVEL: "warn" };
    a = await startServer(env);
    b = await startServer(env);
    [keyA, keyB] = await Promise.all([a.apiKey("acme"), b.apiKey("acme")]);
  });
  afterAll(async () => {
    await a?.stop();
    await b?.stop();
    await database?.stop();
    await redis?.stop();
  });

  const subscribe = async (server: TestServer, channel: string, user = "u1", tenant = "acme") => {
    const client = await Client.open(server, { user, tenant, subChannels: ["*"] });
    const reply = await client.request({ type: "subscribe", channel });
    if (!reply.ok) throw new Error(JSON.stringify(reply));
    return { client, reply };
  };

  test("a client on node A receives a REST publication sent to node B, with the offset and epoch B answered", async () => {
    const { client } = await subscribe(a, "dept:sales");
    const res = await post(b, "/v1/publish", { channel: "dept:sales", event: "deal", data: { n: 1 } }, keyB);
    expect(res.status).toBe(200);
    const answer = (await res.json()) as Frame;
    const pub = await client.next();
    expect(pub).toMatchObject({ type: "pub", channel: "dept:sales", event: "deal", data: { n: 1 } });
    expect({ offset: pub.offset, epoch: pub.epoch }).toEqual({ offset: answer.offset, epoch: answer.epoch });
    client.close();
  });

  test("a room message stored through node B reaches a member on node A with the offset PostgreSQL assigned", async () => {
    const { client, reply } = await subscribe(a, "room:r1");
    const res = await post(b, "/v1/publish", { channel: "room:r1", event: "note", data: { text: "hi" } }, keyB);
    const answer = (await res.json()) as Frame;
    // Its own join came first (an ephemeral event, no offset).
    expect(await client.next()).toMatchObject({ event: "user_joined" });
    const pub = await client.next();
    expect(pub).toMatchObject({ channel: "room:r1", event: "note", offset: reply.offset + 1, epoch: reply.epoch });
    expect(answer.offset).toBe(pub.offset);
    client.close();
  });

  test("publications made on both nodes at once reach subscribers on both nodes in offset order, each exactly once", async () => {
    const onA = await subscribe(a, "dept:race", "ua");
    const onB = await subscribe(b, "dept:race", "ub");
    const start = onA.reply.offset as number;
    const total = 200;
    // 20 requests of 10 publications each, every other one to the other node, all at once.
    await Promise.all(
      Array.from({ length: 20 }, (_, r) =>
        post(r % 2 === 0 ? a : b, "/v1/publish", Array.from({ length: 10 }, (_, i) => ({ channel: "dept:race", event: "n", data: r * 10 + i })), r % 2 === 0 ? keyA : keyB).then((res) => expect(res.status).toBe(200)),
      ),
    );
    for (const { client } of [onA, onB]) {
      const offsets: number[] = [];
      for (let i = 0; i < total; i++) offsets.push((await client.next()).offset);
      expect(offsets).toEqual(Array.from({ length: total }, (_, i) => start + i + 1));
      expect(await client.silentFor(150)).toBe(true);
      client.close();
    }
  });

  test("a client that was on node A recovers from node B what it missed, by offset, from the shared history", async () => {
    const { client, reply } = await subscribe(a, "dept:recover");
    const since = { offset: reply.offset, epoch: reply.epoch };
    client.close();
    for (let i = 0; i < 5; i++) await post(a, "/v1/publish", { channel: "dept:recover", event: "n", data: i }, keyA);
    const back = await Client.open(b, { user: "u1", subChannels: ["*"] });
    const again = await back.request({ type: "subscribe", channel: "dept:recover", since });
    expect(again).toMatchObject({ ok: true, recovered: true, offset: since.offset + 5, epoch: since.epoch });
    const replayed: number[] = [];
    for (let i = 0; i < 5; i++) replayed.push((await back.next()).data);
    expect(replayed).toEqual([0, 1, 2, 3, 4]);
    back.close();
  });

  test("a publication of one tenant never reaches another tenant's subscriber on another node", async () => {
    const globex = await subscribe(a, "dept:sales", "g1", "globex");
    await post(b, "/v1/publish", { channel: "dept:sales", event: "deal", data: { secret: true } }, keyB);
    expect(await globex.client.silentFor(300)).toBe(true);
    globex.client.close();
  });
  test("a publication lost between nodes is read back from the shared history and delivered in its place, before the next", async () => {
    const { client, reply } = await subscribe(a, "dept:gap");
    await appendUnpublished(redis.url, "acme/dept:gap", ["lost"], 100);
    await post(b, "/v1/publish", { channel: "dept:gap", event: "n", data: "next" }, keyB);
    expect(await client.next()).toMatchObject({ data: "lost", offset: reply.offset + 1, epoch: reply.epoch });
    expect(await client.next()).toMatchObject({ data: "next", offset: reply.offset + 2, epoch: reply.epoch });
    expect(await client.silentFor(200)).toBe(true);
    client.close();
  });

  test("a lost publication the history no longer keeps closes the channel's subscribers with 4011, and their resubscribe says recovered:false", async () => {
    const { client, reply } = await subscribe(a, "dept:gone");
    // Three lost, with a history of one: only the third is still kept when the next arrives.
    await appendUnpublished(redis.url, "acme/dept:gone", ["l1", "l2", "l3"], 1);
    await post(b, "/v1/publish", { channel: "dept:gone", event: "n", data: "next" }, keyB);
    expect((await client.closed).code).toBe(4011);
    const back = await Client.open(a, { user: "u1", subChannels: ["*"] });
    const again = await back.request({ type: "subscribe", channel: "dept:gone", since: { offset: reply.offset, epoch: reply.epoch } });
    expect(again).toMatchObject({ ok: true, recovered: false, reason: "trimmed", offset: reply.offset + 4 });
    back.close();
  });

  test("a backend disconnects a user through node B: its tabs on both nodes are closed with 4001", async () => {
    const tab1 = await Client.open(a, { user: "kicked" });
    const tab2 = await Client.open(b, { user: "kicked" });
    const other = await Client.open(a, { user: "stays" });
    const res = await fetch(`${b.http}/v1/users/kicked/disconnect`, { method: "POST", headers: { authorization: `Bearer ${keyB}` } });
    expect(res.status).toBe(202);
    expect((await tab1.closed).code).toBe(4001);
    expect((await tab2.closed).code).toBe(4001);
    expect(await other.request({ type: "ping" })).toMatchObject({ ok: true });
    other.close();
  });

  test("a member added to a private room through node B gets in on node A at once, though A read the members a moment before", async () => {
    const put = (members: string[]) => fetch(`${b.http}/v1/rooms/conv-x`, { method: "PUT", headers: { authorization: `Bearer ${keyB}` }, body: JSON.stringify({ members }) });
    expect((await put(["carl"])).status).toBe(200);
    const dana = await Client.open(a, { user: "dana", subChannels: ["room:*"] });
    expect(await dana.request({ type: "message", room: "conv-x", content: "too early" })).toMatchObject({ ok: false, error: { code: "forbidden" } });
    expect((await put(["dana"])).status).toBe(200);
    // Node A's list (read just now, so a refusal would still rest on it) was forgotten on B's word.
    await Bun.sleep(50);
    expect(await dana.request({ type: "message", room: "conv-x", content: "now" })).toMatchObject({ ok: true });
    dana.close();
  });

  test("a notification to a user connected only to node A, sent through node B, is pushed, not left pending", async () => {
    const amy = await Client.open(a, { user: "amy" });
    const res = await post(b, "/v1/notifications", { user: "amy", category: "ticket", title: "New ticket", message: "#7" }, keyB);
    expect(((await res.json()) as Frame).notifications).toEqual([{ user: "amy", id: expect.any(Number), status: "pushed" }]);
    expect(await amy.next()).toMatchObject({ type: "pub", channel: "user:amy", event: "notification", data: { title: "New ticket" } });
    amy.close();
  });

  test("a user with a tab on each node is one member of the room, and either node lists it", async () => {
    const key = keyA;
    const tab1 = await Client.open(a, { user: "rui", subChannels: ["room:*"] });
    const tab2 = await Client.open(b, { user: "rui", subChannels: ["room:*"] });
    await tab1.request({ type: "subscribe", channel: "room:both" });
    await tab2.request({ type: "subscribe", channel: "room:both" });
    for (const server of [a, b]) {
      const res = await fetch(`${server.http}/v1/presence?channel=room:both`, { headers: { authorization: `Bearer ${key}` } });
      const body = (await res.json()) as Frame;
      if (res.status !== 200) throw new Error(JSON.stringify(body));
      expect(body).toEqual({ channel: "room:both", users: [{ user: "rui", status: "online" }] });
    }
    tab1.close();
    tab2.close();
  });

  test("a status chosen on node A holds for the user's tab on node B: one announcement, both nodes list it", async () => {
    const watcher = await Client.open(b, { user: "watch", subChannels: ["presence"] });
    expect(await watcher.request({ type: "subscribe", channel: "presence" })).toMatchObject({ ok: true });
    const kaiEvent = async () => {
      for (;;) {
        const frame = await watcher.next();
        if (frame.event === "presence" && frame.data.user === "kai") return frame.data;
      }
    };
    const onA = await Client.open(a, { user: "kai" });
    expect(await kaiEvent()).toEqual({ user: "kai", status: "online" });
    // A second tab, on the other node: the same member, nothing to announce.
    const onB = await Client.open(b, { user: "kai" });
    expect(await onA.request({ type: "presence", status: "busy" })).toMatchObject({ ok: true, status: "busy" });
    expect(await kaiEvent()).toEqual({ user: "kai", status: "busy" });
    // Activity on node B does not undo a choice made on node A.
    expect(await onB.request({ type: "subscribe", channel: "presence" })).toMatchObject({ ok: false });
    for (const server of [a, b]) {
      const res = await fetch(`${server.http}/v1/presence`, { headers: { authorization: `Bearer ${keyA}` } });
      expect(((await res.json()) as Frame).users).toContainEqual({ user: "kai", status: "busy" });
    }
    expect(await onB.request({ type: "presence", status: "online" })).toMatchObject({ ok: true, status: "online" });
    expect(await kaiEvent()).toEqual({ user: "kai", status: "online" });
    expect(await watcher.silentFor(300)).toBe(true);
    for (const c of [onA, onB, watcher]) c.close();
  });

  test("a display name cut in the middle of an emoji (a lone surrogate) is made well-formed: the user joins once and is listed once with two tabs", async () => {
    const watcher = await Client.open(a, { user: "watch2", subChannels: ["presence"] });
    expect(await watcher.request({ type: "subscribe", channel: "presence" })).toMatchObject({ ok: true });
    const cut = "Zoë \ud83d";
    const onB = await Client.open(b, { user: "zed", name: cut });
    for (;;) {
      const frame = await watcher.next();
      if (frame.event === "presence" && frame.data.user === "zed") {
        expect(frame.data).toEqual({ user: "zed", name: "Zoë \ufffd", status: "online" });
        break;
      }
    }
    const onA = await Client.open(a, { user: "zed", name: cut });
    expect(await onA.request({ type: "presence", status: "busy" })).toMatchObject({ ok: true, status: "busy" });
    for (const server of [a, b]) {
      const res = await fetch(`${server.http}/v1/presence`, { headers: { authorization: `Bearer ${keyA}` } });
      const users = ((await res.json()) as Frame).users as { user: string; name?: string; status: string }[];
      expect(users.filter((u) => u.user === "zed")).toEqual([{ user: "zed", name: "Zoë \ufffd", status: "busy" }]);
    }
    for (const c of [onA, onB, watcher]) c.close();
  });

  test("a lock taken on node A is refused to another user on node B, naming the holder", async () => {
    const ana = await Client.open(a, { user: "ana", subChannels: ["sync:*"] });
    const bob = await Client.open(b, { user: "bob", subChannels: ["sync:*"] });
    expect(await ana.request({ type: "lock", resource: "customer:77" })).toMatchObject({ ok: true });
    expect(await bob.request({ type: "lock", resource: "customer:77" })).toMatchObject({ ok: false, error: { code: "locked" } });
    ana.close();
    bob.close();
  });

  test("the per-user connection bound counts the connections on every node", async () => {
    // Both nodes run with the default bound (20 per user): 20 across the two nodes, the 21st is refused.
    const open: Client[] = [];
    for (let i = 0; i < 20; i++) open.push(await Client.open(i % 2 === 0 ? a : b, { user: "many" }));
    const socket = new WebSocket(`${b.ws}?token=${await b.token({ user: "many" })}`);
    const frames: string[] = [];
    socket.onmessage = (event) => frames.push(String(event.data));
    const closed = await new Promise<number>((resolve) => (socket.onclose = (event) => resolve(event.code)));
    expect(closed).toBe(4010);
    expect(frames).toEqual([]);
    for (const c of open) c.close();
  });
});

describe.if(redisAvailable && pgAvailable)("two nodes while their Redis goes away and comes back", () => {
  let redis: RedisServer;
  let database: Postgres;
  let a: TestServer;
  let b: TestServer;
  let keyB: string;

  beforeAll(async () => {
    [redis, database] = await Promise.all([startRedis(), startDatabase()]);
    const env = { REDIS_URL: redis.url, DATABASE_URL: database.url, LOG_LEVEL: "error", REDIS_COMMAND_TIMEOUT_MS: "500", REDIS_POSITION_CHECK_MS: "300" };
    a = await startServer(env);
    b = await startServer(env);
    keyB = await b.apiKey("acme");
  });
  afterAll(async () => {
    await a?.stop();
    await b?.stop();
    await database?.stop();
    await redis?.stop();
  });

  const publish = (channel: string, data: unknown) => post(b, "/v1/publish", { channel, event: "n", data }, keyB);

  test("while Redis is away a publication answers 503 unavailable at once and /ready names the broker; once it is back both nodes are ready and publications flow again", async () => {
    const sub = await Client.open(a, { user: "u1", subChannels: ["*"] });
    await sub.request({ type: "subscribe", channel: "dept:outage" });
    await publish("dept:outage", "before");
    expect(await sub.next()).toMatchObject({ data: "before" });

    await redis.kill();
    const started = performance.now();
    const refused = await publish("dept:outage", "while away");
    expect(refused.status).toBe(503);
    expect(((await refused.json()) as Frame).error).toMatchObject({ code: "unavailable" });
    expect(performance.now() - started).toBeLessThan(1500);
    for (const server of [a, b]) {
      const ready = await fetch(`${server.http}/ready`);
      expect(ready.status).toBe(503);
      expect(((await ready.json()) as Frame).failing).toContain("broker");
    }
    // A new connection cannot be counted against the cluster's bounds: refused before the upgrade.
    const refusedSocket = await fetch(`${a.http}/ws?token=${await a.token({ user: "late" })}`, { headers: { Connection: "Upgrade", Upgrade: "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==" } });
    expect(refusedSocket.status).toBe(503);
    expect(((await refusedSocket.json()) as Frame).error).toMatchObject({ code: "unavailable" });

    await redis.start();
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline && !(await Promise.all([a, b].map(async (s) => (await fetch(`${s.http}/ready`)).status === 200))).every(Boolean)) await Bun.sleep(50);
    for (const server of [a, b]) expect((await fetch(`${server.http}/ready`)).status).toBe(200);
    // Redis came back empty: the channel's epoch is gone, so its subscriber on A is told to
    // reconnect (4011) rather than go on as if nothing had happened.
    expect((await sub.closed).code).toBe(4011);
    const again = await Client.open(a, { user: "u1", subChannels: ["*"] });
    const reply = await again.request({ type: "subscribe", channel: "dept:outage" });
    expect(reply.ok).toBe(true);
    expect((await publish("dept:outage", "after")).status).toBe(200);
    expect(await again.next()).toMatchObject({ data: "after", offset: reply.offset + 1, epoch: reply.epoch });
    again.close();
  });

  test("a room publication made while the other node's link to Redis is down reaches that node's subscriber once Redis is back, from PostgreSQL", async () => {
    const sub = await Client.open(a, { user: "u2", subChannels: ["*"] });
    const reply = await sub.request({ type: "subscribe", channel: "room:kept" });
    expect(await sub.next()).toMatchObject({ event: "user_joined" });
    await redis.kill();
    // Stored in PostgreSQL and acknowledged; its fan-out to node A is lost with Redis away.
    const stored = await publish("room:kept", "while away");
    expect(stored.status).toBe(200);
    expect(await sub.silentFor(200)).toBe(true);
    await redis.start();
    // After A's subscriber connection is back, its position check finds the gap and reads it from PostgreSQL.
    expect(await sub.next(5000)).toMatchObject({ channel: "room:kept", data: "while away", offset: reply.offset + 1, epoch: reply.epoch });
    expect(await sub.silentFor(500)).toBe(true);
    sub.close();
  });
});
