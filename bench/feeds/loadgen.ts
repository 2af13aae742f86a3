/**
 * Feed benchmark load generator (run by bench/feeds/run.ts on core 1). One JSON config argument,
 * one of three modes; prints one JSON line per result on stdout.
 *
 * - `baseline`: only the MongoDB writer (no sinal running): the emulator's own write time.
 * - `feed`: `subscribers` sockets (raw client, bench/lib/rawws.ts), subscriber i on
 *   `roulette:r<i % docs>`; then a writer doing `rate` updateOne/s round-robin over the `docs`
 *   roulette documents with the driver. Each update sets `seq` (its index) and `t` (its write
 *   start, performance.now()). Writer and subscribers share this process, so the change-to-client
 *   latency (receive - write start) and the write time (updateOne resolved - write start) are on
 *   one clock. Also checks every subscriber's offsets (no gap, no duplicate).
 * - `rest`: one subscriber on `roulette:rest`, then for each phase `POST /v1/publish` as fast as
 *   possible with `inFlight` requests outstanding, `batch` items per request (1 = a single object
 *   body), with or without an `idempotency_key` per item.
 */
import { SignJWT } from "jose";
import { MongoClient } from "mongodb";
import { RawWebSocket, type FrameSink } from "../lib/rawws.ts";

interface Common {
  host: string;
  port: number;
  secret: string;
  tenant: string;
  mongoUri: string;
  db: string;
  docs: number;
}
interface WriteConfig {
  rate: number;
  warmupSec: number;
  seconds: number;
}
type Config =
  | ({ mode: "baseline" } & Common & WriteConfig)
  | ({ mode: "feed"; subscribers: number; tailSec: number } & Common & WriteConfig)
  | ({ mode: "rest"; apiKey: string; phases: RestPhase[] } & Common);
interface RestPhase {
  name: string;
  batch: number;
  inFlight: number;
  key: boolean;
  seconds: number;
}

const config = JSON.parse(process.argv[2]!) as Config;
const out = (obj: unknown) => process.stdout.write(JSON.stringify(obj) + "\n");
const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};
function pct(sorted: Float64Array, p: number): number {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]! : NaN;
}
function stats(values: Float64Array) {
  const s = values.slice().sort();
  return { n: s.length, p50: pct(s, 50), p90: pct(s, 90), p99: pct(s, 99), p999: pct(s, 99.9), max: s.length ? s[s.length - 1]! : NaN };
}

// ---------- subscribers ----------

/** Reads an unsigned integer written right after `key` in buf[from, end); -1 if absent. */
function intAfter(buf: Buffer, key: Buffer, from: number, end: number): number {
  const at = buf.indexOf(key, from);
  if (at < 0 || at >= end) return -1;
  let i = at + key.length;
  let n = 0;
  for (let c = buf[i]!; c >= 48 && c <= 57; c = buf[++i]!) n = n * 10 + (c - 48);
  return n;
}
const PUB = Buffer.from('{"type":"pub"');
const SEQ = Buffer.from('"seq":');
const OFFSET = Buffer.from('"offset":');
const TS = Buffer.from('"ts":');

interface OnPub {
  (sub: Sub, buf: Buffer, start: number, end: number, now: number): void;
}

