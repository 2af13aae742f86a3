import { afterEach, describe, expect } from "bun:test";
import { testsNeedingAll } from "./support/required.ts";
import { Client, handshake, testToken, type Frame } from "./helpers.ts";
import { startCluster, type Cluster, type ClusterNode } from "./support/cluster.ts";
import { Follower } from "./support/follower.ts";
import { finalPositions, publishLoop as startPublishLoop, verdictOf } from "./support/publications.ts";
import { postgresTests } from "./support/postgres.ts";
import { redisTests, startRedis, type RedisServer } from "./support/redis.ts";

// The cluster's failure scenarios over real sockets, with child-process nodes behind the test
// balancer (test/support/cluster.ts): a node SIGKILLed under load, the presence of a killed node,
// Redis restarted under load (with and without persistence), and tenants kept apart under churn.
// Every client here follows its channel as an SDK would (test/support/follower.ts): it reconnects
// through the balancer and resubscribes with `since`; every check below is over what it got.

const pg = postgresTests();
const test = testsNeedingAll(redisTests(), pg);

const clusters: Cluster[] = [];
const followers: Follower[] = [];
const clients: Client[] = [];
const servers: RedisServer[] = [];
const publishers: { stop(): void; done: Promise<void> }[] = [];
afterEach(async () => {
  // A test that failed midway leaves its publishers running: stopped and settled before the nodes go.
  for (const publisher of publishers) publisher.stop();
  await Promise.allSettled(publishers.splice(0).map((publisher) => publisher.done));
  for (const follower of followers.splice(0)) follower.stop();
  for (const client of clients.splice(0)) client.close();
  await Promise.all(clusters.splice(0).map((cluster) => cluster.stop()));
  await Promise.all(servers.splice(0).map((server) => server.stop()));
});

async function cluster(options: Parameters<typeof startCluster>[0]): Promise<Cluster> {
  const started = await startCluster(options);
  clusters.push(started);
  return started;
}

/** Starts followers in groups (hundreds of opens at once would only measure the accept queue). */
async function follow(specs: { url: () => string; channel: string }[], group = 50): Promise<Follower[]> {
  const started: Follower[] = [];
  for (let i = 0; i < specs.length; i += group) {
    const batch = specs.slice(i, i + group).map((spec) => new Follower(spec));
    followers.push(...batch);
    await Promise.all(batch.map((follower) => follower.start()));
    started.push(...batch);
  }
  return started;
}

/** publishLoop (test/support/publications.ts), stopped by afterEach if the test ends first. */
function publishLoop(...args: Parameters<typeof startPublishLoop>): ReturnType<typeof startPublishLoop> {
  const loop = startPublishLoop(...args);
  publishers.push(loop);
  return loop;
}

/** A line of numbers about a run, shown with SHOW_FAILOVER=1 (how much each scenario really exercised). */
function report(line: string): void {
  if (process.env.SHOW_FAILOVER) process.stderr.write(`${line}\n`);
}

/** Sums of numbers by key, for messages that say how many of each there were. */
function tally<T>(values: T[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const value of values) counts[String(value)] = (counts[String(value)] ?? 0) + 1;
  return counts;
}

