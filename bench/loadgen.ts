/**
 * The load generator (one process, pinned by run.ts to its own core).
 *
 *   bun bench/loadgen.ts fanout '<json FanoutConfig>'   1 publisher + N subscribers of one channel
 *   bun bench/loadgen.ts idle   '<json IdleConfig>'     N idle connections, held until SIGTERM/stdin EOF
 *
 * Publisher and subscribers live in this one process, so a publication's send time (in its
 * payload, from performance.now()) and its receive time come from the same clock. Results are
 * JSON lines on stdout; progress goes to stderr.
 */
import * as hdr from "hdr-histogram-js";
import { readFileSync } from "node:fs";
import { RawWebSocket, type FrameSink } from "./lib/rawws.ts";
import { makeTarget, type ServerCounters, type Target, type TargetName } from "./lib/targets.ts";

interface CommonConfig {
  target: TargetName;
  host: string;
  port: number;
  /** HS256 secret for sinal tokens. */
  secret: string;
  /** The server's pid, for its CPU time (/proc/<pid>/stat). */
  serverPid: number;
  /** Connections opening at once. */
  concurrency: number;
  /** The process exits by itself after this, whatever happens. */
  deadlineSec: number;
}

interface FanoutConfig extends CommonConfig {
  subscribers: number;
  /** Size of the `data` object of each publication in bytes (JSON text). */
  payloadBytes: number;
  warmupSec: number;
  /** Max-throughput phase: seconds and the bound on publications not yet delivered to everyone. */
  maxSec: number;
  window: number;
  /** In the max phase, latency is recorded for every k-th subscriber only (it costs the load generator). */
  maxLatencyEvery: number;
  /** Fixed offered load: publications per second and seconds. */
  fixedRate: number;
  fixedSec: number;
  /**
   * Several nodes (bench/cluster): subscriber i connects to subscriberPorts[i % length] (the
   * publisher stays on `port`); counters are summed over every port. Default: all on `port`.
   */
  subscriberPorts?: number[];
  /** More processes whose CPU counts as the server's (the other nodes, Redis). */
  serverPids?: number[];
  /** A phase disturbed by other processes (more than quietPct % of a core) is run again, at most `attempts` times in all. */
  quietPct: number;
  attempts: number;
  /** Before each attempt, wait at most this long for the machine to be quiet. */
  quietWaitSec: number;
}

interface IdleConfig extends CommonConfig {
  count: number;
  /** First user index (each connection is its own user). */
  offset: number;
}

const log = (msg: string) => process.stderr.write(`[loadgen ${process.pid}] ${msg}\n`);
const emit = (obj: unknown) => process.stdout.write(`${JSON.stringify(obj)}\n`);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

const MARK = Buffer.from('"t":');
const CLK_TCK = 100;

/** utime+stime of a process in seconds, from /proc/<pid>/stat. */
function processCpuSec(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
  } catch {
    return Number.NaN;
  }
}

/** Busy (non-idle, non-iowait) CPU seconds of the whole machine, from /proc/stat. */
function machineBusySec(): number {
  const line = readFileSync("/proc/stat", "utf8").split("\n", 1)[0]!;
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
  return (total - v[3]! - v[4]!) / CLK_TCK;
}

