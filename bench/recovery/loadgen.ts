/**
 * Recovery load generator (started by bench/recovery/run.ts, pinned to its own core).
 *
 *   bun bench/recovery/loadgen.ts '<json Config>'
 *
 * `clients` users, each with two connections subscribed to one channel:
 * - an anchor that stays connected the whole run (a second tab): it keeps the user in the room,
 *   so no `user_joined`/`user_left` is published on a chat room and the only publications on the
 *   channel are the benchmark's own; it also receives them live;
 * - a client that, every round, connects, subscribes (recording {epoch, offset}), disconnects,
 *   misses `missed` publications made through `POST /v1/publish`, then reconnects together with
 *   all the others at once and subscribes again:
 *     "base":    without `since` (the reference: reconnect + subscribe, no replay)
 *     "recover": with `since` (the reply must say recovered:true, then exactly the missed
 *                publications must follow, in order, none twice)
 * Measured per round: time from the first reconnect until every client is done, each client's
 * completion time, server CPU (/proc/<pid>/stat) and RSS (VmRSS samples and VmHWM, reset through
 * /proc/<pid>/clear_refs) before, during and after. Any check that fails ends the run with an error.
 * One JSON line per round on stdout; progress on stderr.
 */
import { SignJWT } from "jose";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { RawWebSocket, type FrameSink } from "../lib/rawws.ts";

interface Config {
  host: string;
  port: number;
  secret: string;
  apiKey: string;
  tenant: string;
  serverPid: number;
  channel: string;
  clients: number;
  missed: number;
  /** Size of each publication's `data` JSON text, in bytes. */
  payloadBytes: number;
  rounds: ("base" | "recover")[];
  /** Every client must be done within this many seconds of the first reconnect. */
  timeoutSec: number;
  /** Length of the "before" and "after" windows. */
  windowMs: number;
  deadlineSec: number;
}

type Mode = "base" | "recover";
interface Position {
  epoch: string;
  offset: number;
}

const cfg = JSON.parse(process.argv[2]!) as Config;
const log = (msg: string) => process.stderr.write(`[recovery-loadgen] ${msg}\n`);
const emit = (obj: unknown) => process.stdout.write(`${JSON.stringify(obj)}\n`);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
setTimeout(() => {
  emit({ event: "error", message: `deadline of ${cfg.deadlineSec} s reached` });
  process.exit(3);
}, cfg.deadlineSec * 1000).unref();

// ---------------------------------------------------------------- /proc readings

function serverCpuTicks(): number {
  const stat = readFileSync(`/proc/${cfg.serverPid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(f[11]) + Number(f[12]); // utime + stime, 1/100 s
}
/** Nanoseconds on CPU of all the server's threads (/proc/<pid>/task/<tid>/schedstat): finer than the 10 ms ticks. */
function serverCpuNs(): number {
  let ns = 0;
  for (const tid of readdirSync(`/proc/${cfg.serverPid}/task`)) {
    try {
      ns += Number(readFileSync(`/proc/${cfg.serverPid}/task/${tid}/schedstat`, "utf8").split(" ", 1)[0]);
    } catch {
      // the thread ended
    }
  }
  return ns;
}
function machineBusyTicks(): number {
  const v = readFileSync("/proc/stat", "utf8").split("\n", 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
  return v[0]! + v[1]! + v[2]! + v[5]! + v[6]! + v[7]!; // user nice system irq softirq steal
}
function statusKb(field: "VmRSS" | "VmHWM" | "RssAnon" | "RssFile" | "RssShmem"): number {
  const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${cfg.serverPid}/status`, "utf8"));
  return m ? Number(m[1]) : Number.NaN;
}
/** Resets the server's peak RSS (VmHWM) to its current RSS; false where the kernel does not allow it. */
function resetPeak(): boolean {
  try {
    writeFileSync(`/proc/${cfg.serverPid}/clear_refs`, "5");
    return true;
  } catch {
    return false;
  }
}
function loadgenCpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

