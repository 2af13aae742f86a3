/**
 * Live data feed benchmark (issue 4): `bun bench/feeds/run.ts`, about 1 minute.
 *
 * 1. The MongoDB emulator of the tests (mongo-java-server, test/support/mongo-emulator.ts), moved
 *    to core 1 once started; 10 roulette documents `r0`..`r9` in `runcash.roulettes`.
 * 2. Baseline: the load generator (core 1) writes 1,000 updateOne/s for 2 + 10 s with no sinal
 *    running: the emulator's own write time.
 * 3. sinal (`bun src/main.ts serve`, core 0) with one feed: `roulettes` -> `roulette:{_id}` of the
 *    fixed tenant `bench`. 1,000 subscribers, 100 on each of the 10 channels; the same writer load,
 *    now watched by sinal: change-to-client latency (write start -> frame received) and, per
 *    update, the write time; so also the part beyond the emulator's acknowledgement.
 * 4. REST: `POST /v1/publish` as fast as one client process can, single items (32 in flight) and
 *    batches of 100 and 1000 (4 in flight), each with and without an idempotency_key per item;
 *    events/s, server CPU, and a subscriber's count against sinal_publications_total.
 *
 * Every process it starts is stopped on exit, failure, Ctrl-C or after BENCH_FEEDS_DEADLINE_SEC.
 * Writes bench/results/feeds-latest.{json,md} and prints the markdown.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { MongoClient } from "mongodb";
import { startEmulator, type Emulator } from "../../test/support/mongo-emulator.ts";
import { cpuTicks, freePort } from "../lib/proc.ts";

const ROOT = resolve(import.meta.dir, "../..");
const BUN = join(ROOT, "node_modules/.bin/bun");
const env = process.env;
const SUBSCRIBERS = Number(env.BENCH_FEEDS_SUBSCRIBERS ?? 1000);
const DOCS = Number(env.BENCH_FEEDS_DOCS ?? 10); // channels; subscriber i is on roulette:r<i % DOCS>
const RATE = Number(env.BENCH_FEEDS_RATE ?? 1000);
const SECONDS = Number(env.BENCH_FEEDS_SEC ?? 10);
const WARMUP_SEC = Number(env.BENCH_FEEDS_WARMUP_SEC ?? 2);
const REST_SEC = Number(env.BENCH_FEEDS_REST_SEC ?? 5);
const EMULATOR_CPUS = env.BENCH_FEEDS_EMULATOR_CPUS ?? "1";
const DEADLINE_SEC = Number(env.BENCH_FEEDS_DEADLINE_SEC ?? 280);
const BUN_FLAGS = (env.BENCH_FEEDS_BUN_FLAGS ?? "").split(" ").filter(Boolean); // e.g. --cpu-prof-md --cpu-prof-dir=/tmp/x
const PHASES = (env.BENCH_FEEDS_PHASES ?? "baseline,feed,rest").split(",");
const TENANT = "bench";
const DB = "runcash";

const startedAt = new Date();
// The orchestrator (mostly asleep) on core 1 with the load generator, as in bench/run.ts.
spawnSync("taskset", ["-a", "-cp", "1", String(process.pid)], { stdio: "ignore" });
const children = new Set<ChildProcess>();
let emulator: Emulator | null = null;
let emulatorPid: number | null = null;
const dir = mkdtempSync(join(tmpdir(), "sinal-feeds-bench-"));

function killAll(): void {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  if (emulatorPid !== null) {
    try {
      process.kill(emulatorPid, "SIGKILL");
    } catch {}
  }
  rmSync(dir, { recursive: true, force: true });
}
process.on("exit", killAll);
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(sig, () => process.exit(130));
setTimeout(() => {
  process.stderr.write(`feeds bench: deadline of ${DEADLINE_SEC} s passed; stopping everything\n`);
  process.exit(1);
}, DEADLINE_SEC * 1000).unref();

/** Machine-wide busy ticks (all cores), for the "other CPU" estimate. */
function machineBusyTicks(): number {
  const f = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
  return f[0]! + f[1]! + f[2]! + f[5]! + f[6]! + f[7]!; // user nice system irq softirq steal
}
class CpuMeter {
  private t = 0;
  private m = 0;
  private at = 0;
  constructor(private readonly pids: () => number[]) {}
  mark(): void {
    this.t = this.pids().reduce((s, p) => s + cpuTicks(p), 0);
    this.m = machineBusyTicks();
    this.at = performance.now();
  }
  /** [percent of one core used by pids, percent of one core used by everything else] */
  read(): [number, number] {
    const sec = (performance.now() - this.at) / 1000;
    const t = this.pids().reduce((s, p) => s + cpuTicks(p), 0) - this.t;
    const m = machineBusyTicks() - this.m;
    return [t / sec, (m - t) / sec];
  }
  /** Busy ticks of the pids since mark(), per second (percent of one core). */
  only(): number {
    return this.read()[0];
  }
}

