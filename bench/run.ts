/**
 * The benchmark orchestrator (`npm run bench` → bench/run.sh → this file).
 *
 * For each server under test (sinal, bare Bun.serve, Node ws, Socket.IO), on a fresh server
 * process pinned to core 0 with the load generator pinned to core 1:
 *   1. fan-out: 1 publisher → N subscribers of one channel; max throughput, then a fixed offered load;
 *   2. idle memory: RSS of the server before and after M idle authenticated connections, opened
 *      by several load-generator processes (a process may hold at most ~20,000 open files).
 * Writes bench/results/<stamp>/results.{json,md} and bench/results/latest.{json,md}, and prints
 * the markdown report. Every load targets 127.0.0.1 and every phase is bounded in time.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { appendFileSync, copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, release } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { CHANNEL, makeTarget, TARGETS, type TargetName } from "./lib/targets.ts";
import { renderReport, type FanoutPhase, type MemoryResult, type Report } from "./lib/report.ts";

const ROOT = resolve(import.meta.dir, "..");
const BUN = join(ROOT, "node_modules/.bin/bun");
const RESULTS = join(ROOT, "bench/results");
const PIDFILE = join(RESULTS, ".children");
const HOST = "127.0.0.1";
const SERVER_CPU = "0";
const LOADGEN_CPU = "1";

function envInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name} must be a non-negative number, got "${raw}"`);
  return n;
}

const settings = {
  channel: CHANNEL,
  sinalExtraEnv: process.env.BENCH_SINAL_ENV ?? "",
  targets: (process.env.BENCH_TARGETS ?? TARGETS.join(",")).split(",").map((t) => t.trim()) as TargetName[],
  subscribers: envInt("BENCH_SUBSCRIBERS", 1000),
  payloadBytes: envInt("BENCH_PAYLOAD_BYTES", 100),
  /** Rounds for sinal and bare Bun (the pair the targets compare), and for the Node references. */
  rounds: Math.max(1, envInt("BENCH_ROUNDS", 5)),
  referenceRounds: Math.max(1, envInt("BENCH_REF_ROUNDS", 3)),
  warmupSec: envInt("BENCH_WARMUP_SEC", 2),
  maxSec: envInt("BENCH_MAX_SEC", 4),
  window: envInt("BENCH_WINDOW", 256),
  fixedDeliveriesPerSec: envInt("BENCH_FIXED_DELIVERIES_PER_SEC", 100_000),
  fixedSec: envInt("BENCH_FIXED_SEC", 4),
  idleConnections: envInt("BENCH_IDLE_CONNECTIONS", 10_000),
  idleProcesses: envInt("BENCH_IDLE_PROCESSES", 2),
  idleSettleSec: envInt("BENCH_IDLE_SETTLE_SEC", 5),
  /** Latency in the max phase is recorded for every k-th subscriber (recording costs the load generator). */
  maxLatencyEvery: envInt("BENCH_MAX_LATENCY_EVERY", 10),
  /**
   * Other sessions may build and test on this machine. Before each server start and each measured
   * phase, wait at most quietWaitSec until other processes use under quietPct of a core; a phase
   * they disturbed anyway is repeated, `attempts` times at most, and the least disturbed is kept.
   */
  quietWaitSec: envInt("BENCH_QUIET_WAIT_SEC", 10),
  quietPct: envInt("BENCH_QUIET_PCT", 15),
  attempts: Math.max(1, envInt("BENCH_ATTEMPTS", 2)),
};
for (const t of settings.targets) if (!TARGETS.includes(t)) throw new Error(`BENCH_TARGETS: unknown target "${t}" (${TARGETS.join(", ")})`);

const log = (msg: string) => process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// ---------------------------------------------------------------- child processes and clean-up

const children = new Set<ChildProcess>();

function track(child: ChildProcess): ChildProcess {
  children.add(child);
  if (child.pid !== undefined) appendFileSync(PIDFILE, `${child.pid}\n`);
  child.once("exit", () => children.delete(child));
  return child;
}

