import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { heapStats } from "bun:jsc";
import { Client, post, startServer, type Frame, type TestServer } from "./helpers.ts";
import { RawClient } from "./support/raw-client.ts";

// What a hostile client broke (issue 10: replays, channel names, offset order, lock quota), each
// checked the way a user would see it, over real sockets against a real server in this process
// (so the process's RSS is the server's memory).

function rssMb(): number {
  Bun.gc(true);
  return process.memoryUsage().rss / 1024 / 1024;
}

/** The JavaScript heap after a full collection: what the server keeps, without the allocator's slack. */
function heapMb(): number {
  Bun.gc(true);
  return heapStats().heapSize / 1024 / 1024;
}

async function inParallel<T>(count: number, width: number, task: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array(count);
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < count) {
        const i = next++;
        out[i] = await task(i);
      }
    }),
  );
  return out;
}

describe("replays stay within the connection's bound", () => {
  let server: TestServer;
  let key: string;
  const content = "m".repeat(15_990);
  beforeAll(async () => {
    server = await startServer({ LOG_LEVEL: "info", HISTORY_ROOM: "5000,24h" });
    key = await server.apiKey("acme");
    // A room of 1,000 messages of 16 KB: a full replay is ~16 MB, 16 times SLOW_CONSUMER_BYTES (1 MiB).
    await inParallel(1300, 16, async (i) => {
      const room = i < 1000 ? "big" : "big2";
      const res = await post(server, `/v1/rooms/${room}/messages`, { sender: "filler", content: `${i} ${content}` }, key);
      expect(res.status).toBe(200);
    });
  });
  afterAll(() => server.stop());

  test("a socket that never reads and asks for the same 16 MB replay 60 times costs the server a bounded amount of memory", async () => {
    const reader = await Client.open(server, { user: "probe", subChannels: ["room:*"] });
    const { epoch } = await reader.request({ type: "subscribe", channel: "room:big" });
    reader.close();
    const raw = await RawClient.open(server, await server.token({ user: "hostile", subChannels: ["room:*"] }));
    raw.stopReading();
    const before = rssMb();
    for (let i = 1; i <= 60; i++) raw.send({ type: "subscribe", id: i, channel: "room:big", since: { epoch, offset: 0 } });
    // The frames are read at once; the replays they ask for would be queued within this time.
    await Bun.sleep(1500);
    const grown = rssMb() - before;
    if (process.env.SHOW_MEMORY) process.stderr.write(`replays: RSS grew ${grown.toFixed(1)} MB\n`);
    // Before the fix this was ~900 MB (60 replays of ~15 MB each, never counted toward 4009).
    expect(grown).toBeLessThan(64);
    raw.destroy();
  });

  test("a client that reads gets the whole 16 MB replay, in order, page by page, then live messages", async () => {
    const reader = await Client.open(server, { user: "probe2", subChannels: ["room:*"] });
    const { epoch } = await reader.request({ type: "subscribe", channel: "room:big" });
    reader.close();
    const again = await Client.open(server, { user: "comeback", subChannels: ["room:*"] });
    const reply = await again.request({ type: "subscribe", channel: "room:big", since: { epoch, offset: 0 } });
    expect(reply).toMatchObject({ recovered: true });
    const live = post(server, "/v1/rooms/big/messages", { sender: "filler", content: "live" }, key);
    const offsets: number[] = [];
    let liveMessage: Frame | null = null;
    while (liveMessage === null) {
      const f = await again.next(5000);
      // Joins are ephemeral (no offset): only the room's publications count here.
      if (f.type !== "pub" || f.offset === undefined) continue;
      offsets.push(f.offset);
      if (f.data.content === "live") liveMessage = f;
    }
    expect((await live).status).toBe(200);
    // Every offset once, in order: the replay (1 .. reply offset), then the live message after it.
    expect(offsets).toEqual(Array.from({ length: reply.offset + 1 }, (_, i) => i + 1));
    again.close();
  });

  test("two big recoveries asked for at once on one connection both arrive whole, each in order", async () => {
    const probe = await Client.open(server, { user: "probe3", subChannels: ["room:*"] });
    const epochs: string[] = [];
    for (const [i, room] of ["big", "big2"].entries()) {
      probe.send({ type: "subscribe", id: i, channel: `room:${room}` });
      let reply: Frame;
      do reply = await probe.next();
      while (reply.type !== "reply");
      epochs.push(reply.epoch);
    }
    probe.close();
    const c = await Client.open(server, { user: "both", subChannels: ["room:*"] });
    c.send({ type: "subscribe", id: 1, channel: "room:big", since: { epoch: epochs[0], offset: 0 } });
    c.send({ type: "subscribe", id: 2, channel: "room:big2", since: { epoch: epochs[1], offset: 0 } });
    const replies = new Map<string, number>();
    const offsets = new Map<string, number[]>([["room:big", []], ["room:big2", []]]);
    const done = () => replies.size === 2 && [...replies].every(([channel, offset]) => offsets.get(channel)!.includes(offset));
    while (!done()) {
      const f = await c.next(5000);
      if (f.type === "reply") {
        expect(f.recovered).toBe(true);
        replies.set(f.channel, f.offset);
      } else if (f.type === "pub" && f.offset !== undefined) offsets.get(f.channel)!.push(f.offset);
    }
    for (const [channel, got] of offsets) {
      const upTo = replies.get(channel)!;
      expect(got.filter((o) => o <= upTo)).toEqual(Array.from({ length: upTo }, (_, i) => i + 1));
    }
    c.close();
  });
});