/** Server CPU, machine CPU and RSS over one window. */
class Window {
  private readonly t0 = performance.now();
  private readonly s0 = serverCpuTicks();
  private readonly n0 = serverCpuNs();
  private readonly m0 = machineBusyTicks();
  private readonly l0 = loadgenCpuMs();
  private peakSampled = statusKb("VmRSS");
  private readonly sampler: Timer;
  constructor(sampleMs: number) {
    this.sampler = setInterval(() => {
      const rss = statusKb("VmRSS");
      if (rss > this.peakSampled) this.peakSampled = rss;
    }, sampleMs);
  }
  end() {
    clearInterval(this.sampler);
    const sec = (performance.now() - this.t0) / 1000;
    const server = serverCpuTicks() - this.s0;
    const serverNs = serverCpuNs() - this.n0;
    const machine = machineBusyTicks() - this.m0;
    const loadgen = loadgenCpuMs() - this.l0;
    const rss = statusKb("VmRSS");
    return {
      ms: Math.round(sec * 10000) / 10,
      server_cpu_ms: server * 10,
      server_cpu_ms_schedstat: Math.round(serverNs / 1e5) / 10,
      server_cpu_pct: Math.round((server / sec) * 10) / 10,
      loadgen_cpu_pct: Math.round((loadgen / 10 / sec) * 10) / 10,
      // everything else on the machine (other sessions, kernel threads), % of one core
      other_cpu_pct: Math.round(((machine - server - loadgen / 10) / sec) * 10) / 10,
      rss_end_kb: rss,
      // anonymous memory (heaps) and file-backed pages (the binary, sqlite's mapped files)
      rss_anon_kb: statusKb("RssAnon"),
      rss_file_kb: statusKb("RssFile") + statusKb("RssShmem"),
      rss_peak_sampled_kb: Math.max(this.peakSampled, rss),
    };
  }
}

// ---------------------------------------------------------------- clients

const key = new TextEncoder().encode(cfg.secret);
async function tokenFor(user: string): Promise<string> {
  return new SignJWT({ tid: cfg.tenant, sub_channels: [cfg.channel] }).setProtectedHeader({ alg: "HS256" }).setSubject(user).setIssuedAt().setExpirationTime("2h").sign(key);
}

/** The fixed start of every publication of the benchmark: `data` begins with the index `i`. */
const PUB_PREFIX = Buffer.from(`{"type":"pub","channel":"${cfg.channel}","event":"tick","data":{"i":`);
const OFFSET_MARK = Buffer.from(`"offset":`);
const EPOCH_MARK = Buffer.from(`"epoch":"`);

function parseIntAt(buf: Buffer, i: number, end: number): number {
  let n = 0;
  let digits = 0;
  while (i < end && buf[i]! >= 48 && buf[i]! <= 57) {
    n = n * 10 + (buf[i]! - 48);
    i++;
    digits++;
  }
  return digits === 0 ? Number.NaN : n;
}

/** Reads a benchmark publication: its data index, offset and epoch; null when it is not one. */
function readPub(buf: Buffer, start: number, end: number): { i: number; offset: number; epoch: string } | null {
  if (end - start < PUB_PREFIX.length || buf.compare(PUB_PREFIX, 0, PUB_PREFIX.length, start, start + PUB_PREFIX.length) !== 0) return null;
  const i = parseIntAt(buf, start + PUB_PREFIX.length, end);
  // offset, epoch and ts close the frame: search from the end
  const o = buf.lastIndexOf(OFFSET_MARK, end - 1);
  if (o < start) return null;
  const offset = parseIntAt(buf, o + OFFSET_MARK.length, end);
  const e = buf.indexOf(EPOCH_MARK, o);
  if (e < 0 || e >= end) return null;
  const eq = buf.indexOf(34, e + EPOCH_MARK.length);
  const epoch = buf.toString("latin1", e + EPOCH_MARK.length, eq);
  return { i, offset, epoch };
}

class Client implements FrameSink {
  readonly ws: RawWebSocket;
  welcomed = false;
  reply: { ok?: boolean; epoch?: string; offset?: number; recovered?: boolean; error?: unknown } | null = null;
  /** What the client has seen: starts at the reply's position and follows the publications. */
  position: Position | null = null;
  /** Publications received after the reply in this connection. */
  pubs = 0;
  bytes = 0;
  /** Frames received after the client was done (duplicates or anything unexpected). */
  extra = 0;
  error: string | null = null;
  doneAt = 0;
  replyAt = 0;
  private resolveDone!: () => void;
  readonly done = new Promise<void>((r) => (this.resolveDone = r));

  constructor(
    readonly path: string,
    /** With `since` the subscribe asks for recovery; `expect` is what must follow. */
    readonly since: Position | null,
    readonly expect: { epoch: string; offset: number; pubs: number } | null,
    /** Anchors: no checks, they only count live publications. */
    readonly anchor = false,
  ) {
    this.ws = new RawWebSocket(this, { host: cfg.host, port: cfg.port, path });
  }

  onOpen(): void {}