class Sub implements FrameSink {
  readonly ws: RawWebSocket;
  ready = false;
  lastOffset = -1;
  lastSeq = -1;
  repeats = 0;
  gaps = 0;
  dups = 0;
  received = 0;
  private resolve!: () => void;
  private reject!: (e: Error) => void;
  readonly whenReady = new Promise<void>((res, rej) => {
    this.resolve = res;
    this.reject = rej;
  });
  constructor(
    token: string,
    readonly channel: string,
    readonly onPub: OnPub,
  ) {
    this.ws = new RawWebSocket(this, { host: config.host, port: config.port, path: `/ws?token=${token}` });
    this.whenReady.catch(() => {});
  }
  onOpen(): void {}
  onText(ws: RawWebSocket, buf: Buffer, start: number, end: number, now: number): void {
    if (this.ready) {
      if (buf.indexOf(PUB, start) !== start) return;
      this.received++;
      const offset = intAfter(buf, OFFSET, start, end);
      if (this.lastOffset >= 0) {
        if (offset <= this.lastOffset) this.dups++;
        else if (offset !== this.lastOffset + 1) this.gaps++;
      }
      this.lastOffset = offset;
      this.onPub(this, buf, start, end, now);
      return;
    }
    const text = buf.toString("utf8", start, end);
    if (text.startsWith('{"type":"welcome"')) {
      ws.sendText(JSON.stringify({ type: "subscribe", id: 1, channel: this.channel }));
    } else if (text.startsWith('{"type":"reply"')) {
      const reply = JSON.parse(text) as { ok: boolean; offset?: number; error?: unknown };
      if (!reply.ok) return this.reject(new Error(`subscribe refused: ${text}`));
      this.lastOffset = reply.offset ?? -1;
      this.ready = true;
      this.resolve();
    }
  }
  onClose(_ws: RawWebSocket, reason: string): void {
    if (!this.ready) this.reject(new Error(reason));
    else closedAfterReady++;
  }
}
let closedAfterReady = 0;

async function openSubs(count: number, channelOf: (i: number) => string, onPub: OnPub): Promise<Sub[]> {
  const key = new TextEncoder().encode(config.secret);
  const subs: Sub[] = [];
  for (let i = 0; i < count; i += 100) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(100, count - i) }, async (_, j) => {
        const token = await new SignJWT({ tid: config.tenant, sub_channels: ["roulette:*"] })
          .setProtectedHeader({ alg: "HS256" })
          .setSubject(`u${i + j}`)
          .setExpirationTime("1h")
          .sign(key);
        const sub = new Sub(token, channelOf(i + j), onPub);
        await sub.ws.connect();
        await sub.whenReady;
        return sub;
      }),
    );
    subs.push(...batch);
  }
  return subs;
}

// ---------- MongoDB writer ----------

/**
 * Writes `rate` updates/s for warmupSec + seconds, round-robin over the documents, each one
 * started on time (not after the previous one resolved). Returns write start/end per seq.
 */
async function writeLoad(cfg: WriteConfig, onMeasureStart: () => void) {
  const mongo = new MongoClient(config.mongoUri, { maxPoolSize: 50 });
  await mongo.connect();
  const coll = mongo.db(config.db).collection<{ _id: string }>("roulettes");
  const warm = Math.round(cfg.rate * cfg.warmupSec);
  const total = warm + Math.round(cfg.rate * cfg.seconds);
  const start = new Float64Array(total);
  const end = new Float64Array(total);
  let errors = 0;
  let done = 0;
  let inFlight = 0;
  let maxInFlight = 0;
  const write = async (seq: number) => {
    inFlight++;
    if (inFlight > maxInFlight) maxInFlight = inFlight;
    const t = performance.now();
    start[seq] = t;
    try {
      await coll.updateOne({ _id: `r${seq % config.docs}` }, { $set: { seq, t, last: seq % 37 }, $push: { numbers: { $each: [seq % 37], $slice: -20 } } });
      end[seq] = performance.now();
    } catch (err) {
      if (errors++ === 0) process.stderr.write(`updateOne failed: ${(err as Error).message}\n`);
    }
    inFlight--;
    done++;
  };
  let sent = 0;
  let phaseStart = performance.now();
  // warm-up, then the measured part
  for (const [count, offset] of [
    [warm, 0],
    [total - warm, warm],
  ] as const) {
    if (offset > 0) onMeasureStart();
    phaseStart = performance.now();
    let issued = 0;
    while (issued < count) {
      const due = Math.min(count, Math.floor(((performance.now() - phaseStart) / 1000) * cfg.rate));
      for (; issued < due; issued++) void write(offset + issued);
      sent = offset + issued;
      await Bun.sleep(1);
    }
  }
  const sendSeconds = (performance.now() - phaseStart) / 1000;
  const drainDeadline = performance.now() + 10_000;
  while (done < sent && performance.now() < drainDeadline) await Bun.sleep(5);
  await mongo.close();
  return { start, end, warm, total, errors, sendSeconds, maxInFlight };
}