describe("channel state", () => {
  let server: TestServer;
  let key: string;
  beforeAll(async () => {
    server = await startServer({ LOG_LEVEL: "info", MAX_CHANNELS_PER_TENANT: "1000", MAX_CHANNELS: "3000" });
    key = await server.apiKey("acme");
  });
  afterAll(() => server.stop());

  test("publishing to 200,000 distinct channel names keeps at most MAX_CHANNELS_PER_TENANT of them, evicts the least recently used and counts it", async () => {
    const otherKey = await server.apiKey("other");
    const kept = await (await post(server, "/v1/publish", { channel: "dept:kept", event: "e", data: 1 }, otherKey)).json();
    const first = await (await post(server, "/v1/publish", { channel: "dept:first", event: "e", data: 1 }, key)).json();
    const before = heapMb();
    await inParallel(200, 4, async (batch) => {
      const items = Array.from({ length: 1000 }, (_, i) => ({ channel: `dept:r${batch}-${i}`, event: "e", data: { n: i } }));
      expect((await post(server, "/v1/publish", items, key)).status).toBe(200);
    });
    const grown = heapMb() - before;
    const metrics = await (await fetch(`${server.http}/metrics`)).text();
    const evicted = Number(/^sinal_channels_evicted_total (\d+)/m.exec(metrics)?.[1]);
    expect(evicted).toBe(200_001 - 1000);
    // Before the fix every one of them stayed for an hour (~1 KB each: ~200 MB here); now the
    // 1,000 kept cost ~1.5 MB.
    if (process.env.SHOW_MEMORY) process.stderr.write(`channels: heap grew ${grown.toFixed(1)} MB\n`);
    expect(grown).toBeLessThan(24);
    const c = await Client.open(server, { user: "watcher", subChannels: ["dept:*"] });
    // The evicted channel starts again under a new epoch, and says so to a client coming back.
    expect(await c.request({ type: "subscribe", channel: "dept:first", since: first })).toMatchObject({ recovered: false, reason: "epoch_changed" });
    c.close();
    // Another tenant's channel was not evicted by this one's names.
    const o = await Client.open(server, { tenant: "other", user: "watcher", subChannels: ["dept:*"] });
    expect(await o.request({ type: "subscribe", channel: "dept:kept", since: kept })).toMatchObject({ recovered: true, offset: 1 });
    o.close();
  });
});