function killAll(): void {
  for (const child of children) {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }
}
process.on("exit", killAll);
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(signal, () => {
    log(`${signal}: stopping every child process`);
    killAll();
    process.exit(130);
  });
}

function exited(child: ChildProcess, timeoutMs: number): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(null), timeoutMs);
    child.once("exit", (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
}

/** SIGTERM, then SIGKILL after `graceMs`; returns the exit code (null when it had to be killed). */
async function stop(child: ChildProcess, graceMs = 10_000): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
  child.kill("SIGTERM");
  const code = await exited(child, graceMs);
  if (child.exitCode === null && child.signalCode === null) {
    child.kill("SIGKILL");
    await exited(child, 2000);
  }
  return code;
}

/** Stdout JSON lines of a child, as they come. */
function jsonLines(child: ChildProcess, onLine: (obj: Record<string, unknown>) => void): void {
  createInterface({ input: child.stdout! }).on("line", (line) => {
    if (!line.startsWith("{")) return;
    try {
      onLine(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // not ours
    }
  });
}

// ---------------------------------------------------------------- machine

/**
 * A port that a server can listen on without SO_REUSEADDR (Bun.serve): below the ephemeral range
 * (32768+), so no client socket of an earlier phase lingers on it in TIME_WAIT, and not used yet
 * in this run (a server that closed connections itself leaves TIME_WAIT on its port).
 */
const usedPorts = new Set<number>();
function freePort(): number {
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = 20000 + Math.floor(Math.random() * 12000);
    if (usedPorts.has(port)) continue;
    usedPorts.add(port);
    try {
      const probe = Bun.listen({ hostname: HOST, port, socket: { data() {} } });
      probe.stop(true);
      return port;
    } catch {
      // taken; try another
    }
  }
  throw new Error("no free port found in 20000-32000");
}

function busySec(): number {
  const v = readFileSync("/proc/stat", "utf8").split("\n", 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
  return (v.slice(0, 8).reduce((a, b) => a + b, 0) - v[3]! - v[4]!) / 100;
}

/** CPU used by the whole machine over `ms`, in % of one core. */
async function machineLoadPct(ms: number): Promise<number> {
  const b0 = busySec();
  await sleep(ms);
  return ((busySec() - b0) / (ms / 1000)) * 100;
}

/** Waits until the machine is quiet (other sessions' builds and tests would skew every figure). */
async function waitQuiet(): Promise<number> {
  const until = Date.now() + settings.quietWaitSec * 1000;
  let load = await machineLoadPct(1000);
  while (load > settings.quietPct && Date.now() < until) {
    log(`machine busy (${load.toFixed(0)}% of a core used by other processes); waiting for quiet`);
    load = await machineLoadPct(2000);
  }
  if (load > settings.quietPct) log(`machine still busy (${load.toFixed(0)}%) after ${settings.quietWaitSec} s; going on, figures may be skewed`);
  return Math.round(load);
}

function processCpuSec(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function rssKb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) : Number.NaN;
}

function versionOf(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "ignore"] });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.on("exit", () => resolve(out.trim()));
    child.on("error", () => resolve("unavailable"));
  });
}

// ---------------------------------------------------------------- servers

const secret = randomBytes(32).toString("base64url");
const apiKey = `sk_bench_${randomBytes(16).toString("hex")}`;

interface RunningServer {
  target: TargetName;
  port: number;
  child: ChildProcess;
  pid: number;
  stderr: string[];
}

