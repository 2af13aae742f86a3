/**
 * Chat benchmark on sqlite and PostgreSQL (`npm run bench:chat`, issue 12). For each store, one
 * after the other: a fresh sinal on core 0 (sqlite with SQLITE_SYNCHRONOUS=full, or a throwaway
 * PostgreSQL with its durable defaults, also on core 0), 1,000 users in rooms of 10 opened by
 * load-generator processes on core 1 (bench/chat/loadgen.ts), a warm-up step, then
 *   (a) the issue's scenario, every user 1 msg/s, repeated;
 *   (b) a ladder of total rates, each step repeated;
 * every step measuring send-to-receive latency, stored (acknowledged) msg/s, and CPU per stored
 * message of sinal and PostgreSQL (/proc/<pid>/stat) beside the generators' own CPU. Steps report
 * medians and ranges over their repeats. Writes bench/results/chat-<time>.{json,md} and
 * chat-latest.{json,md}, and prints the markdown. Everything stops by BENCH_CHAT_DEADLINE_SEC.
 */
import { Database } from "bun:sqlite";
import { SQL } from "bun";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { BUN, ROOT, cpuTicks, exited, loadavg, machineBusyTicks, schedMs, startSinal } from "../lib/proc.ts";
import { startBenchPostgres, type BenchPostgres } from "../lib/postgres.ts";
import { Histogram, type HistogramJSON } from "./histogram.ts";
import { renderChat, summarize, type ChatReport, type Step, type StoreRun } from "./report.ts";

const num = (name: string, fallback: number) => Number(process.env[name] ?? fallback);
const S = {
  stores: (process.env.BENCH_CHAT_STORES ?? "sqlite,postgres").split(",") as StoreRun["store"][],
  users: num("BENCH_CHAT_USERS", 1000),
  roomSize: 10,
  workers: num("BENCH_CHAT_WORKERS", 2),
  warmupSec: num("BENCH_CHAT_WARMUP_SEC", 5),
  warmupRate: num("BENCH_CHAT_WARMUP_RATE", 2000),
  scenarioSec: num("BENCH_CHAT_SCENARIO_SEC", 5),
  repeats: num("BENCH_CHAT_REPEATS", 3),
  rates: (process.env.BENCH_CHAT_RATES ?? "2000,5000,10000,15000,20000").split(",").map(Number),
  stepSec: num("BENCH_CHAT_STEP_SEC", 4),
  drainSec: num("BENCH_CHAT_DRAIN_SEC", 8),
  idleSec: num("BENCH_CHAT_IDLE_SEC", 3),
  pauseSec: num("BENCH_CHAT_PAUSE_SEC", 0.5),
  deadlineSec: num("BENCH_CHAT_DEADLINE_SEC", 900),
  synchronous: process.env.SQLITE_SYNCHRONOUS ?? "full",
  /** The checkout whose src/main.ts runs (default this one), e.g. a copy with a change to try. */
  root: process.env.BENCH_CHAT_ROOT ?? ROOT,
  /** Extra sinal settings, e.g. "PG_POOL_SIZE=20 COMMIT_INTERVAL_MS=8". */
  sinalEnv: process.env.BENCH_CHAT_SINAL_ENV ?? "",
  serverCpus: "0", // startSinal pins sinal to core 0
  /** PostgreSQL's cores: by default sinal's, so both stores get one core for the server side. */
  pgCpus: process.env.BENCH_CHAT_PG_CPUS ?? "0",
  loadgenCpus: process.env.BENCH_CHAT_LOADGEN_CPUS ?? "1",
};
/** A ladder step this far behind (median stored < 70% of offered, or p99 over 2 s) ends the ladder. */
const GIVE_UP = { storedShare: 0.7, p99Ms: 2000 };

const children = new Set<ChildProcess>();
const tempDirs = new Set<string>();
const killAll = () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
};
process.on("exit", killAll);
process.on("SIGINT", () => process.exit(130));
process.on("SIGTERM", () => process.exit(143));
setTimeout(() => {
  process.stderr.write(`bench/chat: deadline of ${S.deadlineSec} s passed, stopping\n`);
  process.exit(1);
}, S.deadlineSec * 1000).unref();