function writeStats(w: Awaited<ReturnType<typeof writeLoad>>) {
  const times = new Float64Array(w.total - w.warm);
  for (let s = w.warm; s < w.total; s++) times[s - w.warm] = w.end[s]! - w.start[s]!;
  return stats(times);
}

// ---------- modes ----------

async function metricSum(name: string): Promise<number> {
  const text = await (await fetch(`http://${config.host}:${config.port}/metrics`)).text();
  let sum = 0;
  for (const line of text.split("\n")) if (line.startsWith(`${name}{`) && line.includes(`tenant="${config.tenant}"`)) sum += Number(line.slice(line.lastIndexOf(" ") + 1));
  return sum;
}

if (config.mode === "baseline") {
  const cpu0 = cpuMs();
  const w = await writeLoad(config, () => {});
  out({ event: "baseline", writes: w.total - w.warm, errors: w.errors, achievedPerSec: (w.total - w.warm) / w.sendSeconds, maxInFlight: w.maxInFlight, write: writeStats(w), loadgenCpuPct: (cpuMs() - cpu0) / ((config.warmupSec + config.seconds) * 10) });
  process.exit(0);
}

if (config.mode === "feed") {
  const cfg = config;
  const cap = Math.ceil(cfg.rate * (cfg.warmupSec + cfg.seconds) * (cfg.subscribers / cfg.docs)) + 100_000;
  const recvSeq = new Int32Array(cap);
  const recvAt = new Float64Array(cap);
  const recvTs = new Float64Array(cap); // sinal's publication time (Date.now() in the frame's ts)
  let n = 0;
  const subs = await openSubs(
    cfg.subscribers,
    (i) => `roulette:r${i % cfg.docs}`,
    (_sub, buf, start, end, now) => {
      const seq = intAfter(buf, SEQ, start, end);
      if (seq <= _sub.lastSeq) _sub.repeats++;
      else _sub.lastSeq = seq;
      if (seq >= 0 && n < cap) {
        recvTs[n] = intAfter(buf, TS, start, end);
        recvSeq[n] = seq;
        recvAt[n++] = now;
      }
    },
  );
  out({ event: "ready", subscribers: subs.length });
  const deliveries0 = await metricSum("sinal_deliveries_total");
  let cpu0 = cpuMs();
  let t0 = performance.now();
  let measuredFrom = 0;
  const w = await writeLoad(cfg, () => {
    measuredFrom = n;
    cpu0 = cpuMs();
    t0 = performance.now();
    out({ event: "measuring" });
  });
  out({ event: "written" });
  const perDoc = cfg.subscribers / cfg.docs;
  const expected = (w.total - w.warm) * perDoc;
  const expectedAll = w.total * perDoc;
  const tailStart = performance.now();
  while (n < expectedAll && performance.now() - tailStart < cfg.tailSec * 1000) await Bun.sleep(5);
  const elapsed = (performance.now() - t0) / 1000;
  const loadgenCpuPct = (cpuMs() - cpu0) / (elapsed * 10);
  // latency = receive - write start; beyond = receive - write end (the part after the emulator acknowledged)
  const lat: number[] = [];
  const beyond: number[] = [];
  const toPublish: number[] = [];
  const fromPublish: number[] = [];
  const origin = performance.timeOrigin;
  let measured = 0;
  for (let i = 0; i < n; i++) {
    const seq = recvSeq[i]!;
    if (seq < w.warm || seq >= w.total) continue;
    measured++;
    lat.push(recvAt[i]! - w.start[seq]!);
    if (w.end[seq]! > 0) beyond.push(recvAt[i]! - w.end[seq]!);
    // Wall clock, ms resolution (ts is Date.now() in sinal): the change-stream part and the fan-out part.
    toPublish.push(recvTs[i]! - (origin + w.start[seq]!));
    fromPublish.push(origin + recvAt[i]! - recvTs[i]!);
  }
  let gaps = 0;
  let dups = 0;
  let repeats = 0;
  for (const s of subs) {
    gaps += s.gaps;
    dups += s.dups;
    repeats += s.repeats;
  }
  out({
    event: "feed",
    subscribers: subs.length,
    docs: cfg.docs,
    writes: w.total - w.warm,
    writeErrors: w.errors,
    achievedWritesPerSec: (w.total - w.warm) / w.sendSeconds,
    maxInFlight: w.maxInFlight,
    expected,
    received: measured,
    receivedAll: n,
    expectedAll,
    offsetGaps: gaps,
    offsetDups: dups,
    repeats,
    deliveriesCounted: (await metricSum("sinal_deliveries_total")) - deliveries0,
    closed: closedAfterReady,
    measuredFrom,
    write: writeStats(w),
    latency: stats(Float64Array.from(lat)),
    beyondWrite: stats(Float64Array.from(beyond)),
    toPublish: stats(Float64Array.from(toPublish)),
    fromPublish: stats(Float64Array.from(fromPublish)),
    loadgenCpuPct,
  });
  for (const s of subs) s.ws.terminate();
  process.exit(0);
}