function serverCommand(target: TargetName, port: number, dbDir: string): { cmd: string[]; env: Record<string, string>; ready: string } {
  switch (target) {
    case "sinal":
      return {
        // BENCH_SINAL_BUN_FLAGS: e.g. "--cpu-prof-md --cpu-prof-dir=/tmp/prof" to profile sinal
        cmd: [BUN, ...(process.env.BENCH_SINAL_BUN_FLAGS ?? "").split(" ").filter(Boolean), "src/main.ts", "serve"],
        env: {
          JWT_SECRET: secret,
          PORT: String(port),
          HOST,
          DATABASE_URL: `sqlite:${join(dbDir, "bench.db")}`,
          LOG_LEVEL: "warn",
          MAX_CONNECTIONS_PER_USER: "100000",
          MAX_CONNECTIONS_PER_TENANT: "100000",
          // the publisher sends thousands of frames per second over its one socket
          RATE_LIMIT_PER_SEC: "1000000",
          RATE_LIMIT_BURST: "1000000",
          SINAL_API_KEYS: `bench:${apiKey}`,
          // experiments: extra settings for sinal, e.g. BENCH_SINAL_ENV="SWEEP_INTERVAL_MS=1000"
          ...Object.fromEntries(
            (process.env.BENCH_SINAL_ENV ?? "")
              .split(",")
              .filter((kv) => kv.includes("="))
              .map((kv) => [kv.slice(0, kv.indexOf("=")).trim(), kv.slice(kv.indexOf("=") + 1).trim()]),
          ),
        },
        ready: "/health",
      };
    case "bun":
      return { cmd: [BUN, "bench/servers/bun-bare.ts"], env: { PORT: String(port) }, ready: "/stats" };
    case "ws":
      return { cmd: ["node", "bench/servers/node-ws.mjs"], env: { PORT: String(port) }, ready: "/stats" };
    case "socketio":
      return { cmd: ["node", "bench/servers/socketio.mjs"], env: { PORT: String(port) }, ready: "/stats" };
  }
}

let serverStarts = 0;
let logDir = RESULTS;