function loadgen(config: object): { child: ChildProcess; lines: AsyncIterable<string> } {
  const child = spawn("taskset", ["-c", "1", BUN, "bench/feeds/loadgen.ts", JSON.stringify(config)], { cwd: ROOT, stdio: ["ignore", "pipe", "inherit"] });
  children.add(child);
  return { child, lines: createInterface({ input: child.stdout! }) };
}
async function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  await new Promise((r) => child.once("exit", r));
}

async function metricSum(port: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  let sum = 0;
  for (const line of text.split("\n")) if (line.startsWith(`${name}{`) && line.includes(`tenant="${TENANT}"`)) sum += Number(line.slice(line.lastIndexOf(" ") + 1));
  return sum;
}

// ---------- emulator ----------
process.stderr.write("feeds bench: starting the MongoDB emulator\n");
emulator = await startEmulator();
const found = spawnSync("pgrep", ["-P", String(process.pid), "java"], { encoding: "utf8" }).stdout.trim().split("\n").filter(Boolean);
emulatorPid = found.length === 1 ? Number(found[0]) : null;
if (emulatorPid !== null) spawnSync("taskset", ["-a", "-cp", EMULATOR_CPUS, String(emulatorPid)], { stdio: "ignore" });
const mongoUri = emulator.uri();
{
  const mongo = new MongoClient(mongoUri);
  const coll = mongo.db(DB).collection<{ _id: string }>("roulettes");
  await coll.insertMany(Array.from({ length: DOCS }, (_, i) => ({ _id: `r${i}`, name: `Roulette ${i}`, numbers: [] as number[], seq: -1, t: 0, last: 0 })));
  await mongo.close();
}
const secret = randomBytes(32).toString("base64url");
const common = { host: "127.0.0.1", secret, tenant: TENANT, mongoUri, db: DB, docs: DOCS };
const writeCfg = { rate: RATE, warmupSec: WARMUP_SEC, seconds: SECONDS };

type Stats = { n: number; p50: number; p90: number; p99: number; p999: number; max: number };
const results: Record<string, unknown> = {};
const emuMeter = new CpuMeter(() => (emulatorPid === null ? [] : [emulatorPid]));

// ---------- baseline: the emulator's own write time ----------
if (PHASES.includes("baseline")) {
  process.stderr.write("feeds bench: baseline writes (no sinal)\n");
  const lg = loadgen({ mode: "baseline", port: 0, ...common, ...writeCfg });
  emuMeter.mark();
  for await (const line of lg.lines) {
    const msg = JSON.parse(line);
    if (msg.event === "baseline") results.baseline = { ...msg, emulatorCpuPct: emuMeter.read()[0] };
  }
  await exited(lg.child);
  if (!results.baseline) throw new Error("baseline load generator gave no result");
}

// ---------- sinal ----------
const port = await freePort();
const apiKey = `bench-${randomBytes(16).toString("hex")}`;
const feed = { name: "roulettes", collection: "roulettes", channel: "roulette:{_id}", tenant: TENANT, event: "roulette_update", fields: ["name", "numbers", "seq", "t", "last"], snapshot: { field: "numbers", latest: 20 } };
const server = spawn("taskset", ["-c", "0", BUN, ...BUN_FLAGS, "src/main.ts", "serve"], {
  cwd: ROOT,
  env: {
    PATH: env.PATH,
    JWT_SECRET: secret,
    PORT: String(port),
    HOST: "127.0.0.1",
    DATABASE_URL: `sqlite:${join(dir, "sinal.db")}`,
    LOG_LEVEL: "warn",
    MONGODB_URI: mongoUri,
    MONGODB_DB: DB,
    SINAL_FEEDS: JSON.stringify([feed]),
    SINAL_API_KEYS: `${TENANT}:${apiKey}`,
    ...(env.SQLITE_SYNCHRONOUS ? { SQLITE_SYNCHRONOUS: env.SQLITE_SYNCHRONOUS } : {}),
  },
  stdio: ["ignore", "ignore", "inherit"],
});
children.add(server);
for (let i = 0; ; i++) {
  try {
    if ((await fetch(`http://127.0.0.1:${port}/ready`)).status === 200) break;
  } catch {}
  if (server.exitCode !== null) throw new Error("sinal exited at start");
  if (i > 400) throw new Error("sinal was not ready within 20 s");
  await Bun.sleep(50);
}
const serverMeter = new CpuMeter(() => [server.pid!]);