/** Lines of a child's stdout, parsed, handed out one at a time. */
class Lines {
  private queue: unknown[] = [];
  private waiting: ((line: unknown) => void) | null = null;
  constructor(child: ChildProcess) {
    createInterface({ input: child.stdout! }).on("line", (line) => {
      const parsed = JSON.parse(line) as unknown;
      if (this.waiting) {
        const w = this.waiting;
        this.waiting = null;
        w(parsed);
      } else this.queue.push(parsed);
    });
  }
  next<T>(timeoutMs: number, what: string): Promise<T> {
    if (this.queue.length) return Promise.resolve(this.queue.shift() as T);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${what} from the load generator within ${timeoutMs / 1000} s`)), timeoutMs);
      this.waiting = (line) => (clearTimeout(timer), resolve(line as T));
    });
  }
}

interface WorkerLine {
  sent: number;
  sendSec: number;
  acked: number;
  errors: number;
  delivered: number;
  expected: number;
  drained: boolean;
  lastAckSec: number;
  wallSec: number;
  cpuMs: number;
  histogram: HistogramJSON;
}

async function runStore(store: StoreRun["store"]): Promise<StoreRun> {
  const run: StoreRun = { store, description: "", loadBefore: loadavg(), loadAfter: "", steps: [], skippedRates: [], storedInDb: null, ackedTotal: 0, idleSinalCpuPct: Number.NaN, idlePostgresCpuPct: Number.NaN };
  const dir = mkdtempSync(join(tmpdir(), "sinal-chat-bench-"));
  tempDirs.add(dir);
  let pg: BenchPostgres | null = null;
  const workers: { child: ChildProcess; lines: Lines; share: number }[] = [];
  let sinal: ChildProcess | null = null;
  let sinalOut: string[] = [];
  try {
    const secret = randomBytes(32).toString("base64url");
    const env: Record<string, string> = { JWT_SECRET: secret, ...Object.fromEntries(S.sinalEnv.split(" ").filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)])) };
    if (store === "postgres") {
      pg = await startBenchPostgres(S.pgCpus);
      env.DATABASE_URL = pg.url;
      run.description = `PostgreSQL (${pg.settings})`;
    } else {
      env.DATABASE_URL = `sqlite:${join(dir, "chat.db")}`;
      env.SQLITE_SYNCHRONOUS = S.synchronous;
      run.description = `sqlite, SQLITE_SYNCHRONOUS=${S.synchronous} (WAL)`;
    }
    if (S.sinalEnv) run.description += `, ${S.sinalEnv}`;
    if (S.root !== ROOT) run.description += `, sinal from ${S.root}`;
    process.stderr.write(`bench/chat: ${run.description}\n`);
    const started = await startSinal(children, env, (process.env.BENCH_CHAT_BUN_FLAGS ?? "").split(" ").filter(Boolean), { root: S.root });
    sinalOut = started.out;
    sinal = started.child;
    const sinalPid = sinal.pid!;

    const rooms = Math.ceil(S.users / S.roomSize);
    for (let w = 0; w < S.workers; w++) {
      const config = { url: `ws://127.0.0.1:${started.port}/ws`, secret, tenant: "bench", users: S.users, roomSize: S.roomSize, worker: w, workers: S.workers };
      const child = spawn("taskset", ["-c", S.loadgenCpus, BUN, "bench/chat/loadgen.ts", JSON.stringify(config)], { cwd: ROOT, stdio: ["pipe", "pipe", "inherit"] });
      children.add(child);
      let users = 0;
      for (let r = w; r < rooms; r += S.workers) users += Math.min(S.roomSize, S.users - r * S.roomSize);
      workers.push({ child, lines: new Lines(child), share: users / S.users });
    }
    for (const w of workers) await w.lines.next(60_000, "ready line");

    // Idle baseline: what sinal (and PostgreSQL) use with every user connected and nobody
    // sending (timers, sweeps, pings), so the CPU per message can be read net of it.
    const idle0 = [cpuTicks(sinalPid), pg?.cpuTicks() ?? 0, performance.now()] as const;
    await Bun.sleep(S.idleSec * 1000);
    const idleWall = (performance.now() - idle0[2]) / 1000;
    run.idleSinalCpuPct = (cpuTicks(sinalPid) - idle0[0]) / idleWall;
    run.idlePostgresCpuPct = ((pg?.cpuTicks() ?? 0) - idle0[1]) / idleWall;
    process.stderr.write(`  ${store} idle: sinal ${run.idleSinalCpuPct.toFixed(1)}%, pg ${run.idlePostgresCpuPct.toFixed(1)}%\n`);

