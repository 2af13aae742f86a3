import { afterAll, beforeAll, describe, expect, test as anyTest } from "bun:test";
import { parseChannel } from "../src/channel.ts";
import type { MaybePromise } from "../src/history/history.ts";
import { MemoryPresenceStore } from "../src/presence/memory-presence-store.ts";
import type { PresenceStore } from "../src/presence/presence-store.ts";
import { RedisKeys } from "../src/redis/keys.ts";
import { RedisPresenceStore } from "../src/redis/redis-presence-store.ts";
import { connectRedis, openRedis, type Redis } from "../src/redis/redis-client.ts";
import { redisTests, startRedis, type RedisServer } from "./support/redis.ts";

/**
 * The PresenceStore contract (src/presence/presence-store.ts), run against every implementation.
 * The Redis store runs against one redis-server for the file, each subject under its own key
 * prefix (its `held` counts what the keys under it hold: channels, entries, index members).
 * Times are given, never read from a clock: a store keeps what it is told.
 */
interface Subject {
  store: PresenceStore;
  /** What the store holds, to check it frees everything; omitted by a store that cannot tell. */
  held?: () => MaybePromise<{ channels: number; entries: number; timers: number }>;
}

const redis = redisTests();
let server: RedisServer | undefined;
const connections: Redis[] = [];
let prefixes = 0;

/** A connection to the file's redis-server, as a node makes it (src/redis/redis-client.ts). */
async function connect(commandTimeoutMs = 2000): Promise<Redis> {
  const connection = connectRedis({ url: server!.url, commandTimeoutMs, prefix: "unused" }, "presence-test");
  connections.push(connection);
  await openRedis(connection, 5000);
  return connection;
}

/** A Redis store under a key prefix no other subject uses. */
async function redisStore(prefix = `presence${++prefixes}`): Promise<RedisPresenceStore> {
  return new RedisPresenceStore(await connect(), new RedisKeys(prefix));
}

if (redis.available) {
  beforeAll(async () => {
    server = await startRedis();
  });
  afterAll(async () => {
    for (const connection of connections) connection.disconnect();
    await server?.stop();
  });
}

const implementations: [string, () => Promise<Subject>, typeof anyTest][] = [
  [
    "MemoryPresenceStore",
    async () => {
      const store = new MemoryPresenceStore();
      return { store, held: () => store.held() };
    },
    anyTest,
  ],
  [
    "RedisPresenceStore",
    async () => {
      const store = await redisStore();
      return { store, held: () => store.held() };
    },
    redis.test,
  ],
];

const room = (tenant: string, id: string) => parseChannel(tenant, `room:${id}`);
const tab = (user: string, client: string) => ({ user, client });