// ---------- feed latency ----------
if (PHASES.includes("feed")) {
  process.stderr.write(`feeds bench: ${SUBSCRIBERS} subscribers on ${DOCS} channels, ${RATE} updates/s\n`);
  const lg = loadgen({ mode: "feed", port, ...common, ...writeCfg, subscribers: SUBSCRIBERS, tailSec: 10 });
  const mine = new CpuMeter(() => [server.pid!, lg.child.pid!, ...(emulatorPid === null ? [] : [emulatorPid])]);
  let cpu = NaN;
  let emuCpu = NaN;
  let other = NaN;
  for await (const line of lg.lines) {
    const msg = JSON.parse(line);
    if (msg.event === "measuring") {
      serverMeter.mark();
      emuMeter.mark();
      mine.mark();
    } else if (msg.event === "written") {
      cpu = serverMeter.only();
      emuCpu = emuMeter.only();
      other = mine.read()[1];
    } else if (msg.event === "feed") results.feed = { ...msg, serverCpuPct: cpu, otherCpuPct: other, emulatorCpuPct: emuCpu };
  }
  await exited(lg.child);
  if (!results.feed) throw new Error("feed load generator gave no result");
  results.feedMetrics = { sinal_publications_total: await metricSum(port, "sinal_publications_total"), sinal_deliveries_total: await metricSum(port, "sinal_deliveries_total") };
}

// ---------- REST throughput ----------
if (PHASES.includes("rest")) {
  process.stderr.write("feeds bench: REST publish throughput\n");
  const phases = [
    { name: "single, 32 in flight", batch: 1, inFlight: 32, key: false },
    { name: "single + idempotency_key, 32 in flight", batch: 1, inFlight: 32, key: true },
    { name: "batch 100, 4 in flight", batch: 100, inFlight: 4, key: false },
    { name: "batch 100 + idempotency_key, 4 in flight", batch: 100, inFlight: 4, key: true },
    { name: "batch 1000, 4 in flight", batch: 1000, inFlight: 4, key: false },
    { name: "batch 1000 + idempotency_key, 4 in flight", batch: 1000, inFlight: 4, key: true },
  ]
    .map((p) => ({ ...p, seconds: REST_SEC }))
    .filter((p) => env.BENCH_FEEDS_REST_ONLY === undefined || p.name === env.BENCH_FEEDS_REST_ONLY); // profile one mode
  const lg = loadgen({ mode: "rest", port, ...common, apiKey, phases });
  const rest: unknown[] = [];
  const mine = new CpuMeter(() => [server.pid!, lg.child.pid!, ...(emulatorPid === null ? [] : [emulatorPid])]);
  let cpu = NaN;
  let other = NaN;
  for await (const line of lg.lines) {
    const msg = JSON.parse(line);
    if (msg.event === "start") {
      serverMeter.mark();
      mine.mark();
    } else if (msg.event === "sent") {
      cpu = serverMeter.only();
      other = mine.read()[1];
    } else if (msg.event === "rest") {
      rest.push({ ...msg, serverCpuPct: cpu, otherCpuPct: other });
      process.stderr.write(`  ${msg.name}: ${Math.round(msg.eventsPerSec)} events/s, server ${cpu.toFixed(0)}% cpu, delivered ${msg.delivered}/${msg.published}/${msg.serverCounted}\n`);
    }
  }
  await exited(lg.child);
  results.rest = rest;
}

server.kill("SIGTERM");
const stopTimer = setTimeout(() => server.kill("SIGKILL"), 10_000);
await exited(server);
clearTimeout(stopTimer);
await emulator.stop();
emulatorPid = null;

// ---------- report ----------
const fmt = (n: number) => Math.round(n).toLocaleString("en-US");
const f2 = (n: number) => (Number.isFinite(n) ? n.toFixed(2) : "n/a");
const md: string[] = [];
const commit = spawnSync("git", ["rev-parse", "--short", "HEAD"], { cwd: ROOT, encoding: "utf8" }).stdout.trim();
const dirty = spawnSync("git", ["status", "--porcelain", "src"], { cwd: ROOT, encoding: "utf8" }).stdout.trim().split("\n").filter(Boolean).length;
md.push(`Run of \`bun bench/feeds/run.ts\` at ${startedAt.toISOString().slice(0, 16).replace("T", " ")} UTC, ${Math.round((Date.now() - startedAt.getTime()) / 1000)} s; sinal at ${commit}${dirty ? ` with ${dirty} uncommitted files in src/` : ""}.`, "");
type WriteRes = { write: Stats; writes: number; achievedPerSec?: number; achievedWritesPerSec?: number; emulatorCpuPct: number };
const feedRes = results.feed as
  | (WriteRes & { latency: Stats; beyondWrite: Stats; toPublish: Stats; fromPublish: Stats; expected: number; received: number; receivedAll: number; expectedAll: number; deliveriesCounted: number; repeats: number; offsetGaps: number; offsetDups: number; serverCpuPct: number; otherCpuPct: number; loadgenCpuPct: number; writeErrors: number; subscribers: number; closed: number })
  | undefined;