  onText(ws: RawWebSocket, buf: Buffer, start: number, end: number, now: number): void {
    this.bytes += end - start;
    if (this.reply === null || !this.welcomed) {
      const frame = JSON.parse(buf.toString("utf8", start, end)) as Record<string, unknown>;
      if (!this.welcomed) {
        if (frame.type !== "welcome") return this.fail(`first frame is not welcome: ${buf.toString("utf8", start, Math.min(end, start + 200))}`);
        this.welcomed = true;
        const sub: Record<string, unknown> = { type: "subscribe", id: 1, channel: cfg.channel };
        if (this.since !== null) sub.since = this.since;
        ws.sendText(JSON.stringify(sub));
        return;
      }
      if (frame.type !== "reply" || frame.id !== 1) return this.fail(`frame before the subscribe reply: ${buf.toString("utf8", start, Math.min(end, start + 200))}`);
      this.reply = frame as Client["reply"];
      this.replyAt = now;
      if (frame.ok !== true) return this.fail(`subscribe refused: ${JSON.stringify(frame.error)}`);
      // with since, the replay starts after `since`; the reply itself reports where the channel stands
      this.position = this.since !== null ? { ...this.since } : { epoch: String(frame.epoch), offset: Number(frame.offset) };
      if (this.expect !== null) {
        if (frame.epoch !== this.expect.epoch || frame.offset !== this.expect.offset) {
          return this.fail(`reply at ${frame.epoch}/${frame.offset}, expected ${this.expect.epoch}/${this.expect.offset}`);
        }
        if (this.since !== null && frame.recovered !== true) return this.fail(`recovered is ${frame.recovered} (reason ${frame.reason}, history_from ${frame.history_from})`);
      }
      if (this.expect === null || this.expect.pubs === 0) this.finish(now);
      return;
    }
    if (this.doneAt > 0 && !this.anchor) {
      this.extra++;
      if (this.error === null) this.error = `frame after all expected ones: ${buf.toString("utf8", start, Math.min(end, start + 160))}`;
      return;
    }
    if (this.anchor) return this.live(buf, start, end);
    const pub = readPub(buf, start, end);
    if (pub === null) return this.fail(`unexpected frame: ${buf.toString("utf8", start, Math.min(end, start + 200))}`);
    const pos = this.position!;
    if (pub.epoch !== pos.epoch) return this.fail(`publication of epoch ${pub.epoch}, subscribed at ${pos.epoch}`);
    if (pub.offset !== pos.offset + 1) return this.fail(`offset ${pub.offset} after ${pos.offset} (${pub.offset <= pos.offset ? "duplicate" : "gap"})`);
    pos.offset = pub.offset;
    this.pubs++;
    if (this.expect !== null && this.since !== null) {
      // the index in `data` is the publication's place in its REST batch: 1..missed
      if (pub.i !== pub.offset - this.since.offset) return this.fail(`publication at offset ${pub.offset} carries data.i ${pub.i}`);
      if (this.pubs === this.expect.pubs) this.finish(now);
    }
  }

  /** Anchors: every publication live, in offset order (on a room, also the user_joined of the other anchors). */
  private live(buf: Buffer, start: number, end: number): void {
    const o = buf.lastIndexOf(OFFSET_MARK, end - 1);
    const offset = o >= start ? parseIntAt(buf, o + OFFSET_MARK.length, end) : Number.NaN;
    if (offset !== this.position!.offset + 1) return this.fail(`anchor: offset ${offset} after ${this.position!.offset}: ${buf.toString("utf8", start, Math.min(end, start + 160))}`);
    this.position!.offset = offset;
    if (readPub(buf, start, end) !== null) this.pubs++;
    else this.otherPubs++;
  }
  otherPubs = 0;

  onClose(_ws: RawWebSocket, reason: string): void {
    if (this.closedByUs) return;
    if (this.error === null) this.error = `closed ${this.doneAt === 0 ? "before done" : "by the server"}: ${reason}`;
    this.finish(performance.now());
  }

  private closedByUs = false;
  close(): void {
    this.closedByUs = true;
    this.ws.close();
  }

  private finish(now: number): void {
    if (this.doneAt > 0) return;
    this.doneAt = now;
    this.resolveDone();
  }

  fail(reason: string): void {
    if (this.error === null) this.error = reason;
    this.finish(performance.now());
  }
}

/** Connects `clients`, `concurrency` at a time; with `waitDone`, a slot frees once its client is done. */
async function connectAll(clients: Client[], concurrency: number, waitDone = true): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < clients.length) {
      const c = clients[next++]!;
      try {
        await c.ws.connect();
      } catch (err) {
        c.fail(`connect: ${(err as Error).message}`);
      }
      if (waitDone) await c.done;
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, clients.length) }, worker));
}