describe("a node SIGKILLed under load", () => {
  test(
    "300 clients on 10 channels: the killed node's clients reconnect through the balancer and recover with since; every client gets every offset from its first to the last, each once, in order",
    async () => {
      const bed = await cluster({ nodes: 3, env: { HISTORY_DEPT: "1000,1h" } });
      const key = await bed.apiKey("acme");
      const channels = Array.from({ length: 10 }, (_, i) => `dept:c${i}`);
      const tokens = Array.from({ length: 300 }, (_, i) => testToken({ user: `u${i}`, subChannels: ["dept:*"] }));
      const all = await follow(tokens.map((token, i) => ({ url: () => `${bed.wsUrl}?token=${token}`, channel: channels[i % 10]! })));
      expect([0, 1, 2].map((i) => bed.balancer.active(i))).toEqual([100, 100, 100]);

      // Two publishers, one per surviving node, 40 batches of one publication per channel each;
      // node 1 is killed once the first has 10 batches acknowledged.
      const killed = Promise.withResolvers<void>();
      const batch = (i: number) => channels.map((channel) => ({ channel, event: "n", data: i }));
      const survivors = [bed.nodes[0]!, bed.nodes[2]!];
      const loops = survivors.map((node, n) => publishLoop(key, () => node.url, batch, 40, 10, n === 0 ? (i) => i === 9 && killed.resolve() : undefined));
      await killed.promise;
      const started = performance.now();
      // Marked down first: a client reconnecting within the kill must not be sent to the dead port.
      bed.balancer.setUp(1, false);
      expect(await bed.nodes[1]!.kill("SIGKILL")).toEqual({ code: null, signal: "SIGKILL" });
      // The kernel closes most of a killed process's sockets itself; the balancer cuts what is left.
      bed.balancer.dropConnections(1);
      expect(bed.balancer.active(1)).toBe(0);
      await Promise.all(loops.map((loop) => loop.done));
      const acks = loops.flatMap((loop) => loop.published.acks);
      expect(loops.map((loop) => Object.fromEntries(loop.published.refused))).toEqual([{}, {}]);
      expect(acks).toHaveLength(800);

      const final = finalPositions(acks);
      await Promise.all(
        all.map((follower, i) => {
          const end = final.get(channels[i % 10]!)!;
          return follower.until((f) => f.last?.epoch === end.epoch && f.last.offset === end.offset, 10_000);
        }),
      );
      const recoveredWithin = performance.now() - started;

      const verdicts = all.map((follower, i) => verdictOf(follower, channels[i % 10]!, acks));
      expect(verdicts.flatMap((v) => v.violations)).toEqual([]);
      expect(verdicts.flatMap((v) => v.missing)).toEqual([]);
      // History (1000 per channel) holds every publication of the run: nobody may be told it missed one.
      expect(verdicts.flatMap((v) => v.notRecovered)).toEqual([]);
      // Exactly the killed node's 100 clients saw one close (the cut connection) and subscribed again.
      expect(tally(verdicts.map((v) => `${v.closes.join(",")}|${v.subscribes}`))).toEqual({ "|1": 200, "1006|2": 100 });
      expect(all.every((f) => f.gaveUp === null)).toBe(true);
      // Each follower got every publication of its channel (80) after its subscribe: offsets 1..80.
      expect(all.filter((follower) => follower.offsets.join() !== Array.from({ length: 80 }, (_, n) => n + 1).join()).length).toBe(0);
      // The publishers went on for 30 more batches after the kill: every reconnected client had
      // missed some, and got them replayed after its `recovered:true`.
      const reconnected = verdicts.filter((v) => v.subscribes === 2);
      expect(reconnected.filter((v) => v.replayed === 0)).toEqual([]);
      report(`node kill: reconnected ${reconnected.length}, replayed ${reconnected.reduce((n, v) => n + v.replayed, 0)} (by count ${JSON.stringify(tally(reconnected.map((v) => v.replayed)))}), all within ${Math.round(recoveredWithin)} ms`);
    },
    30_000,
  );
});

