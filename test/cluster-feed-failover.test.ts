import { afterEach, describe, expect } from "bun:test";
import { testsNeedingAll } from "./support/required.ts";
import { SQL } from "bun";
import { MongoClient } from "mongodb";
import { testToken } from "./helpers.ts";
import { startCluster, type Cluster, type ClusterNode } from "./support/cluster.ts";
import { emulatorTests, feedEnv, waitFor } from "./support/feeds.ts";
import { Follower, type Position } from "./support/follower.ts";
import { startEmulator, type Emulator } from "./support/mongo-emulator.ts";
import { postgresTests } from "./support/postgres.ts";
import { redisTests } from "./support/redis.ts";

// The feed leader SIGKILLed during a stream of MongoDB changes, over real processes: the
// three-node bed (test/support/cluster.ts) on one mongo-java-server. The leader is found by its
// own /metrics; followers (test/support/follower.ts) on the two other nodes follow the feed's
// channel as an SDK would, each on its node's own address (which stays up).

const test = testsNeedingAll(emulatorTests(), redisTests(), postgresTests());

/** The feeds' lease TTL on every node (FEED_LEASE_TTL_MS): short, so the takeover comes soon. */
const LEASE_TTL_MS = 3_000;
const FEED = { name: "signals", collection: "signals", channel: "strategy:{roulette_id}", tenant: "acme", event: "strategy_update" };
const CHANNEL = "strategy:r1";
/** One change every this many ms, for as long as the test runs the writer. */
const PACE_MS = 40;

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** This node's `/metrics` value of `series` (e.g. `sinal_feed_leader{feed="signals"}`), or undefined. */
async function metricOf(node: ClusterNode, series: string): Promise<number | undefined> {
  const text = await (await fetch(`${node.url}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

const isLeader = async (node: ClusterNode) => (await metricOf(node, `sinal_feed_leader{feed="${FEED.name}"}`)) === 1;
const isReady = async (node: ClusterNode) => (await fetch(`${node.url}/ready`)).status === 200;
const seqOf = (data: unknown) => (data as { seq: number }).seq;
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** What one follower got: seqs in order, where each sat, and what it was told. */
interface Walk {
  seqs: number[];
  /** seq -> "epoch:offset" of the `pub` that carried it. */
  at: Map<number, string>;
  /** Frames out of line: a `pub` not right after the position held, a seq not above the last. */
  violations: string[];
  closes: number[];
  /** Reasons of `recovered:false` replies to a subscribe with `since`. */
  notRecovered: string[];
  /** Positions told missed by a `recovered:false`: in `epoch`, the offsets up to `upTo`, and the reply's snapshot. */
  forfeited: { epoch: string; upTo: number; snapshot: unknown }[];
}

/**
 * Walks a follower's events. A `pub` must be the next offset of the position held, or offset 1 of
 * another epoch (the channel was reset: docs/protocol.md, a live subscriber sees the new epoch on
 * the next publication); a `recovered:false` moves the position to its reply's.
 */
function walk(follower: Follower): Walk {
  const w: Walk = { seqs: [], at: new Map(), violations: [], closes: [], notRecovered: [], forfeited: [] };
  let held: Position | null = null;
  for (const event of follower.events) {
    if (event.type === "closed") w.closes.push(event.code);
    if (event.type === "subscribed") {
      if (event.since !== undefined && event.recovered && event.epoch !== event.since.epoch) w.violations.push(`recovered:true across epochs ${JSON.stringify(event)}`);
      if (event.since === undefined || !event.recovered) held = { epoch: event.epoch, offset: event.offset };
      if (event.since !== undefined && !event.recovered) {
        w.notRecovered.push(event.reason ?? "(no reason)");
        w.forfeited.push({ epoch: event.epoch, upTo: event.offset, snapshot: event.snapshot });
      }
    }
    if (event.type !== "pub") continue;
    const seq = seqOf(event.data);
    const where = `${event.epoch}:${event.offset}`;
    const next = held !== null && (event.epoch === held.epoch ? event.offset === held.offset + 1 : event.offset === 1);
    if (!next) w.violations.push(`seq ${seq} at ${where} after ${held === null ? "nothing" : `${held.epoch}:${held.offset}`}`);
    const last = w.seqs.at(-1) ?? 0;
    if (seq <= last) w.violations.push(`seq ${seq} after seq ${last}`);
    w.seqs.push(seq);
    w.at.set(seq, where);
    held = { epoch: event.epoch, offset: event.offset };
  }
  return w;
}

describe("the feed leader SIGKILLed", () => {
  test(
    "during a stream of changes: another node leads within the lease TTL and a poll, and re-reads the changes after the last saved position without publishing one twice; the channel keeps its epoch, and every subscriber on the survivors gets every change once, in order, under consecutive offsets, without being closed",
    async () => {
      const emulator: Emulator = await startEmulator();
      cleanups.push(() => emulator.stop());
      const mongo = new MongoClient(emulator.uri());
      cleanups.push(() => mongo.close());
      const env = feedEnv(emulator.uri("&serverSelectionTimeoutMS=1000"), [FEED], { HISTORY_STRATEGY: "1000,10m", FEED_LEASE_TTL_MS: String(LEASE_TTL_MS) });
      const bed: Cluster = await startCluster({ nodes: 3, env });
      cleanups.push(() => bed.stop());
      const sql = new SQL(bed.databaseUrl, { max: 1 });
      cleanups.push(() => sql.close());

      // One leader, and every node ready (the leader streaming, the others knowing they follow).
      const leaders = async () => (await Promise.all(bed.nodes.map(isLeader))).flatMap((leads, i) => (leads ? [i] : []));
      const [leader] = await waitFor("one feed leader and every node ready", async () => {
        const found = await leaders();
        return found.length === 1 && (await Promise.all(bed.nodes.map(isReady))).every(Boolean) && found;
      });
      const killed = bed.nodes[leader!]!;
      const survivors = bed.nodes.filter((node) => node !== killed);

      const followers = await Promise.all(
        survivors.map(async (node, n) => {
          const token = testToken({ user: `s${n}`, subChannels: ["strategy:*"] });
          const follower = new Follower({ url: () => `${node.wsUrl}?token=${token}`, channel: CHANNEL });
          cleanups.push(() => follower.stop());
          await follower.start();
          return follower;
        }),
      );
      const gotSeq = (seq: number) => followers.every((f) => f.events.some((e) => e.type === "pub" && seqOf(e.data) >= seq));

      // One change every PACE_MS, one at a time (the stream's order is the order of `seq`), until told to stop.
      const collection = mongo.db("runcash").collection(FEED.collection);
      let inserted = 0;
      let stopAt = 2_000; // a cap; set to the real end after the takeover
      const writer = (async () => {
        while (inserted < stopAt) {
          await collection.insertOne({ roulette_id: "r1", seq: ++inserted });
          await Bun.sleep(PACE_MS);
        }
      })();
      cleanups.push(async () => {
        stopAt = 0;
        await writer.catch(() => undefined);
      });

      // The leader saves its position right after each change it publishes, so a SIGKILL seldom
      // falls between a publication and its save: the new leader would re-read nothing, and
      // nothing would test that a re-read change is not published again. The position is put
      // back to an earlier one after the kill, as if the dead leader's last saves had been lost.
      await waitFor("the followers got change 10", () => gotSeq(10));
      const insertedAtEarlier = inserted;
      const [earlier] = await sql`SELECT token FROM feed_positions WHERE feed = ${FEED.name}`;
      expect(earlier?.token).toBeString();
      // At least 25 changes published after the earlier position (it covers no more than was inserted when read).
      await waitFor("the followers got 25 more changes", () => gotSeq(insertedAtEarlier + 25));

      bed.balancer.setUp(killed.index, false);
      expect(await killed.kill("SIGKILL")).toEqual({ code: null, signal: "SIGKILL" });
      const killedAt = performance.now();
      bed.balancer.dropConnections(killed.index);
      const insertedAtKill = inserted;
      const rolledBack = await sql`UPDATE feed_positions SET token = ${earlier!.token} WHERE feed = ${FEED.name} RETURNING feed`;
      expect(rolledBack).toHaveLength(1);

      // Changes keep coming; a survivor takes the lease once it expires (no release: the leader died).
      const successor = await waitFor(
        "a survivor leading the feed",
        async () => {
          const leading = (await Promise.all(survivors.map(isLeader))).flatMap((leads, i) => (leads ? [survivors[i]!] : []));
          return leading.length > 0 && leading;
        },
        LEASE_TTL_MS + LEASE_TTL_MS / 4 + 5_000,
      );
      const tookOver = performance.now() - killedAt;
      const heir = followers[survivors.indexOf(successor[0]!)]!;
      const lastOfOldTerm = Math.max(...heir.events.flatMap((e) => (e.type === "pub" ? [seqOf(e.data)] : [])));
      await waitFor("the new leader's first publication", () => heir.events.some((e) => e.type === "pub" && seqOf(e.data) > lastOfOldTerm), 5_000);
      const publishingAfter = performance.now() - killedAt;

      stopAt = inserted + 40;
      await writer;
      const total = inserted;
      await Promise.all(followers.map((f) => f.until((x) => x.events.some((e) => e.type === "pub" && seqOf(e.data) === total), 10_000)));
      // Room for a late duplicate to arrive.
      await Bun.sleep(300);
      for (const follower of followers) follower.stop();

      const walks = followers.map(walk);
      process.stderr.write(
        `feed failover: leader node ${killed.index} killed at change ${insertedAtKill}; node ${successor[0]!.index} led after ${Math.round(tookOver)} ms, published after ${Math.round(publishingAfter)} ms; ${total} changes\n`,
      );

      expect(successor).toHaveLength(1);
      // Its lease was renewed at most a third of the TTL before the kill: nobody may lead before
      // two thirds of the TTL; the survivors ask every quarter of it.
      expect(tookOver).toBeGreaterThan((2 * LEASE_TTL_MS) / 3 - 100);
      expect(tookOver).toBeLessThan(LEASE_TTL_MS + LEASE_TTL_MS / 4 + 1_000);
      expect(publishingAfter).toBeLessThan(LEASE_TTL_MS + LEASE_TTL_MS / 4 + 2_000);
      expect(walks.flatMap((w) => w.violations)).toEqual([]);

      // Each change once: one position per change, in the channel's one epoch (a handover keeps it),
      // offsets 1..total, nothing twice (a change at two positions would sit at only one in this map).
      const positions = new Map<number, string>();
      const twice: string[] = [];
      for (const w of walks) {
        for (const [seq, where] of w.at) {
          if (positions.has(seq) && positions.get(seq) !== where) twice.push(`seq ${seq} at ${positions.get(seq)} and ${where}`);
          positions.set(seq, where);
        }
      }
      expect(twice).toEqual([]);
      const epoch = positions.get(1)?.split(":")[0];
      expect(lastOfOldTerm).toBeGreaterThanOrEqual(insertedAtEarlier + 25);
      expect(range(1, total).map((seq) => positions.get(seq))).toEqual(range(1, total).map((seq) => `${epoch}:${seq}`));

      // Both survivors' subscribers got every change, once, in order, and were never closed.
      for (const w of walks) expect({ seqs: w.seqs, closes: w.closes, notRecovered: w.notRecovered }).toEqual({ seqs: range(1, total), closes: [], notRecovered: [] });

      // The new leader resumed from the earlier position: it read the changes after it again
      // (counted by sinal_feed_events_total) and published none of them twice.
      const applied = await metricOf(successor[0]!, `sinal_feed_events_total{feed="${FEED.name}",op="insert"}`);
      const reread = applied! - (total - lastOfOldTerm);
      expect(reread).toBeGreaterThanOrEqual(lastOfOldTerm - insertedAtEarlier);
      // No node saw the channel lose anything.
      expect(survivors.flatMap((node) => node.child.logs.filter((line) => line.code === "publications_lost").map(() => node.index))).toEqual([]);
      process.stderr.write(`feed failover: ${reread} changes re-read by the new leader and dropped\n`);
    },
    40_000,
  );
});