// ---------------------------------------------------------------- server side helpers

async function metric(name: string): Promise<number> {
  const text = await (await fetch(`http://${cfg.host}:${cfg.port}/metrics`)).text();
  let sum = 0;
  for (const line of text.split("\n")) if (line.startsWith(name) && (line[name.length] === " " || line[name.length] === "{") && (!line.includes("tenant=") || line.includes(`tenant="${cfg.tenant}"`))) sum += Number(line.slice(line.lastIndexOf(" ") + 1));
  return sum;
}

async function waitConnections(n: number, what: string): Promise<void> {
  const until = Date.now() + 15_000;
  let now = await metric("sinal_connections");
  while (now !== n && Date.now() < until) {
    await sleep(50);
    now = await metric("sinal_connections");
  }
  if (now !== n) throw new Error(`${what}: the server counts ${now} connections, expected ${n}`);
}

const padding = "x".repeat(Math.max(cfg.payloadBytes, 0));
function dataOf(i: number): string {
  const head = `{"i":${i},"p":"`;
  return `${head}${padding.slice(0, Math.max(0, cfg.payloadBytes - head.length - 2))}"}`;
}

async function publishMissed(): Promise<Position[]> {
  const items = Array.from({ length: cfg.missed }, (_, k) => `{"channel":"${cfg.channel}","event":"tick","data":${dataOf(k + 1)}}`);
  const res = await fetch(`http://${cfg.host}:${cfg.port}/v1/publish`, {
    method: "POST",
    headers: { authorization: `Bearer ${cfg.apiKey}`, "content-type": "application/json" },
    body: `[${items.join(",")}]`,
  });
  if (!res.ok) throw new Error(`POST /v1/publish: HTTP ${res.status} ${(await res.text()).slice(0, 300)}`);
  return (await res.json()) as Position[];
}

function pct(sorted: number[], p: number): number {
  return sorted.length === 0 ? Number.NaN : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}
const r1 = (n: number) => Math.round(n * 10) / 10;

// ---------------------------------------------------------------- main

const users = Array.from({ length: cfg.clients }, (_, i) => `u${i}`);
const paths = await Promise.all(users.map(async (u) => `/ws?token=${await tokenFor(u)}`));
const peakResettable = resetPeak();

log(`${cfg.clients} anchors on ${cfg.channel}`);
const anchors = paths.map((p) => new Client(p, null, null, true));
await connectAll(anchors, 100);
const anchorFailures = anchors.filter((a) => a.error !== null);
if (anchorFailures.length > 0) throw new Error(`${anchorFailures.length} anchors failed; first: ${anchorFailures[0]!.error}`);
await waitConnections(cfg.clients, "anchors open");
emit({ event: "ready", anchors: anchors.length, peak_resettable: peakResettable });