describe("the presence of a killed node", () => {
  const MEMBER_TTL_MS = 2000;
  const REFRESH_MS = 500;
  const SWEEP_MS = 250;

  test(
    "a user with tabs on two nodes stays a member and online when one node dies; a user only on the dead node leaves within the member TTL and a sweep, with one user_left and one offline",
    async () => {
      const bed = await cluster({
        nodes: 2,
        env: { PRESENCE_MEMBER_TTL_MS: String(MEMBER_TTL_MS), PRESENCE_REFRESH_MS: String(REFRESH_MS), SWEEP_INTERVAL_MS: String(SWEEP_MS) },
      });
      const key = await bed.apiKey("acme");
      const open = async (node: ClusterNode, user: string) => {
        const { client, welcome } = await Client.connect(`${node.wsUrl}?token=${testToken({ user, subChannels: ["room:*"] })}`);
        clients.push(client);
        expect(welcome.type).toBe("welcome");
        expect(await client.request({ type: "subscribe", channel: "room:x" })).toMatchObject({ ok: true });
        return client;
      };
      const members = async (node: ClusterNode, channel = "room:x") => {
        const res = await fetch(`${node.url}/v1/presence?channel=${channel}`, { headers: { authorization: `Bearer ${key}` } });
        expect(res.status).toBe(200);
        return ((await res.json()) as { users: { user: string }[] }).users.map((u) => u.user).sort();
      };
      const [node0, node1] = [bed.nodes[0]!, bed.nodes[1]!];

      // The tenant's presence channel, watched from node 0 before anyone else connects.
      const { client: online, welcome } = await Client.connect(`${node0.wsUrl}?token=${testToken({ user: "pwatch", subChannels: ["presence"] })}`);
      clients.push(online);
      expect(welcome.type).toBe("welcome");
      expect(await online.request({ type: "subscribe", channel: "presence" })).toMatchObject({ ok: true });
      // Its own online races its subscribe (the node announces it once Redis has the entry): skipped once if it comes.
      let ownOnlineSeen = false;
      const status = async (): Promise<string> => {
        const frame = await online.next(MEMBER_TTL_MS + 2 * SWEEP_MS + 1000);
        expect(frame).toMatchObject({ type: "pub", channel: "presence", event: "presence" });
        const said = `${frame.data.user} ${frame.data.status}`;
        if (said === "pwatch online" && !ownOnlineSeen) {
          ownOnlineSeen = true;
          return status();
        }
        return said;
      };

      // The watcher (node 0) sees each user's first subscribe as one user_joined, from either node.
      const watcher = await open(node0, "watch");
      expect(await watcher.next()).toMatchObject({ event: "user_joined", data: { room: "x", user: "watch" } });
      await open(node0, "both");
      expect(await watcher.next()).toMatchObject({ event: "user_joined", data: { room: "x", user: "both" } });
      await open(node1, "both");
      await open(node1, "gone");
      expect(await watcher.next()).toMatchObject({ event: "user_joined", data: { room: "x", user: "gone" } });
      expect(await members(node0)).toEqual(["both", "gone", "watch"]);
      // One online per user, whatever the number of its tabs and nodes.
      expect([await status(), await status(), await status()]).toEqual(["watch online", "both online", "gone online"]);
      expect(await members(node0, "presence")).toEqual(["both", "gone", "pwatch", "watch"]);

      const killedAt = performance.now();
      await node1.kill("SIGKILL");
      bed.balancer.setUp(1, false);
      bed.balancer.dropConnections(1);
      // Nobody said goodbye for node 1: its entries stay until their TTL runs out.
      expect(await members(node0)).toEqual(["both", "gone", "watch"]);

      // Node 1 refreshed its entries at most REFRESH_MS plus a sweep before it died; they expire
      // MEMBER_TTL_MS after that refresh, and node 0 finds them at its next sweep.
      const left = await watcher.next(MEMBER_TTL_MS + 2 * SWEEP_MS + 1000);
      const leftAfter = performance.now() - killedAt;
      expect(left).toMatchObject({ type: "pub", channel: "room:x", event: "user_left", data: { room: "x", user: "gone" } });
      expect(left.offset).toBeUndefined();
      // Not before its TTL (its last refresh was at most REFRESH_MS and a sweep before the kill; margin for a slow timer).
      expect(leftAfter).toBeGreaterThan(MEMBER_TTL_MS / 2);
      expect(leftAfter).toBeLessThan(MEMBER_TTL_MS + 2 * SWEEP_MS + 1000);
      expect(await status()).toBe("gone offline");
      expect(await members(node0)).toEqual(["both", "watch"]);
      expect(await members(node0, "presence")).toEqual(["both", "pwatch", "watch"]);
      // "both" lost its node-1 entries in the same sweep but keeps its tab on node 0: no leave, no offline.
      expect(await watcher.silentFor(MEMBER_TTL_MS / 2)).toBe(true);
      expect(await online.silentFor(0)).toBe(true);
      expect(await members(node0)).toEqual(["both", "watch"]);
    },
    20_000,
  );
});

