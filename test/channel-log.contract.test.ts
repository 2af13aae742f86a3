import { Database } from "bun:sqlite";
import { afterEach, describe, expect, test } from "bun:test";
import { SQL } from "bun";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DurableHistory } from "../src/history/durable-history.ts";
import { initialEpoch, type Position, type Retention } from "../src/history/history.ts";
import type { StoredMessage } from "../src/store/chat-store.ts";
import { openPgStore } from "../src/store/pg-store.ts";
import { openSqliteStore } from "../src/store/sqlite-store.ts";
import type { Store } from "../src/store/store.ts";
import { postgresTests, startDatabase } from "./support/postgres.ts";

// The durable history's own guarantees (src/store/channel-log-store.ts, src/history/durable-history.ts)
// over both stores, with what only a shared database has: two nodes (two store instances on one
// database) writing one channel, offsets assigned by the store, failures inside the transaction.
// The guarantees every history keeps are in history.contract.test.ts.

const KEEP: Retention = { size: 100, ttlMs: 3_600_000 };
const NO_DELIVER = () => undefined;
const frameOf = (topic: string, n: number | string) => (p: Position) => JSON.stringify({ type: "pub", channel: topic, data: n, offset: p.offset, epoch: p.epoch });

/** One database, as several nodes (or one node across restarts) see it. */
interface Storage {
  /** A store on the database: a node, or the same node after a restart. */
  open(): Promise<Store>;
  /** From now on every commit fails inside its transaction, as a full disk would; `false` ends it. */
  failCommits(on: boolean): Promise<void>;
  done(): Promise<void>;
}

// A trigger on the positions table: each commit's offsets come from it, so the failure lands
// inside the transaction, after the messages were written.
const SQLITE_FAULT = [
  "CREATE TABLE fail_next (reason TEXT NOT NULL)",
  "CREATE TRIGGER positions_fail_insert BEFORE INSERT ON channel_positions WHEN EXISTS (SELECT 1 FROM fail_next) BEGIN SELECT RAISE(ABORT, 'disk full'); END",
  "CREATE TRIGGER positions_fail_update BEFORE UPDATE ON channel_positions WHEN EXISTS (SELECT 1 FROM fail_next) BEGIN SELECT RAISE(ABORT, 'disk full'); END",
];
const PG_FAULT = [
  "CREATE TABLE fail_next (reason text NOT NULL)",
  `CREATE FUNCTION fail_if_asked() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF EXISTS (SELECT 1 FROM fail_next) THEN RAISE EXCEPTION 'disk full'; END IF;
      RETURN NEW;
    END $$`,
  "CREATE TRIGGER positions_fail BEFORE INSERT OR UPDATE ON channel_positions FOR EACH ROW EXECUTE FUNCTION fail_if_asked()",
];

const pgTests = postgresTests();

const storages: Record<string, { make: () => Promise<Storage>; test: typeof test }> = {
  sqlite: {
    test,
    async make() {
      const dir = mkdtempSync(join(tmpdir(), "sinal-channel-log-"));
      const file = join(dir, "sinal.db");
      const stores: Store[] = [];
      // Migrated by the first open; the fault table is added beside the store's own.
      stores.push(openSqliteStore(file));
      const admin = new Database(file);
      for (const statement of SQLITE_FAULT) admin.run(statement);
      return {
        async open() {
          const store = openSqliteStore(file);
          stores.push(store);
          return store;
        },
        async failCommits(on) {
          admin.run(on ? "INSERT INTO fail_next VALUES ('on')" : "DELETE FROM fail_next");
        },
        async done() {
          for (const store of stores) await store.close().catch(() => undefined);
          admin.close();
          rmSync(dir, { recursive: true, force: true });
        },
      };
    },
  },
  postgres: {
    test: pgTests.test,
    async make() {
      // A fresh database on the process's throwaway PostgreSQL, dropped when done.
      const database = await startDatabase();
      const url = database.url;
      const stores: Store[] = [await openPgStore(url)];
      const admin = new SQL(url);
      for (const statement of PG_FAULT) await admin.unsafe(statement);
      return {
        async open() {
          const store = await openPgStore(url);
          stores.push(store);
          return store;
        },
        async failCommits(on) {
          await admin.unsafe(on ? "INSERT INTO fail_next VALUES ('on')" : "DELETE FROM fail_next");
        },
        async done() {
          for (const store of stores) await store.close().catch(() => undefined);
          await admin.close();
          await database.stop();
        },
      };
    },
  },
};