process.on("uncaughtException", (err) => {
  emit({ event: "error", message: err.message });
  log(`failed: ${err.stack}`);
  process.exit(1);
});
for (let round = 0; round < cfg.rounds.length; round++) {
  const mode: Mode = cfg.rounds[round]!;
  // 1. every client subscribes and records where the channel stands
  const setup = paths.map((p) => new Client(p, null, null));
  await connectAll(setup, 100);
  const bad = setup.find((c) => c.error !== null);
  if (bad) throw new Error(`round ${round + 1}: setup subscribe failed: ${bad.error}`);
  const since = setup[0]!.position!;
  if (setup.some((c) => c.position!.epoch !== since.epoch || c.position!.offset !== since.offset)) throw new Error(`round ${round + 1}: clients saw different positions at setup`);
  await waitConnections(2 * cfg.clients, "clients open");
  // 2. all disconnect
  for (const c of setup) c.close();
  await waitConnections(cfg.clients, "clients closed");
  // 3. the publications they miss
  const anchorPubs0 = anchors.map((a) => a.pubs);
  const published = await publishMissed();
  for (let k = 0; k < published.length; k++) {
    if (published[k]!.epoch !== since.epoch || published[k]!.offset !== since.offset + k + 1) {
      throw new Error(`round ${round + 1}: publication ${k + 1} got ${JSON.stringify(published[k])}, expected ${since.epoch}/${since.offset + k + 1}`);
    }
  }
  const expect = { epoch: since.epoch, offset: since.offset + cfg.missed, pubs: mode === "recover" ? cfg.missed : 0 };
  // the anchors have every one of them live: the fan-out is over before the measurement
  const until = Date.now() + 10_000;
  while (anchors.some((a, i) => a.pubs - anchorPubs0[i]! < cfg.missed) && Date.now() < until) await sleep(10);
  const anchorBad = anchors.find((a, i) => a.error !== null || a.pubs - anchorPubs0[i]! !== cfg.missed);
  if (anchorBad) throw new Error(`round ${round + 1}: an anchor did not get the ${cfg.missed} publications live: ${anchorBad.error ?? `${anchorBad.pubs} received`}`);
  // 4. before: the server at rest
  await sleep(300);
  Bun.gc(true);
  const before = new Window(20);
  await sleep(cfg.windowMs);
  const beforeStats = before.end();
  // 5. everyone reconnects at once
  const clients = paths.map((p) => new Client(p, mode === "recover" ? since : null, expect));
  resetPeak();
  const t0 = performance.now();
  const during = new Window(5);
  void connectAll(clients, clients.length, false);
  const allDone = Promise.all(clients.map((c) => c.done));
  const timedOut = await Promise.race([allDone.then(() => false), sleep(cfg.timeoutSec * 1000).then(() => true)]);
  const t1 = performance.now();
  const duringStats = during.end();
  const peakKb = peakResettable ? statusKb("VmHWM") : Number.NaN;
  // 6. after: anything arriving now is a duplicate or an extra frame
  const after = new Window(20);
  await sleep(cfg.windowMs);
  const afterStats = after.end();
  const failed = clients.filter((c) => c.error !== null);
  const notDone = clients.filter((c) => c.doneAt === 0);
  const extra = clients.reduce((s, c) => s + c.extra, 0);
  const replayed = clients.reduce((s, c) => s + c.pubs, 0);
  const slowClients = await metric("sinal_slow_clients");
  const completions = clients.filter((c) => c.doneAt > 0).map((c) => c.doneAt - t0).sort((a, b) => a - b);
  const replies = clients.filter((c) => c.replyAt > 0).map((c) => c.replyAt - t0).sort((a, b) => a - b);
  const result = {
    event: "round",
    round: round + 1,
    mode,
    channel: cfg.channel,
    clients: cfg.clients,
    missed: cfg.missed,
    payload_bytes: cfg.payloadBytes,
    since,
    ms_to_all_done: r1(Math.max(...completions, 0)),
    wall_ms: r1(t1 - t0),
    timed_out: timedOut,
    client_done_ms: { p50: r1(pct(completions, 50)), p90: r1(pct(completions, 90)), p99: r1(pct(completions, 99)), max: r1(pct(completions, 100)) },
    client_reply_ms: { p50: r1(pct(replies, 50)), p99: r1(pct(replies, 99)), max: r1(pct(replies, 100)) },
    replayed,
    expected_replayed: mode === "recover" ? cfg.clients * cfg.missed : 0,
    replay_bytes_per_client: Math.round(clients.reduce((s, c) => s + c.bytes, 0) / cfg.clients),
    failed: failed.length,
    not_done: notDone.length,
    extra_frames: extra,
    first_error: failed[0]?.error ?? null,
    slow_clients_after: slowClients,
    before: beforeStats,
    during: { ...duringStats, rss_peak_hwm_kb: peakKb },
    after: afterStats,
  };
  emit(result);
  log(
    `round ${round + 1} ${mode}: ${result.ms_to_all_done} ms to all done, server ${duringStats.server_cpu_ms} ms CPU, ` +
      `RSS ${beforeStats.rss_end_kb} (anon ${beforeStats.rss_anon_kb}) -> peak ${Number.isNaN(peakKb) ? duringStats.rss_peak_sampled_kb : peakKb} -> ${afterStats.rss_end_kb} (anon ${afterStats.rss_anon_kb}) kB, ` +
      `replayed ${replayed}/${result.expected_replayed}, failed ${failed.length}, extra ${extra}, other cpu ${duringStats.other_cpu_pct}%`,
  );
  if (timedOut || failed.length > 0 || notDone.length > 0 || extra > 0 || replayed !== result.expected_replayed) {
    throw new Error(
      `round ${round + 1} (${mode}) FAILED: ${failed.length} clients failed, ${notDone.length} not done within ${cfg.timeoutSec} s, ${extra} extra frames, ` +
        `replayed ${replayed} of ${result.expected_replayed}; first error: ${failed[0]?.error ?? "none"}`,
    );
  }
  // 7. disconnect before the next round
  for (const c of clients) c.close();
  await waitConnections(cfg.clients, "clients closed after the round");
}

for (const a of anchors) a.close();
process.exit(0);