const base = results.baseline as (WriteRes & { loadgenCpuPct: number }) | undefined;
if (base || feedRes) {
  md.push(`#### Change-to-client latency: ${fmt(SUBSCRIBERS)} subscribers (${fmt(SUBSCRIBERS / DOCS)} on each of ${DOCS} roulette channels), ${fmt(RATE)} updates/s for ${SECONDS} s`, "");
  md.push("| measured | samples | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
  const row = (name: string, s: Stats) => md.push(`| ${name} | ${fmt(s.n)} | ${f2(s.p50)} | ${f2(s.p90)} | ${f2(s.p99)} | ${f2(s.p999)} | ${f2(s.max)} |`);
  if (base) row("emulator write time, no sinal (updateOne start → resolved)", base.write);
  if (feedRes) {
    row("emulator write time while sinal watches", feedRes.write);
    row("**change → client** (updateOne start → frame received)", feedRes.latency);
    row("beyond the write (updateOne resolved → frame received)", feedRes.beyondWrite);
    row("split 1: updateOne start → sinal publishes (frame's `ts`, 1 ms resolution)", feedRes.toPublish);
    row("split 2: sinal publishes → frame received", feedRes.fromPublish);
  }
  md.push("");
  if (base) md.push(`Baseline: ${fmt(base.writes)} writes at ${fmt(base.achievedPerSec!)}/s, emulator CPU ${base.emulatorCpuPct.toFixed(0)}% of a core.`);
  if (feedRes) {
    md.push(
      `With sinal: ${fmt(feedRes.writes)} measured writes at ${fmt(feedRes.achievedWritesPerSec!)}/s (${feedRes.writeErrors} failed). Deliveries (warm-up included): received ${fmt(feedRes.receivedAll)} of ${fmt(feedRes.expectedAll)} expected (one per update per subscriber of its document), sinal counted ${fmt(feedRes.deliveriesCounted)}; offset gaps ${feedRes.offsetGaps}, duplicates ${feedRes.offsetDups}; sockets closed ${feedRes.closed}. Deliveries that showed a document state the subscriber had already seen (updateLookup found a later write to the same document): ${fmt(feedRes.repeats)}. CPU (% of one core): sinal ${feedRes.serverCpuPct.toFixed(0)}%, emulator ${feedRes.emulatorCpuPct.toFixed(0)}%, load generator ${feedRes.loadgenCpuPct.toFixed(0)}%, other processes ${feedRes.otherCpuPct.toFixed(0)}%.`,
    );
    md.push(`p99 beyond the emulator's write time: ${f2(feedRes.beyondWrite.p99)} ms per update (p99 of change→client minus p99 of the write time: ${f2(feedRes.latency.p99 - feedRes.write.p99)} ms); target < 25 ms.`);
  }
  md.push("");
}
const rest = results.rest as
  | { name: string; eventsPerSec: number; requestsPerSec: number; request: Stats; published: number; delivered: number; serverCounted: number; failed: number; firstError: string; serverCpuPct: number; otherCpuPct: number; loadgenCpuPct: number }[]
  | undefined;
if (rest) {
  md.push(`#### REST publish throughput (\`POST /v1/publish\`, one client process, ${REST_SEC} s each, channel roulette:rest, ~100-byte data)`, "");
  md.push("| mode | events/s | requests/s | request p50 ms | request p99 ms | server CPU | server µs CPU per event | load-gen CPU | other CPU | delivered / published / server counted | failed requests |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
  for (const r of rest) {
    md.push(
      `| ${r.name} | ${fmt(r.eventsPerSec)} | ${fmt(r.requestsPerSec)} | ${f2(r.request.p50)} | ${f2(r.request.p99)} | ${r.serverCpuPct.toFixed(0)}% | ${((r.serverCpuPct / 100 / r.eventsPerSec) * 1e6).toFixed(1)} | ${r.loadgenCpuPct.toFixed(0)}% | ${r.otherCpuPct.toFixed(0)}% | ${fmt(r.delivered)} / ${fmt(r.published)} / ${fmt(r.serverCounted)} | ${r.failed}${r.firstError ? ` (${r.firstError.slice(0, 80)})` : ""} |`,
    );
  }
  md.push("");
}
const text = md.join("\n");
mkdirSync(join(ROOT, "bench/results"), { recursive: true });
writeFileSync(join(ROOT, "bench/results/feeds-latest.json"), JSON.stringify({ startedAt, settings: { SUBSCRIBERS, DOCS, RATE, SECONDS, WARMUP_SEC, REST_SEC, EMULATOR_CPUS }, results }, null, 2));
writeFileSync(join(ROOT, "bench/results/feeds-latest.md"), text + "\n");
process.stdout.write(text + "\n");
process.exit(0);