async function appendN(h: DurableHistory, topic: string, n: number, retention = KEEP, label = ""): Promise<Position[]> {
  // All issued before any settles: offsets must follow call order even when commits are batched.
  return (await Promise.all(Array.from({ length: n }, (_, i) => h.append(topic, frameOf(topic, `${label}${i + 1}`), retention, NO_DELIVER)))).map((r) => r.position);
}

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** The message of a rejection and of its causes (drizzle wraps the database's error). */
async function failure(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    const parts: string[] = [];
    for (let e: unknown = err; e instanceof Error; e = e.cause) parts.push(e.message);
    return parts.join(" / ");
  }
  return "no failure";
}

for (const [name, { make, test }] of Object.entries(storages)) {
  describe(`durable history on ${name}`, () => {
    let storage: Storage | undefined;
    afterEach(async () => {
      await storage?.done();
      storage = undefined;
    });

    test("two nodes on one database publishing to one channel at once: offsets 1..N, none twice, none missing, each node's in order", async () => {
      storage = await make();
      const nodes = [new DurableHistory((await storage.open()).channelLog, 1, KEEP), new DurableHistory((await storage.open()).channelLog, 1, KEEP)];
      const delivered: number[][] = [[], []];
      const appends: Promise<{ position: Position }>[] = [];
      // Interleaved in small waves, so the two nodes' group commits overlap.
      for (let wave = 0; wave < 10; wave++) {
        for (let i = 0; i < 20; i++) {
          const n = (wave + i) % 2;
          appends.push(nodes[n]!.append("acme/room:busy", frameOf("acme/room:busy", `${n}:${wave}:${i}`), KEEP, (p) => delivered[n]!.push(p.offset)));
        }
        await Bun.sleep(1);
      }
      const positions = (await Promise.all(appends)).map((r) => r.position);
      expect(positions.map((p) => p.offset).sort((a, b) => a - b)).toEqual(range(1, 200));
      expect(new Set(positions.map((p) => p.epoch))).toEqual(new Set([initialEpoch("acme/room:busy")]));
      for (const offsets of delivered) expect(offsets).toEqual([...offsets].sort((a, b) => a - b));
      expect(delivered[0]!.length + delivered[1]!.length).toBe(200);
      // The log holds each publication at the offset its node was told.
      const reader = await storage.open();
      const kept = await reader.channelLog.readFrom("acme/room:busy", 0, 200, 0, Infinity);
      expect(kept.map((k) => k.offset)).toEqual(range(1, 200));
      for (const k of kept) expect(JSON.parse(k.frame).offset).toBe(k.offset);
      expect(await reader.channelLog.position("acme/room:busy")).toEqual({ epoch: initialEpoch("acme/room:busy"), offset: 200 });
    });

    test("a channel nobody published to yet names, on every node, the epoch its first publication gets", async () => {
      storage = await make();
      const a = new DurableHistory((await storage.open()).channelLog, 0, KEEP);
      const b = new DurableHistory((await storage.open()).channelLog, 0, KEEP);
      const before = await a.position("acme/room:new");
      expect(before).toEqual({ epoch: initialEpoch("acme/room:new"), offset: 0 });
      const [first] = await appendN(b, "acme/room:new", 1);
      expect(first).toEqual({ epoch: before.epoch, offset: 1 });
      // A client that subscribed before it (since = before) recovers it from either node.
      const recovery = await new DurableHistory((await storage.open()).channelLog, 0, KEEP).recover("acme/room:new", before, KEEP, Infinity);
      expect(recovery).toMatchObject({ recovered: true, position: first });
      expect(recovery.publications.map((f) => JSON.parse(f).data)).toEqual(["1"]);
    });

    test("a position a subscribe reads never names an offset its node has not delivered yet, also when read from the store", async () => {
      storage = await make();
      // maxTopics 1 with two topics: positions keep being forgotten and read from the store while commits run.
      const h = new DurableHistory((await storage.open()).channelLog, 1, KEEP, 1);
      const delivered = new Map<string, number>([
        ["acme/room:a", 0],
        ["acme/room:b", 0],
      ]);
      const ahead: string[] = [];
      let reads = 0;
      let publishing = true;
      const readers = [...delivered.keys()].map(async (topic) => {
        while (publishing) {
          const p = await h.position(topic);
          reads++;
          if (p.offset > delivered.get(topic)!) ahead.push(`${topic}: told ${p.offset}, delivered ${delivered.get(topic)}`);
          await Bun.sleep(0);
        }
      });
      const appends: Promise<unknown>[] = [];
      for (let i = 0; i < 300; i++) {
        const topic = i % 2 === 0 ? "acme/room:a" : "acme/room:b";
        appends.push(h.append(topic, frameOf(topic, i), KEEP, (p) => delivered.set(topic, p.offset)));
        if (i % 10 === 0) await Bun.sleep(1);
      }
      await Promise.all(appends);
      publishing = false;
      await Promise.all(readers);
      expect(ahead).toEqual([]);
      expect(reads).toBeGreaterThan(20);
      expect(await h.position("acme/room:a")).toMatchObject({ offset: 150 });
    });

    test("a commit failing inside its transaction stores nothing (publication, position, key, message) and uses up no offset", async () => {
      storage = await make();
      const store = await storage.open();
      const h = new DurableHistory(store.channelLog, 0, KEEP);
      const [p] = await appendN(h, "acme/room:f", 1);
      await storage.failCommits(true);
      expect(await failure(h.append("acme/room:f", frameOf("acme/room:f", "lost"), KEEP, NO_DELIVER, { tenant: "acme", key: "k-failed" }))).toContain("disk full");
      const message = { tenant: "acme", room: "f", sender: "u1", content: "lost too", clientMsgId: "c-lost", createdAt: Date.now() };
      expect(await failure(h.appendMessage("acme/room:f", message, (q) => frameOf("acme/room:f", "m")(q), NO_DELIVER))).toContain("disk full");
      await storage.failCommits(false);
      expect(await store.channelLog.readFrom("acme/room:f", 0, 10, 0, Infinity)).toHaveLength(1);
      expect(await store.channelLog.position("acme/room:f")).toEqual(p!);
      expect(await store.getIdempotent("acme", ["k-failed"])).toEqual(new Map());
      expect(await store.chat.listMessages("acme", "f", null, 10)).toEqual([]);
      const { position } = await h.append("acme/room:f", frameOf("acme/room:f", "next"), KEEP, NO_DELIVER, { tenant: "acme", key: "k-ok" });
      expect(position).toEqual({ epoch: p!.epoch, offset: 2 });
      expect(await h.position("acme/room:f")).toEqual(position);
      expect((await store.channelLog.readFrom("acme/room:f", 0, 10, 0, Infinity)).map((r) => JSON.parse(r.frame).data)).toEqual(["1", "next"]);
      expect(await store.getIdempotent("acme", ["k-ok"])).toEqual(new Map([["k-ok", JSON.stringify({ offset: 2, epoch: p!.epoch })]]));
      // The message a failed commit carried is not a duplicate: its retry is stored and published.
      expect(await h.appendMessage("acme/room:f", message, (q) => frameOf("acme/room:f", "m")(q), NO_DELIVER)).toMatchObject({ duplicate: false, position: { offset: 3 } });
    });

    test("an idempotency key is stored with its publication; the same key from two nodes at once keeps the first answer", async () => {
      storage = await make();
      const a = await storage.open();
      const b = await storage.open();
      const ha = new DurableHistory(a.channelLog, 1, KEEP);
      const hb = new DurableHistory(b.channelLog, 1, KEEP);
      const key = { tenant: "acme", key: "k1" };
      const [first, second] = await Promise.all([ha.append("acme/room:k", frameOf("acme/room:k", 1), KEEP, NO_DELIVER, key), hb.append("acme/room:k", frameOf("acme/room:k", 2), KEEP, NO_DELIVER, key)]);
      const answers = [first!.position, second!.position].map((p) => JSON.stringify({ offset: p.offset, epoch: p.epoch }));
      const stored = (await a.getIdempotent("acme", ["k1"])).get("k1");
      // Exactly one answer, one of the two publications' (whichever committed first).
      expect(answers).toContain(stored!);
      expect((await b.getIdempotent("acme", ["k1"])).get("k1")).toBe(stored!);
      expect(JSON.parse(stored!).offset).toBe(1);
    });

    test("a chat message is stored in its publication's commit; the same client_msg_id from two nodes at once is stored and published once", async () => {
      storage = await make();
      const a = await storage.open();
      const b = await storage.open();
      const nodes = [new DurableHistory(a.channelLog, 1, KEEP), new DurableHistory(b.channelLog, 1, KEEP)];
      const build = (p: Position, s: StoredMessage) => JSON.stringify({ offset: p.offset, id: s.id, content: s.content });
      const msg = (content: string, clientMsgId: string | null) => ({ tenant: "acme", room: "r1", sender: "u1", content, clientMsgId, createdAt: Date.now() });
      const published: number[] = [];
      const deliver = (p: Position) => published.push(p.offset);
      const results = await Promise.all([
        nodes[0]!.appendMessage("acme/room:r1", msg("hello", "c1"), build, deliver),
        nodes[1]!.appendMessage("acme/room:r1", msg("hello", "c1"), build, deliver),
        nodes[0]!.appendMessage("acme/room:r1", msg("hello again", "c1"), build, deliver),
        nodes[1]!.appendMessage("acme/room:r1", msg("world", null), build, deliver),
      ]);
      const firsts = results.filter((r) => !r.duplicate);
      const duplicates = results.filter((r) => r.duplicate);
      expect(firsts).toHaveLength(2);
      expect(duplicates).toHaveLength(2);
      const hello = firsts.find((r) => r.message!.content === "hello")!;
      for (const d of duplicates) expect(d.message.id).toBe(hello.message!.id);
      // A duplicate takes no offset: two publications, offsets 1 and 2.
      expect(published.sort()).toEqual([1, 2]);
      expect((await a.chat.listMessages("acme", "r1", null, 10)).map((m) => m.content).sort()).toEqual(["hello", "world"]);
      expect((await b.channelLog.readFrom("acme/room:r1", 0, 10, 0, Infinity)).map((k) => JSON.parse(k.frame).content).sort()).toEqual(["hello", "world"]);
    });

    test("readFrom reads a long range within its byte budget (at least one row), honouring the range and minAt", async () => {
      storage = await make();
      const store = await storage.open();
      const wide: Retention = { size: 1000, ttlMs: 3_600_000 };
      await appendN(new DurableHistory(store.channelLog, 2, wide), "acme/room:long", 250, wide);
      const log = store.channelLog;
      expect((await log.readFrom("acme/room:long", 0, 250, 0, Infinity)).map((r) => r.offset)).toEqual(range(1, 250));
      expect((await log.readFrom("acme/room:long", 120, 240, 0, Infinity)).map((r) => r.offset)).toEqual(range(121, 240));
      expect((await log.readFrom("acme/room:long", 10, 250, 0, 0)).map((r) => r.offset)).toEqual([11]);
      const frame = (await log.readFrom("acme/room:long", 0, 1, 0, Infinity))[0]!.frame.length;
      const budget = 150 * frame + frame - 1;
      const some = await log.readFrom("acme/room:long", 50, 250, 0, budget);
      expect(some.reduce((n, r) => n + r.frame.length, 0)).toBeLessThanOrEqual(budget);
      expect(some.map((r) => r.offset)).toEqual(range(51, 50 + some.length));
      expect(some.length).toBeGreaterThanOrEqual(130);
      expect(await log.readFrom("acme/room:long", 0, 250, Date.now() + 60_000, Infinity)).toEqual([]);
    });

    test("trim deletes from the store what retention no longer keeps, by size and by age; positions stay", async () => {
      storage = await make();
      const store = await storage.open();
      const small: Retention = { size: 5, ttlMs: 3_600_000 };
      const h = new DurableHistory(store.channelLog, 0, small);
      const [p] = await appendN(h, "acme/room:trim", 20, small);
      await appendN(h, "acme/room:other", 3, small);
      h.trim(Date.now());
      await h.close();
      // The trim runs in the background: wait for it through the store (bounded).
      for (let i = 0; i < 100 && (await store.channelLog.readFrom("acme/room:trim", 0, 20, 0, Infinity)).length > 5; i++) await Bun.sleep(10);
      expect((await store.channelLog.readFrom("acme/room:trim", 0, 20, 0, Infinity)).map((r) => r.offset)).toEqual(range(16, 20));
      expect(await store.channelLog.trim(Date.now() + 60_000, [])).toBe(8);
      expect(await store.channelLog.readFrom("acme/room:other", 0, 3, 0, Infinity)).toEqual([]);
      expect(await h.position("acme/room:trim")).toEqual({ epoch: p!.epoch, offset: 20 });
    });

    test("with history off only positions are stored: no publication rows, offsets survive a restart", async () => {
      storage = await make();
      const off: Retention = { size: 0, ttlMs: 0 };
      const store = await storage.open();
      const h = new DurableHistory(store.channelLog, 0, off);
      const [p] = await appendN(h, "acme/room:off", 3, off);
      await h.close();
      await store.close();
      const again = await storage.open();
      expect(await again.channelLog.readFrom("acme/room:off", 0, 3, 0, Infinity)).toEqual([]);
      expect(await new DurableHistory(again.channelLog, 0, off).position("acme/room:off")).toEqual({ epoch: p!.epoch, offset: 3 });
    });

    test("a reset on one node is the channel's new epoch for the next publication on another", async () => {
      storage = await make();
      const a = new DurableHistory((await storage.open()).channelLog, 0, KEEP);
      const b = new DurableHistory((await storage.open()).channelLog, 0, KEEP);
      const [p] = await appendN(a, "acme/room:e", 2);
      const fresh = await a.reset("acme/room:e");
      expect(fresh.epoch).not.toBe(p!.epoch);
      expect((await appendN(b, "acme/room:e", 1))[0]).toEqual({ epoch: fresh.epoch, offset: 1 });
    });
  });
}