for (const [name, make, test] of implementations) {
  describe(`${name} keeps the PresenceStore contract`, () => {
    test("a user is a member while any of its clients is: one join at its first client, one leave at its last", async () => {
      const { store } = await make();
      const a = room("t1", "a");
      expect(await store.add(a, tab("ana", "c1"), 1000)).toBe(true);
      expect(await store.add(a, tab("ana", "c2"), 1000)).toBe(false);
      // Adding an entry that exists only moves its expiry: no join.
      expect(await store.add(a, tab("ana", "c1"), 2000)).toBe(false);
      expect(await store.remove(a, tab("ana", "c1"))).toBe(false);
      expect(await store.members(a)).toEqual([{ user: "ana", info: {} }]);
      expect(await store.remove(a, tab("ana", "c2"))).toBe(true);
      expect(await store.members(a)).toEqual([]);
      // Nothing left to remove: no second leave.
      expect(await store.remove(a, tab("ana", "c2"))).toBe(false);
      expect(await store.remove(a, tab("nobody", "c9"))).toBe(false);
    });

    test("members are listed each once, in the order they became members, with the info last written", async () => {
      const { store } = await make();
      const p = parseChannel("t1", "presence");
      await store.add(p, tab("w1", "c1"), 1000, { status: "online" });
      await store.add(p, tab("ana", "c2"), 1000, { name: "Ana", status: "online" });
      await store.add(p, tab("ana", "c3"), 1000);
      await store.add(p, tab("bob", "c4"), 1000, { status: "online" });
      // A new status replaces the user's info; an add without info keeps it.
      await store.add(p, tab("bob", "c4"), 1000, { status: "busy" });
      await store.add(p, tab("bob", "c5"), 1000);
      expect(await store.members(p)).toEqual([
        { user: "w1", info: { status: "online" } },
        { user: "ana", info: { name: "Ana", status: "online" } },
        { user: "bob", info: { status: "busy" } },
      ]);
      expect(await store.find(p, ["bob", "zed", "ana"])).toEqual([{ status: "busy" }, null, { name: "Ana", status: "online" }]);
      expect(await store.find(room("t1", "empty"), ["bob"])).toEqual([null]);
    });

    test("expire removes the entries due at or before now and reports each user left once, in expiry order", async () => {
      const { store } = await make();
      const a = room("t1", "a");
      const p = parseChannel("t1", "presence");
      await store.add(p, tab("dan", "c1"), 500, { name: "Dan", status: "online" });
      await store.add(a, tab("dan", "c1"), 500);
      await store.add(a, tab("eve", "c2"), 300);
      await store.add(a, tab("eve", "c3"), 900);
      await store.add(a, tab("fay", "c4"), 100);
      expect(await store.expire(99)).toEqual([]);
      expect(await store.expire(100)).toEqual([{ channel: a, user: "fay", left: true, info: {} }]);
      // eve's c2 went, c3 keeps her; dan's two entries end at the same time: in the order they were set.
      expect(await store.expire(600)).toEqual([
        { channel: p, user: "dan", left: true, info: { name: "Dan", status: "online" } },
        { channel: a, user: "dan", left: true, info: {} },
      ]);
      expect(await store.members(a)).toEqual([{ user: "eve", info: {} }]);
      expect(await store.expire(600)).toEqual([]);
      expect(await store.expire(900)).toEqual([{ channel: a, user: "eve", left: true, info: {} }]);
    });

    test("among entries given the same expiry, the one set last (a refresh) comes last", async () => {
      const { store } = await make();
      const a = room("t1", "a");
      const p = parseChannel("t1", "presence");
      await store.add(p, tab("gil", "c1"), 100);
      await store.add(a, tab("gil", "c1"), 100);
      // The close sets the channel first, then the tenant: the leave goes out before the offline.
      expect(await store.refresh(a, tab("gil", "c1"), 700)).toBe(true);
      expect(await store.refresh(p, tab("gil", "c1"), 700)).toBe(true);
      expect((await store.expire(700)).map((e) => e.channel.name)).toEqual(["room:a", "presence"]);
    });

    test("refresh moves an existing entry's expiry, either way, and creates none", async () => {
      const { store } = await make();
      const a = room("t1", "a");
      await store.add(a, tab("hal", "c1"), 100);
      expect(await store.refresh(a, tab("hal", "c1"), 1000)).toBe(true);
      expect(await store.expire(500)).toEqual([]);
      expect(await store.refresh(a, tab("hal", "c1"), 600)).toBe(true);
      expect(await store.refresh(a, tab("hal", "c2"), 5000)).toBe(false);
      expect(await store.refresh(room("t1", "other"), tab("hal", "c1"), 5000)).toBe(false);
      expect(await store.members(room("t1", "other"))).toEqual([]);
      expect(await store.expire(600)).toEqual([{ channel: a, user: "hal", left: true, info: {} }]);
    });

    test("a client added within another's grace continues the membership: no join, no leave, the same place", async () => {
      const { store } = await make();
      const a = room("t1", "a");
      await store.add(a, tab("ivy", "old"), 1000);
      await store.add(a, tab("jon", "c1"), 1000);
      // ivy's tab closed: its entry now ends with the grace; a reload adds a new one before that.
      await store.refresh(a, tab("ivy", "old"), 200);
      expect(await store.add(a, tab("ivy", "new"), 1000)).toBe(false);
      expect(await store.expire(200)).toEqual([]);
      expect((await store.members(a)).map((m) => m.user)).toEqual(["ivy", "jon"]);
    });

    test("tenants never share members: the same channel name in two tenants holds two memberships", async () => {
      const { store } = await make();
      const acme = room("acme", "x");
      const globex = room("globex", "x");
      expect(await store.add(acme, tab("kim", "c1"), 100, { status: "online" })).toBe(true);
      expect(await store.add(globex, tab("kim", "c2"), 200)).toBe(true);
      expect(await store.members(globex)).toEqual([{ user: "kim", info: {} }]);
      expect(await store.find(globex, ["kim"])).toEqual([{}]);
      expect(await store.remove(globex, tab("kim", "c1"))).toBe(false);
      const first = await store.expire(100);
      expect(first).toEqual([{ channel: acme, user: "kim", left: true, info: { status: "online" } }]);
      expect(first[0]!.channel.tenant).toBe("acme");
      expect(await store.members(globex)).toEqual([{ user: "kim", info: {} }]);
      expect((await store.expire(200))[0]!.channel.tenant).toBe("globex");
    });

    test("status: chosen away or busy, else online while any marked entry is active, away when all are idle; unmarked entries do not count", async () => {
      const subject = await make();
      const { store } = subject;
      const p = parseChannel("t1", "presence");
      expect(await store.mark(p, "mia", { chosen: "busy" })).toBeNull();
      await store.add(p, tab("mia", "c1"), 1000, { name: "Mia" });
      await store.add(p, tab("mia", "c2"), 1000);
      // A grace entry: never marked.
      await store.add(p, tab("mia", ""), 1000);
      expect(await store.find(p, ["mia"])).toEqual([{ name: "Mia" }]);
      expect(await store.mark(p, "mia", { clients: ["c1"], active: true })).toEqual({ changed: true, info: { name: "Mia", status: "online" } });
      expect(await store.mark(p, "mia", { clients: ["c2", "nope"], active: false })).toEqual({ changed: false, info: { name: "Mia", status: "online" } });
      expect(await store.mark(p, "mia", { clients: ["c1"], active: false })).toEqual({ changed: true, info: { name: "Mia", status: "away" } });
      expect((await store.mark(p, "mia", { chosen: "busy" }))?.info.status).toBe("busy");
      expect((await store.mark(p, "mia", { clients: ["c1", "c2"], active: true }))?.changed).toBe(false);
      expect(await store.mark(p, "mia", { chosen: "online" })).toEqual({ changed: true, info: { name: "Mia", status: "online", chosen: "online" } });
      // An add with info merges it: the status and the choice stay.
      await store.add(p, tab("mia", "c3"), 1000, { name: "Mia R." });
      expect(await store.find(p, ["mia"])).toEqual([{ name: "Mia R.", status: "online", chosen: "online" }]);
      // A remove does not decide the status; the empty mark after it does.
      expect(await store.remove(p, tab("mia", "c1"))).toBe(false);
      await store.mark(p, "mia", { clients: ["c2"], active: false });
      expect((await store.find(p, ["mia"]))[0]?.status).toBe("away");
      await store.mark(p, "mia", { clients: ["c2"], active: true });
      expect(await store.remove(p, tab("mia", "c2"))).toBe(false);
      expect((await store.find(p, ["mia"]))[0]?.status).toBe("online");
      // With no marked entry left (c3 was never marked; the grace entry neither) the status stays what it was.
      expect(await store.mark(p, "mia", {})).toEqual({ changed: false, info: { name: "Mia R.", status: "online", chosen: "online" } });
      expect(await store.remove(p, tab("mia", "c3"))).toBe(false);
      expect(await store.remove(p, tab("mia", ""))).toBe(true);
      // The choice went with the membership.
      await store.add(p, tab("mia", "c4"), 1000);
      expect(await store.mark(p, "mia", { clients: ["c4"], active: false })).toEqual({ changed: true, info: { status: "away" } });
      expect(await store.remove(p, tab("mia", "c4"))).toBe(true);
      const held = await subject.held?.();
      if (held) expect(held).toEqual({ channels: 0, entries: 0, timers: held.timers });
    });

    test("an expiring active entry of a user who stays a member reports its new status once", async () => {
      const { store } = await make();
      const p = parseChannel("t1", "presence");
      await store.add(p, tab("ivo", "dead"), 100);
      await store.add(p, tab("ivo", "live"), 1000);
      await store.add(p, tab("zoe", "z1"), 100);
      await store.mark(p, "ivo", { clients: ["dead"], active: true });
      await store.mark(p, "ivo", { clients: ["live"], active: false });
      expect((await store.find(p, ["ivo"]))[0]?.status).toBe("online");
      // zoe's entry was never marked: its expiry is a leave; ivo's is a status change.
      expect(await store.expire(100)).toEqual([
        { channel: p, user: "ivo", left: false, info: { status: "away" } },
        { channel: p, user: "zoe", left: true, info: {} },
      ]);
      expect(await store.expire(100)).toEqual([]);
    });

    test("holds nothing once every entry is removed or expired, and refreshes do not pile up", async () => {
      const subject = await make();
      const { store } = subject;
      const channels = Array.from({ length: 20 }, (_, i) => room(`t${i % 4}`, `r${i}`));
      for (const [i, channel] of channels.entries()) {
        for (let u = 0; u < 10; u++) await store.add(channel, tab(`u${u}`, `c${i}-${u}`), 1000);
      }
      // Live entries refreshed many times over (a long-lived node): what is held stays near the entries.
      for (let round = 1; round <= 30; round++) {
        for (const [i, channel] of channels.entries()) {
          for (let u = 0; u < 10; u++) await store.refresh(channel, tab(`u${u}`, `c${i}-${u}`), 1000 + round);
        }
        const held = await subject.held?.();
        if (held) expect(held.timers).toBeLessThanOrEqual(2 * held.entries + 64);
      }
      expect((await subject.held?.())?.entries ?? 200).toBe(200);
      // Half leave by remove, half by expiry.
      for (const [i, channel] of channels.entries()) {
        for (let u = 0; u < 5; u++) await store.remove(channel, tab(`u${u}`, `c${i}-${u}`));
      }
      const afterRemoves = await subject.held?.();
      if (afterRemoves) expect(afterRemoves.timers).toBeLessThanOrEqual(2 * afterRemoves.entries + 64);
      expect((await store.expire(2000)).length).toBe(100);
      for (const channel of channels) expect(await store.members(channel)).toEqual([]);
      const held = await subject.held?.();
      // Every timer was due by 2000: stale ones (of removed entries) went with the expiry pass.
      if (held) expect(held).toEqual({ channels: 0, entries: 0, timers: 0 });
    });
  });
}