    const step = async (kind: Step["kind"], offered: number, seconds: number, repeat: number): Promise<Step> => {
      const t0 = performance.now();
      const [s0, p0, m0, q0] = [cpuTicks(sinalPid), pg?.cpuTicks() ?? 0, machineBusyTicks(), schedMs(sinalPid).waitMs];
      // The same readings at the planned end of sending: CPU while the load was on, without the tail.
      let atSendEnd = { ds: Number.NaN, dp: Number.NaN, dm: Number.NaN, dq: Number.NaN, wall: Number.NaN };
      const sendEndTimer = setTimeout(() => {
        atSendEnd = { ds: cpuTicks(sinalPid) - s0, dp: (pg?.cpuTicks() ?? 0) - p0, dm: machineBusyTicks() - m0, dq: schedMs(sinalPid).waitMs - q0, wall: (performance.now() - t0) / 1000 };
      }, seconds * 1000);
      for (const w of workers) w.child.stdin!.write(JSON.stringify({ rate: offered * w.share, seconds, drainSec: S.drainSec }) + "\n");
      const lines = await Promise.all(workers.map((w) => w.lines.next<WorkerLine>((seconds + S.drainSec + 30) * 1000, "step result")));
      clearTimeout(sendEndTimer);
      const wall = (performance.now() - t0) / 1000;
      const [ds, dp, dm, dq] = [cpuTicks(sinalPid) - s0, (pg?.cpuTicks() ?? 0) - p0, machineBusyTicks() - m0, schedMs(sinalPid).waitMs - q0];
      const hist = new Histogram();
      for (const l of lines) hist.merge(l.histogram);
      const sum = (f: (l: WorkerLine) => number) => lines.reduce((n, l) => n + f(l), 0);
      const acked = sum((l) => l.acked);
      const loadgenTicks = sum((l) => l.cpuMs) / 10;
      const pct = (ticks: number) => ticks / wall; // ticks are 1/100 s: ticks per second = percent of a core
      const us = (ticks: number) => (acked > 0 ? (ticks * 10_000) / acked : Number.NaN);
      const result: Step = {
        kind,
        offered,
        repeat,
        sent: sum((l) => l.sent),
        sendRate: sum((l) => l.sent) / Math.max(...lines.map((l) => l.sendSec)),
        acked,
        errors: sum((l) => l.errors),
        delivered: sum((l) => l.delivered),
        expected: sum((l) => l.expected),
        drained: lines.every((l) => l.drained),
        storedPerSec: acked > 0 ? acked / Math.max(...lines.map((l) => l.lastAckSec)) : 0,
        latencySamples: hist.count,
        p50: hist.percentile(50),
        p99: hist.percentile(99),
        max: hist.max,
        wallSec: wall,
        sinalCpuPct: pct(ds),
        postgresCpuPct: pct(dp),
        loadgenCpuPct: pct(loadgenTicks),
        otherCpuPct: pct(dm - ds - dp - loadgenTicks),
        sinalWaitPct: dq / (wall * 10),
        sending: {
          sinalCpuPct: atSendEnd.ds / atSendEnd.wall,
          postgresCpuPct: atSendEnd.dp / atSendEnd.wall,
          otherCpuPct: (atSendEnd.dm - atSendEnd.ds - atSendEnd.dp) / atSendEnd.wall - sum((l) => l.cpuMs) / 10 / wall,
          sinalWaitPct: atSendEnd.dq / (atSendEnd.wall * 10),
        },
        sinalUsPerMsg: us(ds),
        postgresUsPerMsg: us(dp),
        serverUsPerMsg: us(ds + dp),
        serverUsPerMsgNet: us(ds + dp - (run.idleSinalCpuPct + run.idlePostgresCpuPct) * wall),
      };
      run.steps.push(result);
      run.ackedTotal += acked;
      process.stderr.write(
        `  ${store} ${kind} ${offered} #${repeat}: while sending sinal ${result.sending.sinalCpuPct.toFixed(0)}% pg ${result.sending.postgresCpuPct.toFixed(0)}% waited ${result.sending.sinalWaitPct.toFixed(0)}%; stored ${Math.round(result.storedPerSec)}/s, p50 ${result.p50.toFixed(2)} ms, p99 ${result.p99.toFixed(2)} ms, ` +
          `sinal ${result.sinalCpuPct.toFixed(0)}%, pg ${result.postgresCpuPct.toFixed(0)}%, loadgen ${result.loadgenCpuPct.toFixed(0)}%, sinal waited ${result.sinalWaitPct.toFixed(0)}%, other ${result.otherCpuPct.toFixed(0)}%, ${result.serverUsPerMsg.toFixed(0)} µs/msg (${result.serverUsPerMsgNet.toFixed(0)} net of idle)${result.drained ? "" : " (not drained)"}\n`,
      );
      await Bun.sleep(S.pauseSec * 1000);
      return result;
    };

