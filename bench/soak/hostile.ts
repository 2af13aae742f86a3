/**
 * The hostile side of the soak (started by bench/soak/run.ts, not by hand). Every attacker is in
 * tenant `evil` (the trickled bodies use a key of tenant `trickle`), never in the normal clients'
 * tenant, and each one is bounded in rate:
 * - replays: `replaySockets` sockets of one user that never read, each asking every
 *   `replayEveryMs` for the whole of a room of `replayMessages` x `replayBytes` (filled before
 *   `go`, bench/hostile/lib.ts `fillRoom`) with `subscribe` + `since`;
 * - flood: `floodSockets` sockets that each send `floodFrames` publish frames in one write (past
 *   the rate limit), wait until the server closes them (or 2 s), and start again at most once a second;
 * - slow readers: `slowReaders` sockets on `dept:busy` that stop reading for `slowStallSec`, then
 *   read for up to 2 s and stall again, while `busyRate` REST publications/s of `busyBytes` go to
 *   that channel; one the server closed comes back after 1 s;
 * - trickled bodies: `tricklers` REST requests announcing 100,000 bytes and sending one a second;
 *   one that is answered or closed starts again after 1 s;
 * - new channels: `channelRate` channels/s never used before, in batches of 1,000 a request;
 * - nesting: every `nestEverySec` a `/v1/publish` body `nestDepth` arrays deep.
 * A socket that stopped reading is watched through /proc/net/tcp and by reading again (`watchPaused`).
 *
 * stdout (JSON lines): `ready` after the set-up, `second` (the counters) every second after `go`,
 * `done` after `stop`.
 */
import type { Socket } from "bun";
import { randomBytes } from "node:crypto";
import { createInterface } from "node:readline";
import { JsonClient } from "../lib/jsonws.ts";
import { fillRoom, tcpTable, userToken } from "../hostile/lib.ts";

interface Config {
  port: number;
  secret: string;
  evilKey: string;
  trickleKey: string;
  replaySockets: number;
  replayEveryMs: number;
  replayMessages: number;
  replayBytes: number;
  floodSockets: number;
  floodFrames: number;
  slowReaders: number;
  slowStallSec: number;
  busyRate: number;
  busyBytes: number;
  tricklers: number;
  channelRate: number;
  nestEverySec: number;
  nestDepth: number;
}
const cfg = JSON.parse(process.argv[2]!) as Config;
const TENANT = "evil";
const out = (line: object) => process.stdout.write(`${JSON.stringify(line)}\n`);
const base = `http://127.0.0.1:${cfg.port}`;
let running = true;

const count = (bag: Record<string, number>, key: string) => void (bag[key] = (bag[key] ?? 0) + 1);
const c = {
  replays_sent: 0,
  replay_closes: {} as Record<string, number>,
  flood_frames: 0,
  flood_rounds: 0,
  flood_closes: {} as Record<string, number>,
  slow_closes: {} as Record<string, number>,
  /** Stalls after which a slow reader read again and was still open. */
  slow_stalls_survived: 0,
  busy_answers: {} as Record<string, number>,
  trickle_open: 0,
  trickle_answers: {} as Record<string, number>,
  /** Longest a trickled request was held before its answer or close. */
  trickle_longest_s: 0,
  /** Age of the oldest trickled request still open. */
  trickle_oldest_open_s: 0,
  channels_accepted: 0,
  channel_answers: {} as Record<string, number>,
  nest_answers: [] as string[],
  connect_failures: 0,
  /** Sockets that were not reading when the run stopped, by what reading again for 3 s showed. */
  paused_at_end: {} as Record<string, number>,
};
/** Sockets that do not read now: read again at the end to see whether the server had closed them. */
const paused = new Set<JsonClient>();
const closeKey = (reason: string) => reason.replace(/^close frame (\d+).*/, "close $1").slice(0, 60);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// One read of /proc/net/tcp every 500 ms for every socket that stopped reading.
let tcp = tcpTable(cfg.port);
let tcpReadAt = performance.now();
const tcpPoll = setInterval(() => {
  tcp = tcpTable(cfg.port);
  tcpReadAt = performance.now();
}, 500);