async function startServer(target: TargetName, dbDir: string): Promise<RunningServer> {
  const port = freePort();
  const { cmd, env, ready } = serverCommand(target, port, dbDir);
  const child = track(
    spawn("taskset", ["-c", SERVER_CPU, ...cmd], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/tmp", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    }),
  );
  const stderr: string[] = [];
  // the server's own output (sinal logs warnings and errors as JSON lines) goes to the results folder
  const logFile = join(logDir, `${target}-${++serverStarts}.log`);
  child.stderr!.on("data", (d: Buffer) => {
    if (stderr.length < 50) stderr.push(d.toString());
    appendFileSync(logFile, d);
  });
  child.stdout!.on("data", (d: Buffer) => appendFileSync(logFile, d));
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`${target} server exited with ${child.exitCode}: ${stderr.join("").slice(0, 2000)}`);
    try {
      const res = await fetch(`http://${HOST}:${port}${ready}`);
      if (res.ok) return { target, port, child, pid: child.pid!, stderr };
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  await stop(child, 1000);
  throw new Error(`${target} server did not answer ${ready} within 20 s`);
}

async function stopServer(server: RunningServer): Promise<number | null> {
  const code = await stop(server.child);
  if (code !== 0) log(`${server.target} server exit code ${code}${server.stderr.length ? `; stderr: ${server.stderr.join("").slice(0, 500)}` : ""}`);
  return code;
}

function loadgen(command: "fanout" | "idle", config: Record<string, unknown>): ChildProcess {
  return track(
    spawn("taskset", ["-c", LOADGEN_CPU, BUN, "bench/loadgen.ts", command, JSON.stringify(config)], {
      cwd: ROOT,
      stdio: ["pipe", "pipe", "inherit"],
    }),
  );
}

// ---------------------------------------------------------------- phases

async function runFanout(target: TargetName, dbDir: string): Promise<FanoutPhase[]> {
  const otherBefore = await waitQuiet();
  const server = await startServer(target, dbDir);
  const phases: FanoutPhase[] = [];
  try {
    const fixedRate = Math.max(1, Math.round(settings.fixedDeliveriesPerSec / settings.subscribers));
    const budget = settings.warmupSec + settings.attempts * (settings.maxSec + settings.fixedSec + 2 * settings.quietWaitSec + 12) + 60;
    const child = loadgen("fanout", {
      target,
      host: HOST,
      port: server.port,
      secret,
      serverPid: server.pid,
      concurrency: 100,
      deadlineSec: budget,
      subscribers: settings.subscribers,
      payloadBytes: settings.payloadBytes,
      warmupSec: settings.warmupSec,
      maxSec: settings.maxSec,
      window: settings.window,
      maxLatencyEvery: settings.maxLatencyEvery,
      fixedRate,
      fixedSec: settings.fixedSec,
      quietPct: settings.quietPct,
      attempts: settings.attempts,
      quietWaitSec: settings.quietWaitSec,
    });
    let error: string | null = null;
    jsonLines(child, (obj) => {
      if (obj.event === "phase") phases.push({ ...(obj as unknown as FanoutPhase), other_cpu_before_pct: otherBefore });
      if (obj.event === "error") error = String(obj.message);
    });
    const code = await exited(child, (budget + 10) * 1000);
    if (code === null) {
      await stop(child, 1000);
      throw new Error(`${target} fan-out load generator overran its time budget`);
    }
    if (code !== 0 || error !== null) throw new Error(`${target} fan-out load generator failed (exit ${code}): ${error ?? "see its stderr above"}`);
  } finally {
    await stopServer(server);
  }
  return phases;
}

async function runMemory(target: TargetName, dbDir: string): Promise<MemoryResult> {
  await waitQuiet();
  const server = await startServer(target, dbDir);
  const procs: ChildProcess[] = [];
  try {
    await sleep(1000);
    const rssBefore = rssKb(server.pid);
    const perProc = Math.ceil(settings.idleConnections / settings.idleProcesses);
    const readies: Record<string, unknown>[] = [];
    const all = Promise.all(
      Array.from({ length: settings.idleProcesses }, (_, i) => {
        const count = Math.min(perProc, settings.idleConnections - i * perProc);
        const child = loadgen("idle", {
          target,
          host: HOST,
          port: server.port,
          secret,
          serverPid: server.pid,
          concurrency: 100,
          deadlineSec: 240,
          count,
          offset: i * perProc,
        });
        procs.push(child);
        return new Promise<void>((resolve, reject) => {
          jsonLines(child, (obj) => {
            if (obj.event === "ready") {
              readies.push(obj);
              resolve();
            }
            if (obj.event === "error") reject(new Error(String(obj.message)));
          });
          child.once("exit", (code) => reject(new Error(`idle load generator exited early (${code})`)));
        });
      }),
    );
    const timeout = sleep(180_000).then(() => {
      throw new Error(`${target}: idle connections not open within 180 s`);
    });
    await Promise.race([all, timeout]);
    const connected = readies.reduce((n, r) => n + Number(r.connected), 0);
    const failed = readies.reduce((n, r) => n + Number(r.failed), 0);
    const openSeconds = Math.max(...readies.map((r) => Number(r.seconds)));
    // RSS once a second while the connections sit idle; the last sample is the figure
    const samples: number[] = [];
    const cpu0 = processCpuSec(server.pid);
    const t0 = performance.now();
    for (let i = 0; i < Math.max(1, settings.idleSettleSec); i++) {
      await sleep(1000);
      samples.push(rssKb(server.pid));
    }
    // CPU the server spends while every connection is idle (timers, sweeps, pings)
    const idleCpuPct = Math.round(((processCpuSec(server.pid) - cpu0) / ((performance.now() - t0) / 1000)) * 1000) / 10;
    const rssAfter = samples[samples.length - 1]!;
    let serverConnections: number | null = null;
    try {
      serverConnections = (await makeTarget(target, secret).counters(HOST, server.port)).connections;
    } catch {
      // reported as unknown
    }
    const deltaKb = rssAfter - rssBefore;
    const result: MemoryResult = {
      target,
      requested: settings.idleConnections,
      connected,
      failed,
      errors: readies.flatMap((r) => (r.errors as string[]) ?? []).slice(0, 3),
      open_seconds: openSeconds,
      server_connections: serverConnections,
      rss_before_kb: rssBefore,
      rss_after_kb: rssAfter,
      rss_samples_kb: samples,
      idle_cpu_pct: idleCpuPct,
      mb_per_1000: connected > 0 ? Math.round((deltaKb / 1024 / (connected / 1000)) * 100) / 100 : Number.NaN,
    };
    log(`${target} idle: ${connected} connected (${failed} failed) in ${openSeconds} s, RSS ${rssBefore} → ${rssAfter} kB = ${result.mb_per_1000} MB per 1,000, server CPU while idle ${idleCpuPct}%`);
    return result;
  } finally {
    for (const p of procs) await stop(p, 5000);
    await stopServer(server);
  }
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  mkdirSync(RESULTS, { recursive: true });
  writeFileSync(PIDFILE, "");
  if (cpus().length < 2) throw new Error("the benchmark pins the server and the load generator to separate cores; this machine has one");
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  const outDir = join(RESULTS, stamp);
  const dbDir = join(outDir, "db");
  mkdirSync(dbDir, { recursive: true });
  logDir = join(outDir, "logs");
  mkdirSync(logDir, { recursive: true });

  const cpuModel = /model name\s*:\s*(.*)/.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1] ?? "unknown";
  const report: Report = {
    started_at: new Date().toISOString(),
    machine: {
      nproc: cpus().length,
      cpu_model: cpuModel,
      kernel: release(),
      memory_gb: Math.round((Number(/MemTotal:\s+(\d+)/.exec(readFileSync("/proc/meminfo", "utf8"))?.[1]) / 1024 / 1024) * 10) / 10,
      bun: await versionOf(BUN, ["--version"]),
      node: await versionOf("node", ["--version"]),
      ws: JSON.parse(readFileSync(join(ROOT, "node_modules/ws/package.json"), "utf8")).version,
      socket_io: JSON.parse(readFileSync(join(ROOT, "node_modules/socket.io/package.json"), "utf8")).version,
      commit: await versionOf("git", ["rev-parse", "--short", "HEAD"]),
      // sinal is run from the working tree: say whether it differed from the commit
      src_changes: (await versionOf("git", ["status", "--porcelain", "--", "src"])).split("\n").filter(Boolean).length,
    },
    settings,
    fanout: [],
    memory: [],
    failures: [],
  };
  log(`targets ${settings.targets.join(", ")}; ${settings.rounds} rounds of fan-out (${settings.referenceRounds} for ws and socketio); results in ${outDir}`);
  // Rounds interleave the servers (and alternate their order) so that a slow spell of this shared
  // machine does not land on one server only; the report gives medians over the rounds.
  const totalRounds = Math.max(settings.rounds, settings.referenceRounds);
  for (let round = 1; round <= totalRounds; round++) {
    const order = (round % 2 === 1 ? settings.targets : [...settings.targets].reverse()).filter((t) =>
      t === "sinal" || t === "bun" ? round <= settings.rounds : round <= settings.referenceRounds,
    );
    for (const target of order) {
      try {
        log(`round ${round}/${totalRounds}, ${target}: fan-out to ${settings.subscribers}`);
        for (const p of await runFanout(target, dbDir)) report.fanout.push({ ...p, round });
      } catch (err) {
        log(`${target}: fan-out FAILED: ${(err as Error).message}`);
        report.failures.push({ target, phase: `fanout round ${round}`, message: (err as Error).message });
      }
    }
  }
  for (const target of settings.idleConnections > 0 ? settings.targets : []) {
    try {
      log(`${target}: ${settings.idleConnections} idle connections`);
      report.memory.push(await runMemory(target, dbDir));
    } catch (err) {
      log(`${target}: idle memory FAILED: ${(err as Error).message}`);
      report.failures.push({ target, phase: "memory", message: (err as Error).message });
    }
  }
  report.finished_at = new Date().toISOString();
  const markdown = renderReport(report);
  writeFileSync(join(outDir, "results.json"), `${JSON.stringify(report, null, 2)}\n`);
  writeFileSync(join(outDir, "results.md"), markdown);
  copyFileSync(join(outDir, "results.json"), join(RESULTS, "latest.json"));
  copyFileSync(join(outDir, "results.md"), join(RESULTS, "latest.md"));
  process.stdout.write(`${markdown}\nResults: ${join(outDir, "results.md")} (and bench/results/latest.md)\n`);
  if (report.failures.length > 0) process.exitCode = 1;
}

main()
  .catch((err: unknown) => {
    log(`failed: ${(err as Error).stack ?? String(err)}`);
    process.exitCode = 1;
  })
  .finally(() => killAll());