/** Polls every node's /ready until each answers `status` (readiness has no event to await); returns the bodies. */
async function readiness(nodes: ClusterNode[], status: number, withinMs: number): Promise<Frame[]> {
  const deadline = performance.now() + withinMs;
  for (;;) {
    const answers = await Promise.all(nodes.map(async (node) => {
      const res = await fetch(`${node.url}/ready`);
      return { status: res.status, body: (await res.json()) as Frame };
    }));
    if (answers.every((answer) => answer.status === status)) return answers.map((answer) => answer.body);
    if (performance.now() > deadline) throw new Error(`/ready did not answer ${status} on every node within ${withinMs} ms: ${JSON.stringify(answers)}`);
    await Bun.sleep(50);
  }
}

/** Resolves once `count()` reaches `n` (checked by the publisher after each acknowledgement). */
function reached(count: () => number, n: number): { check(): void; promise: Promise<void> } {
  const { promise, resolve } = Promise.withResolvers<void>();
  return { check: () => count() >= n && resolve(), promise };
}

describe("Redis restarted under load", () => {
  for (const persist of [false, true]) {
    const kept = persist ? "with an append-only file (appendfsync always)" : "without persistence (it comes back empty)";
    test(
      `${kept}: /ready says broker while it is away and is 200 again within seconds; room subscribers get every acknowledged publication exactly once, dept subscribers every one or are told recovered:false`,
      async () => {
        let redis: RedisServer;
        let bed: Cluster;
        if (persist) {
          redis = await startRedis({ persist: true });
          servers.push(redis);
          bed = await cluster({ nodes: 3, redis: false, env: { REDIS_URL: redis.url } });
        } else {
          bed = await cluster({ nodes: 3 });
          redis = bed.redis!;
        }
        const key = await bed.apiKey("acme");
        const channels = ["dept:r", "room:r"];
        // 4 followers per node, 2 per channel, each first on its node directly and then, after a close, through the balancer.
        const specs = Array.from({ length: 12 }, (_, i) => {
          const token = testToken({ user: `u${i}`, subChannels: ["dept:*", "room:*"] });
          let opened = 0;
          const node = bed.nodes[i % 3]!;
          return { url: () => `${opened++ === 0 ? node.wsUrl : bed.wsUrl}?token=${token}`, channel: channels[Math.floor(i / 3) % 2]! };
        });
        const all = await follow(specs);

        const acked = { dept: 0, room: 0 };
        let mark = reached(() => Math.min(acked.dept, acked.room), 20);
        const loops = channels.map((channel) => {
          const kind = channel.startsWith("dept") ? "dept" : "room";
          return publishLoop(key, (i) => bed.nodes[i % 3]!.url, (i) => [{ channel, event: "n", data: i }], 5000, 5, () => {
            acked[kind]++;
            mark.check();
          });
        });
        await mark.promise;

        await redis.kill();
        const away = await readiness(bed.nodes, 503, 3000);
        for (const body of away) expect(body).toEqual({ status: "not_ready", failing: ["broker"] });
        // Publications go on against a Redis that is away for a second.
        await Bun.sleep(1000);
        const whileAway = { ...acked };
        await redis.start();
        const returned = performance.now();
        await readiness(bed.nodes, 200, 5000);
        const readyAfter = performance.now() - returned;

        mark = reached(() => Math.min(acked.dept - whileAway.dept, acked.room - whileAway.room), 20);
        await mark.promise;
        for (const loop of loops) loop.stop();
        await Promise.all(loops.map((loop) => loop.done));
        // The outage was real for the publishers: dept publications were refused while Redis was away.
        expect(loops[0]!.published.refused.get(503)).toBeGreaterThan(0);
        const acks = loops.flatMap((loop) => loop.published.acks);
        const final = finalPositions(acks);
        await Promise.all(all.map((follower) => {
          const end = final.get(follower.channel)!;
          return follower.until((f) => f.last?.epoch === end.epoch && f.last.offset === end.offset, 10_000);
        }));

        const verdicts = all.map((follower) => ({ channel: follower.channel, ...verdictOf(follower, follower.channel, acks) }));
        expect(verdicts.flatMap((v) => v.violations)).toEqual([]);
        expect(verdicts.flatMap((v) => v.missing)).toEqual([]);
        expect(all.every((f) => f.gaveUp === null)).toBe(true);
        const rooms = verdicts.filter((v) => v.channel === "room:r");
        const depts = verdicts.filter((v) => v.channel === "dept:r");
        // Rooms keep their offsets in PostgreSQL: no subscriber was closed or told it missed anything.
        expect(rooms.map((v) => [v.closes, v.notRecovered])).toEqual(rooms.map(() => [[], []]));
        const roomOffsets = acks.filter((a) => a.channel === "room:r").map((a) => a.offset);
        for (const follower of all.filter((f) => f.channel === "room:r")) {
          expect(follower.offsets.filter((offset) => roomOffsets.includes(offset))).toEqual(roomOffsets.toSorted((a, b) => a - b));
        }
        if (persist) {
          // Every acknowledged write survived: the dept channel kept its epoch and history; what pub/sub
          // dropped while Redis was away was read back from it, so nobody was closed or missed anything.
          expect(depts.map((v) => [v.closes, v.notRecovered])).toEqual(depts.map(() => [[], []]));
        } else {
          // Its epoch went with Redis: each dept subscriber was closed (4011) and told epoch_changed.
          for (const v of depts) {
            expect(v.closes).toContain(4011);
            expect(v.notRecovered.length).toBeGreaterThan(0);
            expect(v.notRecovered.every((n) => n.reason === "epoch_changed")).toBe(true);
          }
        }
        expect(readyAfter).toBeLessThan(5000);
        report(`redis ${kept}: acked ${JSON.stringify(acked)}, refused ${JSON.stringify(loops.map((l) => Object.fromEntries(l.published.refused)))}, ready after ${Math.round(readyAfter)} ms, dept closes ${JSON.stringify(tally(depts.flatMap((v) => v.closes)))}, not recovered ${JSON.stringify(tally(depts.flatMap((v) => v.notRecovered.map((n) => n.reason))))}`);
      },
      30_000,
    );
  }
});