    // A step whose tail did not arrive within drainSec would leave its backlog to the next one:
    // the store's run ends there, and what was not measured is named.
    const behind = (x: Step) => !x.drained;
    measure: {
      if (behind(await step("warm-up", S.warmupRate, S.warmupSec, 1))) {
        run.stopped = `the warm-up (${S.warmupRate} msg/s) did not drain within ${S.drainSec} s; nothing else measured`;
        break measure;
      }
      for (let i = 1; i <= S.repeats; i++) {
        if (behind(await step("scenario", S.users, S.scenarioSec, i))) {
          run.stopped = `scenario repeat ${i} did not drain within ${S.drainSec} s; the ladder was not run`;
          break measure;
        }
      }
      for (const [at, rate] of S.rates.entries()) {
        for (let i = 1; i <= S.repeats; i++) {
          if (behind(await step("ladder", rate, S.stepSec, i))) {
            run.stopped = `${rate} msg/s repeat ${i} did not drain within ${S.drainSec} s; higher rates not run`;
            run.skippedRates = S.rates.slice(at + 1);
            break measure;
          }
        }
        const x = summarize(run.steps, "ladder").find((y) => y.offered === rate)!;
        if (!(x.stored >= GIVE_UP.storedShare * rate && x.p99 <= GIVE_UP.p99Ms)) {
          run.stopped = `${rate} msg/s stored a median ${Math.round(x.stored)}/s with p99 ${x.p99.toFixed(0)} ms; higher rates not run`;
          run.skippedRates = S.rates.slice(at + 1);
          break measure;
        }
      }
    }
  } catch (err) {
    run.failure = err instanceof Error ? err.message : String(err);
    process.stderr.write(`bench/chat: ${store} failed: ${run.failure}\n`);
  } finally {
    for (const w of workers) w.child.stdin!.end();
    for (const w of workers) if ((await exited(w.child, 10_000)) === null) w.child.kill("SIGKILL");
    if (sinal) {
      sinal.kill("SIGTERM");
      if ((await exited(sinal, 15_000)) === null) sinal.kill("SIGKILL");
    }
    try {
      if (store === "sqlite") {
        const db = new Database(join(dir, "chat.db"), { readonly: true });
        run.storedInDb = (db.query("select count(*) as n from messages").get() as { n: number }).n;
        db.close();
      } else if (pg) {
        const sql = new SQL(pg.url);
        run.storedInDb = Number((await sql`select count(*)::int as n from messages`)[0].n);
        await sql.close();
      }
    } catch (err) {
      process.stderr.write(`bench/chat: could not count the stored messages: ${err}\n`);
    }
    const logged = sinalOut.join("").trim();
    if (logged) {
      run.sinalOutput = logged.slice(-3000);
      process.stderr.write(`bench/chat: sinal (${store}) wrote:\n${run.sinalOutput}\n`);
    }
    pg?.stop();
    rmSync(dir, { recursive: true, force: true });
    run.loadAfter = loadavg();
  }
  return run;
}

const sh = (cmd: string, args: string[]) => spawnSync(cmd, args, { encoding: "utf8", cwd: ROOT }).stdout?.trim() ?? "";
const report: ChatReport = {
  startedAt: new Date().toISOString(),
  finishedAt: "",
  machine: {
    nproc: cpus().length,
    cpu: cpus()[0]?.model ?? "?",
    kernel: sh("uname", ["-r"]),
    tmpfs: sh("df", ["--output=fstype", tmpdir()]).split("\n").at(-1) ?? "?",
    bun: Bun.version,
    commit: sh("git", ["rev-parse", "--short", "HEAD"]) + (sh("git", ["status", "--porcelain", "src"]) ? " (src/ modified)" : ""),
  },
  settings: { ...S, stores: S.stores.join(","), rates: S.rates.join(", ") },
  loadBefore: loadavg(),
  loadAfter: "",
  stores: [],
};
for (const store of S.stores) report.stores.push(await runStore(store));
report.loadAfter = loadavg();
report.finishedAt = new Date().toISOString();

const md = renderChat(report);
const dirOut = join(ROOT, "bench/results");
mkdirSync(dirOut, { recursive: true });
const stamp = report.startedAt.slice(0, 19).replace(/[:T]/g, "-");
for (const name of [`chat-${stamp}`, "chat-latest"]) {
  writeFileSync(join(dirOut, `${name}.json`), JSON.stringify(report, null, 2));
  writeFileSync(join(dirOut, `${name}.md`), md + "\n");
}
process.stdout.write(md + "\n");
process.exit(report.stores.some((x) => x.failure) ? 1 : 0);