describe.if(redis.available)("RedisPresenceStore shared by several nodes", () => {
  const test = redis.test;
  /** Two nodes: two stores, each on its own connection, over the same keys. */
  const twoNodes = async () => {
    const prefix = `shared${++prefixes}`;
    return [await redisStore(prefix), await redisStore(prefix)] as const;
  };

  test("the same user added from two nodes at once is one member, joined once", async () => {
    const [one, two] = await twoNodes();
    const a = room("t1", "a");
    const users = Array.from({ length: 200 }, (_, i) => `u${i}`);
    const joins = await Promise.all(users.flatMap((user) => [one.add(a, tab(user, "on-one"), 1000), two.add(a, tab(user, "on-two"), 1000)]));
    for (let i = 0; i < users.length; i++) expect([joins[2 * i], joins[2 * i + 1]].filter(Boolean)).toHaveLength(1);
    expect((await two.members(a)).map((m) => m.user)).toEqual((await one.members(a)).map((m) => m.user));
    expect(new Set((await one.members(a)).map((m) => m.user)).size).toBe(200);
    // Either node's remove of its own entry leaves the other's: the user leaves once, with the last.
    expect(await one.remove(a, tab("u0", "on-one"))).toBe(false);
    expect(await two.remove(a, tab("u0", "on-two"))).toBe(true);
  });

  test("calls one node makes without waiting take effect in the order it made them", async () => {
    const [one] = await twoNodes();
    const a = room("t1", "a");
    const calls: Promise<boolean>[] = [];
    for (let i = 0; i < 50; i++) {
      calls.push(one.add(a, tab("ana", "c1"), 1000), one.refresh(a, tab("ana", "c1"), 2000), one.remove(a, tab("ana", "c1")));
    }
    expect(await Promise.all(calls)).toEqual(Array.from({ length: 150 }, () => true));
    expect(await one.members(a)).toEqual([]);
  });

  test("nodes expiring together report each leave once, each in expiry order", async () => {
    const prefix = `shared${++prefixes}`;
    // Small batches, so the two nodes' expiry scripts interleave.
    const one = new RedisPresenceStore(await connect(), new RedisKeys(prefix), 7);
    const two = new RedisPresenceStore(await connect(), new RedisKeys(prefix), 7);
    const channels = [room("t1", "a"), room("t1", "b"), room("t2", "a"), parseChannel("t2", "presence")];
    for (let i = 0; i < 300; i++) {
      const channel = channels[i % channels.length]!;
      // Times repeat: ties go in the order the entries were set (by either node).
      const at = 100 + (i % 13);
      await (i % 2 === 0 ? one : two).add(channel, tab(`u${i}`, `c${i}`), at);
    }
    const [first, second] = await Promise.all([one.expire(200), two.expire(200)]);
    const id = (e: { channel: { topic: string }; user: string }) => `${e.channel.topic} ${e.user}`;
    const all = [...first!, ...second!].map(id);
    expect(all.length).toBe(300);
    expect(new Set(all).size).toBe(300);
    // Both took part: the leaves were shared out between them, none reported twice.
    expect(first!.length).toBeGreaterThan(0);
    expect(second!.length).toBeGreaterThan(0);
    const order = (list: { user: string }[]) => list.map((e) => Number(e.user.slice(1))).map((i) => [100 + (i % 13), i] as const);
    const sorted = (list: (readonly [number, number])[]) => list.every((x, k) => k === 0 || list[k - 1]![0] < x[0] || (list[k - 1]![0] === x[0] && list[k - 1]![1] < x[1]));
    expect(sorted(order(first!))).toBe(true);
    expect(sorted(order(second!))).toBe(true);
    expect(await one.held()).toEqual({ channels: 0, entries: 0, timers: 0 });
  });

  test("a node that stopped without removing anything has its entries expire after their TTL, told by another node", async () => {
    const prefix = `shared${++prefixes}`;
    const stopping = await connect();
    const gone = new RedisPresenceStore(stopping, new RedisKeys(prefix));
    const survivor = await redisStore(prefix);
    const a = room("t1", "a");
    const p = parseChannel("t1", "presence");
    expect(await gone.add(p, tab("ana", "dead-1"), 60_000, { status: "online" })).toBe(true);
    expect(await gone.add(a, tab("ana", "dead-1"), 60_000)).toBe(true);
    expect(await survivor.add(a, tab("bob", "live-1"), 90_000)).toBe(true);
    stopping.disconnect();
    expect(await survivor.expire(59_999)).toEqual([]);
    expect(await survivor.members(a)).toEqual([{ user: "ana", info: {} }, { user: "bob", info: {} }]);
    expect(await survivor.expire(60_000)).toEqual([
      { channel: p, user: "ana", left: true, info: { status: "online" } },
      { channel: a, user: "ana", left: true, info: {} },
    ]);
    expect(await survivor.members(a)).toEqual([{ user: "bob", info: {} }]);
    expect(await survivor.held()).toEqual({ channels: 1, entries: 1, timers: 2 });
  });

  // Last: it restarts the file's redis-server (empty).
  test("while Redis is down every call rejects at once instead of waiting; after it is back the store works again", async () => {
    const connection = await connect(2000);
    const store = new RedisPresenceStore(connection, new RedisKeys(`shared${++prefixes}`));
    const a = room("t1", "a");
    await store.add(a, tab("ana", "c1"), 1000);
    await server!.kill();
    const started = performance.now();
    const calls = await Promise.allSettled([
      store.add(a, tab("bob", "c2"), 1000),
      store.refresh(a, tab("ana", "c1"), 2000),
      store.remove(a, tab("ana", "c1")),
      store.members(a),
      store.find(a, ["ana"]),
      store.expire(5000),
    ]);
    expect(calls.map((call) => call.status)).toEqual(Array.from({ length: 6 }, () => "rejected"));
    // Well under the 2 s command timeout: no offline queue, the calls fail as the connection is down.
    expect(performance.now() - started).toBeLessThan(1000);
    const ready = new Promise<void>((resolve) => connection.once("ready", () => resolve()));
    await server!.start();
    await ready;
    expect(await store.add(a, tab("bob", "c2"), 1000)).toBe(true);
    expect(await store.members(a)).toEqual([{ user: "bob", info: {} }]);
  });
});