/** Polls `read()` until it answers `expected` (membership has no event to await); throws with the last answer after `withinMs`. */
async function eventually<T>(read: () => Promise<T>, expected: T, withinMs: number): Promise<void> {
  const deadline = performance.now() + withinMs;
  for (;;) {
    const answer = await read();
    if (Bun.deepEquals(answer, expected)) return;
    if (performance.now() > deadline) throw new Error(`still ${JSON.stringify(answer)} after ${withinMs} ms, expected ${JSON.stringify(expected)}`);
    await Bun.sleep(50);
  }
}

describe("Redis restarted empty, and presence", () => {
  // A refresh of a live connection's entry that the store no longer has (a Redis that came back
  // empty) adds the entry back (PresenceService.refreshLive): the connected users are listed again.
  pg.test(
    "a Redis that comes back empty: the room's and the tenant's live members are listed again within a refresh",
    async () => {
      const MEMBER_TTL_MS = 2000;
      const REFRESH_MS = 500;
      const bed = await cluster({ nodes: 2, env: { PRESENCE_MEMBER_TTL_MS: String(MEMBER_TTL_MS), PRESENCE_REFRESH_MS: String(REFRESH_MS) } });
      const key = await bed.apiKey("acme");
      const listed = (node: ClusterNode, channel?: string) => async () => {
        const res = await fetch(`${node.url}/v1/presence${channel ? `?channel=${channel}` : ""}`, { headers: { authorization: `Bearer ${key}` } });
        expect(res.status).toBe(200);
        return ((await res.json()) as { users: { user: string }[] }).users.map((u) => u.user).sort();
      };
      for (const [i, node] of bed.nodes.entries()) {
        const { client } = await Client.connect(`${node.wsUrl}?token=${testToken({ user: `m${i}`, subChannels: ["room:*"] })}`);
        clients.push(client);
        expect(await client.request({ type: "subscribe", channel: "room:p" })).toMatchObject({ ok: true });
      }
      expect(await listed(bed.nodes[0]!, "room:p")()).toEqual(["m0", "m1"]);

      await bed.redis!.kill();
      await readiness(bed.nodes, 503, 3000);
      await bed.redis!.start();
      await readiness(bed.nodes, 200, 5000);
      // Both connections stayed open throughout: their nodes' next refresh must put them back.
      for (const node of bed.nodes) {
        await eventually(listed(node, "room:p"), ["m0", "m1"], 2 * REFRESH_MS + 1000);
        await eventually(listed(node), ["m0", "m1"], 2 * REFRESH_MS + 1000);
      }
    },
    20_000,
  );
});