function rssKb(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/** Parses the decimal number starting at buf[i] (digits and one dot). */
function parseNumber(buf: Buffer, i: number, end: number): number {
  let int = 0;
  let frac = 0;
  let scale = 1;
  let c = buf[i]!;
  while (i < end && c >= 48 && c <= 57) {
    int = int * 10 + (c - 48);
    c = buf[++i]!;
  }
  if (c === 46) {
    c = buf[++i]!;
    while (i < end && c >= 48 && c <= 57) {
      frac = frac * 10 + (c - 48);
      scale *= 10;
      c = buf[++i]!;
    }
  }
  return int + frac / scale;
}

type Role = "sub" | "pub" | "idle";

/** One connection going through the target's handshake; after it, `onReady` frames go to `hot`. */
class Conn implements FrameSink {
  ready = false;
  failed: string | null = null;
  /** Position among the connections of its kind (latency sampling picks by it). */
  index = 0;
  readonly ws: RawWebSocket;
  private resolveReady!: () => void;
  private rejectReady!: (err: Error) => void;
  readonly whenReady = new Promise<void>((resolve, reject) => {
    this.resolveReady = resolve;
    this.rejectReady = reject;
  });

  constructor(
    readonly target: Target,
    readonly role: Role,
    path: string,
    host: string,
    port: number,
    readonly hot: HotPath | null,
  ) {
    this.ws = new RawWebSocket(this, { host, port, path });
    // awaited by openMany only after connect(); a failed connect must not leave it unhandled
    this.whenReady.catch(() => {});
  }

  onOpen(ws: RawWebSocket): void {
    const step = this.target.onOpen(this.role);
    if (step.send !== undefined) ws.sendText(step.send);
    if (step.ready) this.markReady();
  }

  onText(ws: RawWebSocket, buf: Buffer, start: number, end: number, now: number): void {
    if (this.ready) {
      if (this.hot !== null) this.hot.onFrame(this, buf, start, end, now);
      else {
        const answer = this.target.keepAliveReply(buf, start, end);
        if (answer !== null) ws.sendText(answer);
      }
      return;
    }
    let step;
    try {
      step = this.target.onSetupText(this.role, buf.toString("utf8", start, end));
    } catch (err) {
      step = { error: `bad setup frame: ${(err as Error).message}` };
    }
    if (step.error !== undefined) {
      this.fail(step.error);
      ws.terminate();
      return;
    }
    if (step.reply !== undefined) ws.sendText(step.reply);
    if (step.ready) this.markReady();
  }

  onChunkEnd(): void {
    this.hot?.onChunkEnd();
  }

  onClose(_ws: RawWebSocket, reason: string): void {
    if (!this.ready) this.fail(reason);
    else this.hot?.onClosed(this, reason);
  }

  private markReady(): void {
    this.ready = true;
    this.resolveReady();
  }

  private fail(reason: string): void {
    if (this.failed !== null) return;
    this.failed = reason;
    this.rejectReady(new Error(reason));
  }
}

interface HotPath {
  onFrame(conn: Conn, buf: Buffer, start: number, end: number, now: number): void;
  onChunkEnd(): void;
  onClosed(conn: Conn, reason: string): void;
}

/** Opens `count` connections, `concurrency` at a time; returns them with the failures. */
async function openMany(
  count: number,
  concurrency: number,
  make: (i: number) => Promise<Conn>,
): Promise<{ conns: Conn[]; errors: string[] }> {
  const conns: Conn[] = [];
  const errors: string[] = [];
  let next = 0;
  async function worker() {
    while (next < count) {
      const i = next++;
      let conn: Conn | null = null;
      try {
        conn = await make(i);
        await conn.ws.connect();
        await conn.whenReady;
        conns.push(conn);
      } catch (err) {
        errors.push((err as Error).message);
        conn?.ws.terminate();
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  return { conns, errors };
}

function summarize(h: hdr.Histogram) {
  const ms = (v: number) => Math.round(v) / 1000;
  return {
    samples: h.totalCount,
    p50_ms: ms(h.getValueAtPercentile(50)),
    p90_ms: ms(h.getValueAtPercentile(90)),
    p99_ms: ms(h.getValueAtPercentile(99)),
    p999_ms: ms(h.getValueAtPercentile(99.9)),
    max_ms: ms(h.maxValue),
    mean_ms: Math.round(h.mean) / 1000,
  };
}

async function fanout(cfg: FanoutConfig): Promise<void> {
  const target = makeTarget(cfg.target, cfg.secret);
  const N = cfg.subscribers;
  const subscriberPorts = cfg.subscriberPorts ?? [cfg.port];
  const counterPorts = [...new Set([cfg.port, ...subscriberPorts])];
  /** The server's counters, summed over its nodes. */
  const counters = async (): Promise<ServerCounters> => {
    const all = await Promise.all(counterPorts.map((port) => target.counters(cfg.host, port)));
    return all.reduce((a, b) => ({ publications: a.publications + b.publications, deliveries: a.deliveries + b.deliveries, connections: a.connections + b.connections }));
  };
  const serverPids = [cfg.serverPid, ...(cfg.serverPids ?? [])];
  const serverCpuSec = () => serverPids.reduce((sum, pid) => sum + processCpuSec(pid), 0);
  const histogram = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: 3 });

  // counters of the hot path
  let received = 0;
  let receivedBytes = 0;
  let otherFrames = 0;
  let closedDuringRun = 0;
  const closeReasons: string[] = [];
  let published = 0;
  let mode: "idle" | "max" | "fixed" = "idle";
  let recordLatency = false;
  /** Latency is recorded for subscribers whose index is a multiple of this (1: all). */
  let latencyEvery = 1;

  let publisher: Conn | null = null;
  let seq = 0;
  const padding = "x".repeat(cfg.payloadBytes);
  const makeData = () => {
    const head = `{"t":${performance.now().toFixed(3)},"s":${++seq},"p":"`;
    return `${head}${padding.slice(0, Math.max(0, cfg.payloadBytes - head.length - 2))}"}`;
  };

  // max mode: keep at most `window` publications not yet received by every subscriber;
  // refill in batches (one TCP write) once half of the window has drained.
  const window = cfg.window;
  const refillAt = Math.floor(window / 2);
  const pump = () => {
    if (mode !== "max" || publisher === null) return;
    const inflight = published - received / N;
    if (inflight > refillAt) return;
    const k = window - Math.ceil(inflight);
    const frames: string[] = new Array(k);
    for (let j = 0; j < k; j++) frames[j] = target.publishFrame(makeData());
    publisher.ws.sendTexts(frames);
    published += k;
  };

  let markAt = 0;
  const hot: HotPath = {
    onFrame(conn, buf, start, end, now) {
      // The timestamp sits at the same offset in every publication of a target: check there
      // first (4 byte compares), search only when it is not there (a 16-byte scan costs more
      // than the rest of the frame's handling).
      let k = start + markAt;
      if (!(buf[k] === 34 && buf[k + 1] === 116 && buf[k + 2] === 34 && buf[k + 3] === 58 && k + 4 < end)) {
        k = buf.indexOf(MARK, start);
        if (k >= 0 && k < end) markAt = k - start;
      }
      if (k < 0 || k >= end) {
        const answer = target.keepAliveReply(buf, start, end);
        if (answer !== null) conn.ws.sendText(answer);
        else otherFrames++;
        return;
      }
      received++;
      receivedBytes += end - start;
      if (recordLatency && conn.index % latencyEvery === 0) {
        const sentAt = parseNumber(buf, k + 4, end);
        const us = Math.round((now - sentAt) * 1000);
        histogram.recordValue(us > 0 ? us : 1);
      }
    },
    onChunkEnd: pump,
    onClosed(_conn, reason) {
      closedDuringRun++;
      if (closeReasons.length < 5) closeReasons.push(reason);
    },
  };

  const t0 = performance.now();
  log(`${cfg.target}: opening ${N} subscribers`);
  const { conns: subs, errors } = await openMany(N, cfg.concurrency, async (i) => {
    const conn = new Conn(target, "sub", await target.path(`s${i}`, "sub"), cfg.host, subscriberPorts[i % subscriberPorts.length]!, hot);
    conn.index = i;
    return conn;
  });
  if (subs.length !== N) throw new Error(`${errors.length} of ${N} subscribers failed; first: ${errors[0]}`);
  const pub = new Conn(target, "pub", await target.path("publisher", "pub"), cfg.host, cfg.port, {
    onFrame(conn, buf, start, end) {
      const answer = target.keepAliveReply(buf, start, end);
      if (answer !== null) conn.ws.sendText(answer);
    },
    onChunkEnd: () => {},
    onClosed: (_c, reason) => {
      closedDuringRun++;
      closeReasons.push(`publisher: ${reason}`);
    },
  });
  await pub.ws.connect();
  await pub.whenReady;
  publisher = pub;
  log(`${cfg.target}: ${N} subscribers + publisher ready in ${Math.round(performance.now() - t0)} ms`);

  /** Waits until every publication reached every subscriber (or `timeoutMs`). */
  const drain = async (timeoutMs: number) => {
    const until = performance.now() + timeoutMs;
    while (received < published * N && performance.now() < until) await sleep(1);
    return received >= published * N;
  };

  async function phase(name: string, kind: "max" | "fixed", seconds: number, record: boolean, sampleEvery = 1) {
    const counters0: ServerCounters = await counters();
    const serverCpu0 = serverCpuSec();
    const busy0 = machineBusySec();
    const cpu0 = process.cpuUsage();
    const received0 = received;
    const published0 = published;
    const bytes0 = receivedBytes;
    histogram.reset();
    recordLatency = record;
    latencyEvery = sampleEvery;
    const start = performance.now();
    const stopAt = start + seconds * 1000;
    let stalled = false;
    if (kind === "max") {
      mode = "max";
      pump();
      // watchdog: a phase that stops progressing ends early and says so
      let last = received;
      while (performance.now() < stopAt) {
        await sleep(500);
        if (received === last) {
          stalled = true;
          break;
        }
        last = received;
      }
      mode = "idle";
    } else {
      mode = "fixed";
      const rate = cfg.fixedRate;
      let sent = 0;
      await new Promise<void>((resolve) => {
        const timer = setInterval(() => {
          const now = performance.now();
          if (now >= stopAt) {
            clearInterval(timer);
            resolve();
            return;
          }
          const due = Math.floor(((now - start) * rate) / 1000) + 1 - sent;
          if (due <= 0) return;
          const frames: string[] = [];
          for (let j = 0; j < due; j++) frames.push(target.publishFrame(makeData()));
          // one write per publication, as separate publishes would arrive
          for (const f of frames) pub.ws.sendText(f);
          sent += due;
          published += due;
        }, 1);
      });
      mode = "idle";
    }
    const sendEnd = performance.now();
    const drained = await drain(5000);
    const end = performance.now();
    const cpu = process.cpuUsage(cpu0);
    const serverCpu = serverCpuSec() - serverCpu0;
    const busy = machineBusySec() - busy0;
    recordLatency = false;
    const counters1 = await counters();
    const got = received - received0;
    const pubs = published - published0;
    const elapsed = (end - start) / 1000;
    const result = {
      event: "phase",
      target: cfg.target,
      phase: name,
      kind,
      subscribers: N,
      seconds: Math.round(elapsed * 1000) / 1000,
      send_seconds: Math.round(((sendEnd - start) / 1000) * 1000) / 1000,
      window: kind === "max" ? window : undefined,
      offered_rate: kind === "fixed" ? cfg.fixedRate : undefined,
      publications: pubs,
      expected_deliveries: pubs * N,
      received: got,
      deliveries_per_sec: Math.round(got / elapsed),
      publications_per_sec: Math.round(pubs / elapsed),
      frame_bytes: got > 0 ? Math.round((receivedBytes - bytes0) / got) : 0,
      drained,
      stalled,
      server_publications: counters1.publications - counters0.publications,
      server_deliveries: counters1.deliveries - counters0.deliveries,
      server_cpu_pct: Math.round((serverCpu / elapsed) * 1000) / 10,
      server_rss_kb: rssKb(cfg.serverPid),
      loadgen_cpu_pct: Math.round(((cpu.user + cpu.system) / 1e6 / elapsed) * 1000) / 10,
      loadgen_user_cpu_pct: Math.round((cpu.user / 1e6 / elapsed) * 1000) / 10,
      // CPU used by everything else on the machine (other processes, kernel threads), % of one core
      other_cpu_pct: Math.round(((busy - serverCpu - (cpu.user + cpu.system) / 1e6) / elapsed) * 1000) / 10,
      latency: record ? summarize(histogram) : undefined,
      latency_sampled_subscribers: record ? Math.ceil(N / sampleEvery) : 0,
      other_frames: otherFrames,
      closed_during_run: closedDuringRun,
      close_reasons: closeReasons.slice(0, 5),
    };
    log(
      `${cfg.target} ${name}: ${result.deliveries_per_sec} deliveries/s, server counted ${result.server_deliveries} vs received ${got}, ` +
        `loadgen cpu ${result.loadgen_cpu_pct}%, server cpu ${result.server_cpu_pct}%, other cpu ${result.other_cpu_pct}%` +
        (result.latency ? `, p50 ${result.latency.p50_ms} ms p99 ${result.latency.p99_ms} ms` : ""),
    );
    return result;
  }

  /** CPU used over `ms` by everything but the server and this process, in % of one core. */
  async function otherLoadPct(ms: number): Promise<number> {
    const b0 = machineBusySec();
    const s0 = serverCpuSec();
    const c0 = process.cpuUsage();
    await sleep(ms);
    const c = process.cpuUsage(c0);
    const other = machineBusySec() - b0 - (serverCpuSec() - s0) - (c.user + c.system) / 1e6;
    return (other / (ms / 1000)) * 100;
  }

  /**
   * Other sessions may build or test on this machine: a phase during which other processes used
   * more than `quietPct` of a core is repeated (after waiting for quiet), and the least disturbed
   * attempt is reported, with its number.
   */
  async function measured(name: string, kind: "max" | "fixed", seconds: number, sampleEvery: number) {
    let best: Awaited<ReturnType<typeof phase>> | null = null;
    for (let attempt = 1; attempt <= cfg.attempts; attempt++) {
      const quietUntil = performance.now() + cfg.quietWaitSec * 1000;
      let load = await otherLoadPct(500);
      while (load > cfg.quietPct && performance.now() < quietUntil) load = await otherLoadPct(1000);
      const result = { ...(await phase(name, kind, seconds, true, sampleEvery)), attempt };
      if (best === null || result.other_cpu_pct < best.other_cpu_pct) best = result;
      if (result.other_cpu_pct <= cfg.quietPct) break;
      if (attempt < cfg.attempts) log(`${cfg.target} ${name}: other processes used ${result.other_cpu_pct}% of a core; repeating the phase`);
    }
    return best!;
  }

  if (cfg.warmupSec > 0) await phase("warmup", "max", cfg.warmupSec, false);
  emit(await measured("max", "max", cfg.maxSec, cfg.maxLatencyEvery));
  await sleep(300);
  emit(await measured("fixed", "fixed", cfg.fixedSec, 1));

  pub.ws.close();
  for (const s of subs) s.ws.terminate();
}

async function idle(cfg: IdleConfig): Promise<void> {
  const target = makeTarget(cfg.target, cfg.secret);
  const t0 = performance.now();
  const { conns, errors } = await openMany(cfg.count, cfg.concurrency, async (i) => {
    return new Conn(target, "idle", await target.path(`u${cfg.offset + i}`, "idle"), cfg.host, cfg.port, null);
  });
  emit({
    event: "ready",
    target: cfg.target,
    requested: cfg.count,
    connected: conns.length,
    failed: errors.length,
    errors: [...new Set(errors)].slice(0, 3),
    seconds: Math.round(performance.now() - t0) / 1000,
  });
  // hold until told to stop
  await new Promise<void>((resolve) => {
    process.once("SIGTERM", resolve);
    process.once("SIGINT", resolve);
    process.stdin.on("end", resolve);
    process.stdin.on("close", resolve);
    process.stdin.resume();
  });
  const stillOpen = conns.filter((c) => !c.ws.closed).length;
  for (const c of conns) c.ws.terminate();
  emit({ event: "released", still_open: stillOpen });
}

const [command, raw] = process.argv.slice(2);
if (raw === undefined || (command !== "fanout" && command !== "idle")) {
  process.stderr.write("usage: bun bench/loadgen.ts fanout|idle '<json config>'\n");
  process.exit(2);
}
const config = JSON.parse(raw) as CommonConfig;
setTimeout(() => {
  log(`deadline of ${config.deadlineSec} s reached; exiting`);
  process.exit(3);
}, config.deadlineSec * 1000).unref();

try {
  if (command === "fanout") await fanout(config as FanoutConfig);
  else await idle(config as IdleConfig);
  process.exit(0);
} catch (err) {
  emit({ event: "error", message: (err as Error).message });
  log(`failed: ${(err as Error).stack}`);
  process.exit(1);
}