if (config.mode === "rest") {
  const cfg = config;
  let delivered = 0;
  const [sub] = await openSubs(1, () => "roulette:rest", () => void delivered++);
  out({ event: "ready" });
  const url = `http://${cfg.host}:${cfg.port}/v1/publish`;
  const headers = { authorization: `Bearer ${cfg.apiKey}`, "content-type": "application/json" };
  let keySeq = 0;
  const pad = "x".repeat(40);
  const item = (i: number, key: boolean) =>
    `{"channel":"roulette:rest","event":"roulette_update","data":{"roulette_id":"rest","number":${i % 37},"n":${i},"note":"${pad}"}${key ? `,"idempotency_key":"k-${process.pid}-${keySeq++}"` : ""}}`;
  for (const phase of cfg.phases) {
    delivered = 0;
    let published = 0;
    let requests = 0;
    let failed = 0;
    let firstError = "";
    let i = 0;
    const reqLat: number[] = [];
    const counted0 = await metricSum("sinal_publications_total");
    out({ event: "start", name: phase.name });
    const cpu0 = cpuMs();
    const started = performance.now();
    const deadline = started + phase.seconds * 1000;
    const worker = async () => {
      while (performance.now() < deadline) {
        let body: string;
        if (phase.batch === 1) body = item(i++, phase.key);
        else {
          const items: string[] = [];
          for (let k = 0; k < phase.batch; k++) items.push(item(i++, phase.key));
          body = `[${items.join(",")}]`;
        }
        const t = performance.now();
        try {
          const res = await fetch(url, { method: "POST", headers, body });
          const text = await res.text();
          if (res.ok) {
            published += phase.batch;
            requests++;
            reqLat.push(performance.now() - t);
          } else {
            failed++;
            firstError ||= `${res.status} ${text.slice(0, 200)}`;
          }
        } catch (err) {
          failed++;
          firstError ||= (err as Error).message;
        }
      }
    };
    await Promise.all(Array.from({ length: phase.inFlight }, worker));
    const sendEnd = performance.now();
    out({ event: "sent", name: phase.name });
    while (delivered < published && performance.now() - sendEnd < 10_000) await Bun.sleep(5);
    const sendSec = (sendEnd - started) / 1000;
    const serverCounted = (await metricSum("sinal_publications_total")) - counted0;
    out({
      serverCounted,
      event: "rest",
      name: phase.name,
      batch: phase.batch,
      inFlight: phase.inFlight,
      key: phase.key,
      published,
      requests,
      failed,
      firstError,
      delivered,
      seconds: sendSec,
      eventsPerSec: published / sendSec,
      requestsPerSec: requests / sendSec,
      request: stats(Float64Array.from(reqLat)),
      loadgenCpuPct: (cpuMs() - cpu0) / (sendSec * 10),
    });
  }
  sub!.ws.terminate();
  process.exit(0);
}
