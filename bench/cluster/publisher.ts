/**
 * Publications per second through sinal (bench/cluster/run.ts, part 2): `connections` sinal
 * clients, spread over the nodes' ports, each keeping `window` WebSocket `publish` frames (with an
 * id, so each gets a reply carrying its offset) in flight over `channels` non-durable channels.
 * A reply refills its connection's window in one TCP write per read. One JSON line on stdout:
 * acknowledged publications per second over the measured seconds, errors, and the latency of the
 * acknowledgement (send → reply, one clock).
 *
 *   bun bench/cluster/publisher.ts '<json PublisherConfig>'
 */
import { RawWebSocket, type FrameSink } from "../lib/rawws.ts";
import { TENANT } from "../lib/targets.ts";
import { Histogram } from "../chat/histogram.ts";
import { SignJWT } from "jose";

interface PublisherConfig {
  host: string;
  ports: number[];
  secret: string;
  connections: number;
  window: number;
  channels: number;
  /** Channel kind (its history comes from the namespace: roulette keeps 20 for 2 min). */
  kind: string;
  payloadBytes: number;
  warmupSec: number;
  seconds: number;
  deadlineSec: number;
}

const cfg = JSON.parse(process.argv[2] ?? "{}") as PublisherConfig;
setTimeout(() => {
  process.stderr.write(`publisher: deadline of ${cfg.deadlineSec} s reached\n`);
  process.exit(3);
}, cfg.deadlineSec * 1000).unref();

const padding = "x".repeat(cfg.payloadBytes);
const histogram = new Histogram();
let acked = 0;
let failed = 0;
const firstErrors: string[] = [];
let recording = false;
let running = true;

class PublishConn implements FrameSink {
  readonly ws: RawWebSocket;
  ready!: () => void;
  fail!: (err: Error) => void;
  readonly opened = new Promise<void>((res, rej) => ((this.ready = res), (this.fail = rej)));
  private welcomed = false;
  private nextId = 1;
  private inflight = 0;
  /** Send times by id modulo the ring (ids in flight never span more than the window). */
  private readonly sentAt: Float64Array;
  private channel: number;

  constructor(
    readonly index: number,
    port: number,
    path: string,
  ) {
    this.ws = new RawWebSocket(this, { host: cfg.host, port, path });
    this.sentAt = new Float64Array(cfg.window * 4);
    this.channel = index % cfg.channels;
    this.opened.catch(() => undefined);
  }

  onOpen(): void {}

  onText(_ws: RawWebSocket, buf: Buffer, start: number, end: number, now: number): void {
    const text = buf.toString("utf8", start, end);
    if (!this.welcomed) {
      if (text.includes('"type":"welcome"')) {
        this.welcomed = true;
        this.ready();
      } else this.fail(new Error(`unexpected first frame ${text.slice(0, 200)}`));
      return;
    }
    const frame = JSON.parse(text) as { type: string; id?: number; ok?: boolean; error?: { code?: string; message?: string } };
    if (frame.type !== "reply" || frame.id === undefined) return;
    this.inflight--;
    if (frame.ok === true) {
      if (recording) {
        acked++;
        histogram.record(now - this.sentAt[frame.id % this.sentAt.length]!);
      }
    } else {
      failed++;
      if (firstErrors.length < 3) firstErrors.push(JSON.stringify(frame.error));
    }
  }

  onChunkEnd(): void {
    this.refill();
  }

  onClose(_ws: RawWebSocket, reason: string): void {
    this.fail(new Error(reason));
    if (running && this.welcomed) {
      failed++;
      if (firstErrors.length < 3) firstErrors.push(`closed: ${reason}`);
    }
  }

  refill(): void {
    if (!running || this.inflight > cfg.window / 2) return;
    const frames: string[] = [];
    const now = performance.now();
    while (this.inflight < cfg.window) {
      const id = this.nextId++;
      this.sentAt[id % this.sentAt.length] = now;
      this.channel = (this.channel + 1) % cfg.channels;
      frames.push(`{"type":"publish","id":${id},"channel":"${cfg.kind}:c${this.channel}","event":"tick","data":{"p":"${padding}"}}`);
      this.inflight++;
    }
    this.ws.sendTexts(frames);
  }
}

const key = new TextEncoder().encode(cfg.secret);
const conns: PublishConn[] = [];
for (let i = 0; i < cfg.connections; i++) {
  const jwt = await new SignJWT({ tid: TENANT, sub_channels: [`${cfg.kind}:*`], pub_channels: [`${cfg.kind}:*`] })
    .setProtectedHeader({ alg: "HS256" })
    .setSubject(`publisher${i}`)
    .setIssuedAt()
    .setExpirationTime("2h")
    .sign(key);
  const conn = new PublishConn(i, cfg.ports[i % cfg.ports.length]!, `/ws?token=${jwt}`);
  await conn.ws.connect();
  await conn.opened;
  conns.push(conn);
}


for (const c of conns) c.refill();
await Bun.sleep(cfg.warmupSec * 1000);
recording = true;
process.stdout.write(`${JSON.stringify({ event: "measuring" })}\n`);
const cpu0 = process.cpuUsage();
const t0 = performance.now();
await Bun.sleep(cfg.seconds * 1000);
recording = false;
const elapsed = (performance.now() - t0) / 1000;
const cpu = process.cpuUsage(cpu0);
running = false;
const result = {
  event: "result",
  connections: conns.length,
  window: cfg.window,
  channels: cfg.channels,
  seconds: Math.round(elapsed * 1000) / 1000,
  acked,
  acked_per_sec: Math.round(acked / elapsed),
  failed,
  errors: firstErrors,
  p50_ms: histogram.percentile(50),
  p99_ms: histogram.percentile(99),
  max_ms: histogram.max,
  loadgen_cpu_pct: Math.round(((cpu.user + cpu.system) / 1e6 / elapsed) * 1000) / 10,
};
process.stdout.write(`${JSON.stringify(result)}\n`);
for (const c of conns) c.ws.terminate();
process.exit(0);