/**
 * Watches a socket that does not read. Resolves with the close reason once the server closed it
 * (seen by TCP leaving ESTABLISHED, then reading again for up to 2 s to read the close frame),
 * or after `stallMs`: then it reads for up to 2 s; closed by then, the reason; else it stops
 * reading again and resolves null (a client that stalls, catches up and stalls again).
 * A server that closes a socket which does not read queues its close frame behind what it had
 * buffered, and TCP stays ESTABLISHED: only reading again shows that close.
 */
async function watchPaused(ws: JsonClient, stallMs = Number.POSITIVE_INFINITY): Promise<string | null> {
  const port = ws.raw.socket?.localPort ?? 0;
  const from = performance.now();
  while (running && !ws.isClosed) {
    const entry = tcp.get(port);
    // a table read before this socket connected does not list it yet
    const tcpClosed = tcpReadAt > from && (entry === undefined || entry.state !== "ESTABLISHED");
    if (tcpClosed || performance.now() - from >= stallMs) {
      ws.raw.resume();
      for (let i = 0; i < 20 && !ws.isClosed; i++) await sleep(100);
      if (!running) return "stopped";
      if (ws.isClosed) return ws.closeReason!;
      if (tcpClosed) {
        ws.raw.terminate();
        return `server closed TCP (${entry?.state ?? "gone"}), no close frame read in 2 s`;
      }
      ws.raw.pause();
      return null;
    }
    await sleep(500);
  }
  return ws.closeReason ?? "stopped";
}

async function connect(token: string): Promise<JsonClient | null> {
  try {
    return await JsonClient.connect(cfg.port, token);
  } catch {
    c.connect_failures++;
    await sleep(1000);
    return null;
  }
}