/**
 * One short-lived client: connects, subscribes to `channels` at once, keeps every frame for
 * `holdMs` after the replies, closes. A connection cut before that (its node killed) ends the visit
 * early with what it got.
 */
async function visit(url: string, channels: string[], holdMs: number): Promise<{ frames: Frame[]; cut: boolean }> {
  const frames: Frame[] = [];
  const socket = new WebSocket(url);
  const replied = Promise.withResolvers<void>();
  const closed = Promise.withResolvers<boolean>();
  let done = false;
  socket.onmessage = (message) => {
    const frame = JSON.parse(String(message.data)) as Frame;
    frames.push(frame);
    if (frame.type === "welcome") channels.forEach((channel, i) => socket.send(JSON.stringify({ type: "subscribe", id: i + 1, channel })));
    if (frames.filter((f) => f.type === "reply").length === channels.length) replied.resolve();
  };
  socket.onclose = () => closed.resolve(!done);
  const cut = await Promise.race([replied.promise.then(() => false), closed.promise]);
  if (cut) return { frames, cut };
  await Promise.race([Bun.sleep(holdMs), closed.promise]);
  done = true;
  socket.close();
  return { frames, cut: await closed.promise };
}

describe("tenant isolation under churn", () => {
  test(
    "two tenants with the same channel names and user ids on every node, clients coming and going and a node killed and restarted: no frame of one ever reaches the other",
    async () => {
      const bed = await cluster({ nodes: 3 });
      const tenants = ["acme", "globex"] as const;
      const keys = { acme: await bed.apiKey("acme"), globex: await bed.apiKey("globex") };
      const channels = ["dept:shared", "room:shared"];
      /** Users are named after their tenant, so a join, leave or presence change says whose it is. */
      const userOf = (tenant: string, n: number) => `${tenant}-${n}`;

      // Steady followers: one per tenant, channel and node, each first on its node directly.
      const steady = await follow(
        tenants.flatMap((tenant) =>
          bed.nodes.flatMap((node, n) =>
            channels.map((channel, c) => {
              const token = testToken({ tenant, user: userOf(tenant, 100 + n * 2 + c), subChannels: ["*"] });
              let opened = 0;
              return { url: () => `${opened++ === 0 ? node.wsUrl : bed.wsUrl}?token=${token}`, channel };
            }),
          ),
        ),
      );
      const tenantOf = (follower: Follower) => tenants[Math.floor(steady.indexOf(follower) / 6)]!;

      // The same user id in both tenants, acme's on node 0 and globex's on node 1: each gets only its
      // own notifications. Its name is its tenant's, so its presence changes say whose they are.
      const same = await Promise.all(tenants.map(async (tenant, t) => {
        const { client, welcome } = await Client.connect(`${bed.nodes[t]!.wsUrl}?token=${testToken({ tenant, user: "same", name: tenant })}`);
        clients.push(client);
        expect(welcome).toMatchObject({ type: "welcome", tenant, user: "same" });
        return client;
      }));
      const notify = tenants.map(async (tenant) => {
        for (let n = 0; n < 5; n++) {
          const res = await fetch(`${bed.nodes[n % 2]!.url}/v1/notifications`, {
            method: "POST",
            headers: { "content-type": "application/json", authorization: `Bearer ${keys[tenant]}` },
            body: JSON.stringify({ user: "same", category: "note", title: `${tenant} ${n}`, message: "m" }),
          });
          expect(((await res.json()) as Frame).notifications).toEqual([{ user: "same", id: expect.any(Number), status: "pushed" }]);
        }
      });

      // Each tenant publishes to both channels through nodes 0 and 1 in turn (node 2 is the one killed);
      // node 2 dies once either has a quarter of its requests acknowledged.
      const midway = Promise.withResolvers<void>();
      const loops = tenants.map((tenant) =>
        publishLoop(keys[tenant], (i) => bed.nodes[i % 2]!.url, (i) => channels.map((channel) => ({ channel, event: "n", data: { tenant, i } })), 60, 10, (i) => i === 14 && midway.resolve()),
      );
      // Churn: per tenant 4 clients at a time come through the balancer, subscribe, stay 50 ms and go, 8 times each.
      const seen = new Map<string, Frame[]>(tenants.map((tenant) => [tenant, []]));
      let cut = 0;
      const churn = tenants.flatMap((tenant) =>
        Array.from({ length: 4 }, async (_, lane) => {
          for (let round = 0; round < 8; round++) {
            const token = testToken({ tenant, user: userOf(tenant, lane), subChannels: ["*"] });
            const url = `${bed.wsUrl}?token=${token}`;
            const visited = await visit(url, [...channels, "presence"], 50);
            seen.get(tenant)!.push(...visited.frames);
            if (visited.cut) cut++;
          }
        }),
      );
      // Node 2 dies and comes back in the middle of it.
      await midway.promise;
      bed.balancer.setUp(2, false);
      await bed.nodes[2]!.kill("SIGKILL");
      bed.balancer.dropConnections(2);
      await bed.nodes[2]!.restart();
      bed.balancer.setUp(2, true);
      await Promise.all(churn);
      await Promise.all(loops.map((loop) => loop.done));
      await Promise.all(notify);
      for (const [t, client] of same.entries()) {
        const titles: string[] = [];
        for (let n = 0; n < 5; n++) {
          const frame = await client.next();
          expect(frame).toMatchObject({ type: "pub", channel: "user:same", event: "notification" });
          titles.push(frame.data.title);
        }
        expect(titles).toEqual(Array.from({ length: 5 }, (_, n) => `${tenants[t]} ${n}`));
      }
      expect(await same[0]!.silentFor(200)).toBe(true);
      expect(await same[1]!.silentFor(0)).toBe(true);

      const acks = new Map(tenants.map((tenant, t) => [tenant, loops[t]!.published.acks]));
      for (const tenant of tenants) expect(acks.get(tenant)).toHaveLength(120);
      // Same names, separate channels: each tenant's offsets run 1..60 in an epoch of its own.
      const finals = tenants.map((tenant) => finalPositions(acks.get(tenant)!));
      for (const channel of channels) {
        expect(finals.map((final) => final.get(channel)!.offset)).toEqual([60, 60]);
        expect(finals[0]!.get(channel)!.epoch).not.toBe(finals[1]!.get(channel)!.epoch);
      }
      await Promise.all(steady.map((follower) => {
        const end = finals[tenants.indexOf(tenantOf(follower))]!.get(follower.channel)!;
        return follower.until((f) => f.last?.epoch === end.epoch && f.last.offset === end.offset, 10_000);
      }));

      // Nothing foreign: every publication and every join, leave and presence change a client got is of its tenant.
      const userTenant = (data: { user?: string; name?: string }) => (data.user === "same" ? data.name : String(data.user).split("-")[0]);
      const whose = (frame: Frame): string | undefined => (frame.type !== "pub" ? undefined : frame.offset !== undefined ? frame.data?.tenant : userTenant(frame.data ?? {}));
      const foreign: { tenant: string; frame: Frame }[] = [];
      const own = { pub: 0, ephemeral: 0 };
      for (const tenant of tenants) {
        for (const frame of seen.get(tenant)!) {
          const owner = whose(frame);
          if (owner === undefined) continue;
          if (owner !== tenant) foreign.push({ tenant, frame });
          else own[frame.offset !== undefined ? "pub" : "ephemeral"]++;
        }
        for (const follower of steady.filter((f) => tenantOf(f) === tenant)) {
          for (const event of follower.events) {
            if (event.type === "pub" && (event.data as { tenant: string }).tenant !== tenant) foreign.push({ tenant, frame: event });
            if (event.type === "ephemeral" && userTenant(event.data as { user: string }) !== tenant) foreign.push({ tenant, frame: event });
          }
        }
      }
      expect(foreign).toEqual([]);
      // ... and the check is not vacuous: the churning clients did get their own tenant's frames.
      expect(own.pub).toBeGreaterThan(0);
      expect(own.ephemeral).toBeGreaterThan(0);
      // The steady followers got every publication of their own tenant, each once, in order.
      const verdicts = steady.map((follower) => verdictOf(follower, follower.channel, acks.get(tenantOf(follower))!));
      expect(verdicts.flatMap((v) => [...v.violations, ...v.missing.map((m) => JSON.stringify(m))])).toEqual([]);
      expect(verdicts.flatMap((v) => v.notRecovered)).toEqual([]);
      report(`isolation: own frames ${JSON.stringify(own)}, visits cut ${cut}, steady closes ${JSON.stringify(tally(verdicts.flatMap((v) => v.closes)))}`);
    },
    30_000,
  );
});