describe("offset order", () => {
  let server: TestServer;
  let key: string;
  beforeAll(async () => {
    server = await startServer({ LOG_LEVEL: "info", RATE_LIMIT_BURST: "1000", RATE_LIMIT_PER_SEC: "1000" });
    key = await server.apiKey("acme");
  });
  afterAll(() => server.stop());

  test("with publishers of every kind racing for 3 s, every subscriber sees each channel's offsets strictly increasing, none missing", async () => {
    const grants = { subChannels: ["room:*", "dept:*", "sync:*"], pubChannels: ["dept:*", "room:*"] };
    const channels = ["room:o", "dept:o", "sync:doc"];
    const subscribers = await Promise.all([1, 2, 3].map((n) => Client.open(server, { user: `s${n}`, ...grants })));
    const seen = subscribers.map(() => new Map<string, number[]>());
    subscribers.forEach((s, i) => {
      const previous = s.socket.onmessage!;
      s.socket.onmessage = (event) => {
        const f = JSON.parse(String(event.data)) as Frame;
        if (f.type === "pub" && f.offset !== undefined) {
          const list = seen[i]!.get(f.channel) ?? [];
          list.push(f.offset);
          seen[i]!.set(f.channel, list);
        }
        previous.call(s.socket, event);
      };
    });
    // Where each subscriber's stream of each channel starts: its subscribe reply's offset.
    const startAt = subscribers.map(() => new Map<string, number>());
    for (const [n, s] of subscribers.entries()) {
      for (const [i, channel] of channels.entries()) s.send({ type: "subscribe", id: i, channel });
      for (let replies = 0; replies < channels.length; ) {
        const f = await s.next();
        if (f.type !== "reply") continue;
        startAt[n]!.set(f.channel, f.offset);
        replies++;
      }
    }
    const actors = await Promise.all([1, 2, 3, 4].map((n) => Client.open(server, { user: `a${n}`, ...grants })));
    const until = Date.now() + 3000;
    const running = () => Date.now() < until;
    let sent = 0;
    const loops: Promise<void>[] = [
      // REST publications, single and batched, with and without idempotency keys, on a room and a dept.
      (async () => {
        for (let i = 0; running(); i++) {
          const items = [0, 1, 2].map((j) => ({ channel: j === 1 ? "dept:o" : "room:o", event: "rest", data: { i, j }, ...(i % 2 ? { idempotency_key: `k${i}-${j}` } : {}) }));
          await post(server, "/v1/publish", i % 3 ? items : items[0], key);
          sent++;
        }
      })(),
      // Chat messages over REST and over WebSocket frames (the same group commits as the rest).
      (async () => {
        for (let i = 0; running(); i++) await post(server, "/v1/rooms/o/messages", { sender: "rest", content: `r${i}` }, key);
      })(),
      ...actors.slice(0, 2).map(async (a, n) => {
        for (let i = 0; running(); i++) {
          a.send({ type: "message", room: "o", content: `w${n}-${i}` });
          a.send({ type: "publish", channel: "dept:o", event: "ws", data: { n, i } });
          await Bun.sleep(1);
        }
      }),
      // Joins and leaves of the room (user_joined / user_left), read receipts and edit locks.
      (async () => {
        const a = actors[2]!;
        for (let i = 0; running(); i++) {
          a.send({ type: "subscribe", channel: "room:o" });
          a.send({ type: "read", room: "o", message_id: i + 1 });
          a.send({ type: "lock", resource: `doc:${i % 5}` });
          a.send({ type: "unlock", resource: `doc:${i % 5}` });
          a.send({ type: "unsubscribe", channel: "room:o" });
          await Bun.sleep(2);
        }
      })(),
      // Room announcements and notifications to the channel.
      (async () => {
        for (let i = 0; running(); i++) {
          await fetch(`${server.http}/v1/rooms/o`, { method: "PUT", headers: { authorization: `Bearer ${key}`, "content-type": "application/json" }, body: JSON.stringify({ meta: { i } }) });
          await post(server, "/v1/notifications", { channel: "room:o", category: "c", title: "t", message: `${i}` }, key);
        }
      })(),
    ];
    await Promise.all(loops);
    // Let the last fan-outs land: a final publication on each channel marks the end.
    const ends = await Promise.all(channels.map(async (channel) => ((await (await post(server, "/v1/publish", { channel, event: "end", data: null }, key)).json()) as { offset: number }).offset));
    for (const s of subscribers) {
      for (const [i, channel] of channels.entries()) {
        while (!(seen[subscribers.indexOf(s)]!.get(channel) ?? []).includes(ends[i]!)) await s.next(5000).catch(() => undefined);
      }
    }
    expect(sent).toBeGreaterThan(10);
    for (const [i, channel] of channels.entries()) {
      for (const [n, mine] of seen.entries()) {
        const from = startAt[n]!.get(channel)! + 1;
        // Strictly increasing and gap-free: from after the subscribe reply to the last, each once.
        expect(mine.get(channel)!.filter((o) => o >= from)).toEqual(Array.from({ length: ends[i]! - from + 1 }, (_, k) => from + k));
        expect(mine.get(channel)!.filter((o) => o < from)).toEqual([]);
      }
    }
    for (const c of [...subscribers, ...actors]) c.close();
  }, 20_000);
});

describe("lock quota", () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startServer({ LOG_LEVEL: "info", MAX_LOCKS_PER_USER: "3" });
  });
  afterAll(() => server.stop());

  test("a user holds at most MAX_LOCKS_PER_USER locks across its connections; renewing one passes, and releasing one frees a place", async () => {
    const grants = { user: "editor", subChannels: ["sync:*"] };
    const tab1 = await Client.open(server, grants);
    const tab2 = await Client.open(server, grants);
    for (const r of ["doc:1", "doc:2"]) expect(await tab1.request({ type: "lock", resource: r })).toMatchObject({ ok: true });
    expect(await tab2.request({ type: "lock", resource: "doc:3" })).toMatchObject({ ok: true });
    const refused = await tab2.request({ type: "lock", resource: "doc:4" });
    expect(refused).toMatchObject({ ok: false, error: { code: "quota_exceeded" } });
    expect(await tab1.request({ type: "lock", resource: "doc:1" })).toMatchObject({ ok: true, renewed: true });
    expect(await tab1.request({ type: "unlock", resource: "doc:2" })).toMatchObject({ ok: true, released: true });
    expect(await tab2.request({ type: "lock", resource: "doc:4" })).toMatchObject({ ok: true });
    // Another user is not affected by this one's quota.
    const other = await Client.open(server, { user: "other", subChannels: ["sync:*"] });
    expect(await other.request({ type: "lock", resource: "doc:9" })).toMatchObject({ ok: true });
    for (const c of [tab1, tab2, other]) c.close();
  });
});