async function post(body: string, key = cfg.evilKey, timeoutMs = 30_000): Promise<string> {
  const t = performance.now();
  try {
    const res = await fetch(`${base}/v1/publish`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body,
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await res.text();
    const code = res.ok ? "" : ` ${(/"code":"([a-z_]+)"/.exec(text) ?? [])[1] ?? ""}`;
    return `${res.status}${code}|${((performance.now() - t) / 1000).toFixed(1)}`;
  } catch (err) {
    return `${(err as Error).name}|${((performance.now() - t) / 1000).toFixed(1)}`;
  }
}
const statusOf = (answer: string) => answer.split("|")[0]!;

// --- set-up -------------------------------------------------------------------------------
const replayToken = userToken(cfg.secret, "replayer", { tenant: TENANT });
const fill = await fillRoom(cfg.port, replayToken, "r1", cfg.replayMessages, cfg.replayBytes, 10);
const since = { epoch: fill.epoch, offset: Math.max(0, fill.lastOffset - cfg.replayMessages) };

async function replayer(): Promise<void> {
  let id = 0;
  while (running) {
    const ws = await connect(replayToken);
    if (ws === null) continue;
    ws.raw.pause();
    paused.add(ws);
    const closed = watchPaused(ws) as Promise<string>;
    let done = false;
    void closed.then(() => (done = true));
    while (running && !done) {
      ws.send({ type: "subscribe", id: ++id, channel: "room:r1", since });
      c.replays_sent++;
      await Promise.race([sleep(cfg.replayEveryMs), closed]);
    }
    if (running) count(c.replay_closes, closeKey(await closed));
    if (!running) return;
    paused.delete(ws);
    ws.raw.terminate();
  }
}

async function flooder(i: number): Promise<void> {
  const token = userToken(cfg.secret, `flood${i}`, { tenant: TENANT, subChannels: [], pubChannels: ["dept:*"] });
  const pad = "x".repeat(100);
  const frames = Array.from({ length: cfg.floodFrames }, (_, k) => JSON.stringify({ type: "publish", id: k + 1, channel: "dept:flood", event: "f", data: { k, pad } }));
  while (running) {
    const start = performance.now();
    const ws = await connect(token);
    if (ws === null) continue;
    ws.raw.sendTexts(frames);
    c.flood_frames += frames.length;
    c.flood_rounds++;
    const reason = await Promise.race([ws.closed, sleep(2000).then(() => "not closed by the server within 2 s")]);
    if (running) count(c.flood_closes, closeKey(reason));
    ws.raw.terminate();
    await sleep(Math.max(0, 1000 - (performance.now() - start)));
  }
}

const slowToken = (i: number) => userToken(cfg.secret, `slow${i}`, { tenant: TENANT, subChannels: ["dept:*"] });
async function slowReader(first: JsonClient): Promise<void> {
  let ws: JsonClient | null = first;
  const i = slowReaders.indexOf(first);
  while (running) {
    if (ws === null) {
      ws = await connect(slowToken(i));
      if (ws === null) continue;
      const reply = await ws.request({ type: "subscribe", channel: "dept:busy" }).catch(() => null);
      if (!reply?.ok) {
        ws.raw.terminate();
        ws = null;
        continue;
      }
      ws.raw.pause();
      paused.add(ws);
    }
    const reason = await watchPaused(ws, cfg.slowStallSec * 1000);
    if (!running) return;
    if (reason === null) {
      c.slow_stalls_survived++;
      continue;
    }
    count(c.slow_closes, closeKey(reason));
    paused.delete(ws);
    ws = null;
    await sleep(1000);
  }
}
const slowReaders: JsonClient[] = [];
for (let i = 0; i < cfg.slowReaders; i++) {
  const ws = await JsonClient.connect(cfg.port, slowToken(i));
  const reply = await ws.request({ type: "subscribe", channel: "dept:busy" });
  if (!reply.ok) throw new Error(`slow reader: subscribe refused ${JSON.stringify(reply)}`);
  ws.raw.pause();
  paused.add(ws);
  slowReaders.push(ws);
}

// Trickled bodies: a raw HTTP/1.1 request whose body comes one byte a second.
const trickleHead = `POST /v1/publish HTTP/1.1\r\nHost: 127.0.0.1:${cfg.port}\r\nAuthorization: Bearer ${cfg.trickleKey}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n`;
const trickleBody = `[{"channel":"dept:trickle","event":"e","data":"${"x".repeat(100_000)}`;
const trickleStarts = new Set<number>();
function trickler(): void {
  if (!running) return;
  let opened = false;
  let done = false;
  let sent = 0;
  let timer: Timer | null = null;
  const start = performance.now();
  const finish = (socket: Socket<undefined> | null, answer: string) => {
    if (done) return;
    done = true;
    if (timer !== null) clearInterval(timer);
    if (opened) c.trickle_open--;
    trickleStarts.delete(start);
    c.trickle_longest_s = Math.max(c.trickle_longest_s, Math.round((performance.now() - start) / 1000));
    if (running) count(c.trickle_answers, answer);
    socket?.terminate();
    if (running) setTimeout(trickler, 1000);
  };
  Bun.connect({
    hostname: "127.0.0.1",
    port: cfg.port,
    socket: {
      open(socket) {
        opened = true;
        c.trickle_open++;
        trickleStarts.add(start);
        socket.write(trickleHead);
        timer = setInterval(() => socket.write(trickleBody[sent++ % trickleBody.length]!), 1000);
      },
      data(socket, chunk) {
        const status = /^HTTP\/1\.1 (\d{3})/.exec(chunk.toString("latin1"))?.[1];
        finish(socket, status ? `HTTP ${status}` : "unparsed answer");
      },
      close: () => finish(null, "closed without an answer"),
      error: () => finish(null, "closed without an answer"),
      connectError: () => finish(null, "connect failed"),
    },
  }).catch(() => finish(null, "connect failed"));
}

out({ event: "ready", since, fill: { acked: fill.acked, seconds: fill.seconds } });

// --- go -----------------------------------------------------------------------------------
const timers: Timer[] = [];
function go(): void {
  for (let i = 0; i < cfg.replaySockets; i++) void replayer();
  for (let i = 0; i < cfg.floodSockets; i++) void flooder(i);
  for (const ws of slowReaders) void slowReader(ws);
  for (let i = 0; i < cfg.tricklers; i++) trickler();

  const busy = `{"channel":"dept:busy","event":"b","data":"${"x".repeat(cfg.busyBytes)}"}`;
  let busyInFlight = 0;
  if (cfg.busyRate > 0) {
    timers.push(
      setInterval(() => {
        if (busyInFlight >= 8) return count(c.busy_answers, "skipped (8 in flight)");
        busyInFlight++;
        void post(busy).then((a) => (busyInFlight--, count(c.busy_answers, statusOf(a))));
      }, 1000 / cfg.busyRate),
    );
  }

  const run = randomBytes(4).toString("hex");
  let n = 0;
  let channelsInFlight = false;
  if (cfg.channelRate > 0) {
    timers.push(
      setInterval(() => {
        if (channelsInFlight) return count(c.channel_answers, "skipped (previous batch in flight)");
        channelsInFlight = true;
        const items: string[] = [];
        for (let i = 0; i < 1000; i++, n++) items.push(`{"channel":"dept:${run}-${n.toString(36)}","event":"e","data":{"n":${n}}}`);
        void post(`[${items.join(",")}]`).then((a) => {
          channelsInFlight = false;
          count(c.channel_answers, statusOf(a));
          if (statusOf(a) === "200") c.channels_accepted += 1000;
        });
      }, 1_000_000 / cfg.channelRate),
    );
  }

  const deep = `{"channel":"dept:deep","event":"e","data":${"[".repeat(cfg.nestDepth)}${"]".repeat(cfg.nestDepth)}}`;
  let deepInFlight = false;
  const nest = () => {
    if (deepInFlight) return void c.nest_answers.push("skipped (previous in flight)");
    deepInFlight = true;
    void post(deep, cfg.evilKey, 60_000).then((a) => {
      deepInFlight = false;
      c.nest_answers.push(a.replace("|", " in ") + " s");
    });
  };
  // at half the period, then every period (5 s, 15 s, 25 s, ... by default)
  let nextNest = performance.now() + (cfg.nestEverySec * 1000) / 2;
  if (cfg.nestEverySec > 0) {
    timers.push(
      setInterval(() => {
        if (performance.now() < nextNest) return;
        nextNest += cfg.nestEverySec * 1000;
        nest();
      }, 250),
    );
  }

  let sec = 0;
  timers.push(
    setInterval(() => {
      c.trickle_oldest_open_s = trickleStarts.size === 0 ? 0 : Math.round((performance.now() - Math.min(...trickleStarts)) / 1000);
      out({ event: "second", sec: ++sec, ...c });
    }, 1000),
  );
}

async function stop(): Promise<void> {
  c.trickle_oldest_open_s = trickleStarts.size === 0 ? 0 : Math.round((performance.now() - Math.min(...trickleStarts)) / 1000);
  running = false;
  // the counters as they were at stop (trickled requests may end during the 3 s below)
  const atStop = JSON.parse(JSON.stringify(c)) as typeof c;
  for (const t of timers) clearInterval(t);
  clearInterval(tcpPoll);
  // A server that closed a socket which does not read queues the close frame behind what it had
  // buffered: TCP stays ESTABLISHED. Reading again shows whether that close frame is there.
  for (const ws of paused) ws.raw.resume();
  for (let i = 0; i < 30 && [...paused].some((ws) => !ws.isClosed); i++) await sleep(100);
  for (const ws of paused) count(atStop.paused_at_end, ws.isClosed ? closeKey(ws.closeReason!) : "still open after 3 s of reading");
  out({ event: "done", ...atStop });
  process.exit(0);
}

for await (const line of createInterface({ input: process.stdin })) {
  if (line === "go") go();
  else if (line === "stop") await stop();
}