describe("requests while Redis is away", () => {
  // Redis errors reach clients as `unavailable` (isRedisUnavailable, at the REST and WebSocket
  // boundaries and at the upgrade), never as `internal` or an HTML error page.
  pg.test(
    "the upgrade, a room subscribe, GET /v1/presence and a lock each answer unavailable (503), never internal or an HTML page",
    async () => {
      const bed = await cluster({ nodes: 1 });
      const [node] = bed.nodes;
      const key = await bed.apiKey("acme");
      const token = testToken({ user: "u1", subChannels: ["*"] });
      const { client } = await Client.connect(`${node!.wsUrl}?token=${token}`);
      clients.push(client);
      await bed.redis!.kill();
      await readiness(bed.nodes, 503, 3000);

      // All four gathered first, so a failure shows each answer.
      const upgrade = await handshake(`${node!.wsUrl}?token=${token}`);
      const upgradeType = upgrade.headers.get("content-type") ?? "";
      const upgradeBody = upgradeType.startsWith("application/json") ? ((await upgrade.json()) as Frame) : { html: (await upgrade.text()).length };
      const room = await client.request({ type: "subscribe", channel: "room:x" });
      const presence = await fetch(`${node!.url}/v1/presence?channel=room:x`, { headers: { authorization: `Bearer ${key}` } });
      const lock = await client.request({ type: "lock", resource: "customer:1" });
      expect({
        upgrade: [upgrade.status, upgradeBody.error?.code ?? upgradeBody],
        roomSubscribe: room.error?.code,
        restPresence: [presence.status, ((await presence.json()) as Frame).error?.code],
        lock: lock.error?.code,
      }).toEqual({ upgrade: [503, "unavailable"], roomSubscribe: "unavailable", restPresence: [503, "unavailable"], lock: "unavailable" });
    },
    20_000,
  );
});
