/**
 * Several nodes (`npm run bench:cluster`, issue 13): sinal as a cluster (REDIS_URL + a PostgreSQL
 * DATABASE_URL) on one machine, in three parts, each on fresh processes:
 *
 *   1. fanout   1 publisher on node A → 1,000 subscribers spread over 3 nodes (round-robin),
 *               against the same load on ONE node without Redis (memory broker, same PostgreSQL).
 *               bench/loadgen.ts's fan-out (max throughput with a window, then a fixed rate with
 *               the latency of every delivery; publisher and subscribers in its one process, so
 *               send and receive times come from one clock). Rounds alternate the order.
 *   2. publish  publications/s with history through one Redis: bench/cluster/publisher.ts keeps
 *               many WebSocket `publish` frames in flight over roulette channels (history 20, 2 min,
 *               kept in Redis by one Lua script per publication); then bench/cluster/lua.ts calls
 *               that same script straight through ioredis, to split the ceiling between Redis and sinal.
 *   3. idle     as many idle authenticated connections as the machine allows over 6 nodes (node i on
 *               127.0.0.<i+1>), one load-generator process per node; time to open them all, RSS per
 *               1,000 per node, CPU while idle; then bare Bun (bench/servers/bun-bare.ts) with one
 *               node's share, for its RSS per 1,000 in the same run.
 *
 * Redis (test/support/redis.ts) and PostgreSQL (bench/lib/postgres.ts, durable defaults) are
 * throwaway servers started here. Every child is stopped on exit, on failure and on Ctrl-C; the
 * whole run stops at BENCH_CLUSTER_DEADLINE_SEC. Writes bench/results/cluster-<time>.{json,md}
 * and cluster-latest.{json,md}, and prints the markdown.
 *
 * Settings (environment, defaults in brackets):
 *   BENCH_CLUSTER_PARTS [fanout,publish,idle]     which parts run
 *   BENCH_CLUSTER_DEADLINE_SEC [1500]             the whole run ends by then, whatever happens
 *   BENCH_CLUSTER_SERVER_CPUS [0]                 cores of sinal nodes, Redis and PostgreSQL in part 1
 *   BENCH_CLUSTER_LOADGEN_CPUS [1]                cores of the load generators in parts 1 and 2
 *   part 1: BENCH_CLUSTER_FANOUT_NODES [3], BENCH_CLUSTER_SUBSCRIBERS [1000], BENCH_CLUSTER_ROUNDS [2],
 *           BENCH_CLUSTER_WARMUP_SEC [2], BENCH_CLUSTER_MAX_SEC [4], BENCH_CLUSTER_WINDOW [256],
 *           BENCH_CLUSTER_FIXED_DELIVERIES_PER_SEC [100000], BENCH_CLUSTER_FIXED_SEC [4],
 *           BENCH_CLUSTER_PAYLOAD_BYTES [100]
 *   part 2: BENCH_CLUSTER_PUB_NODES [1,2] (one run per count; nodes on BENCH_CLUSTER_PUB_NODE_CPUS [0]),
 *           BENCH_CLUSTER_REDIS_CPUS [1] (Redis in part 2), BENCH_CLUSTER_PUB_CONNECTIONS [8],
 *           BENCH_CLUSTER_PUB_WINDOW [128] (publications in flight per connection),
 *           BENCH_CLUSTER_PUB_CHANNELS [64], BENCH_CLUSTER_PUB_SEC [5],
 *           BENCH_CLUSTER_LUA_INFLIGHT [256], BENCH_CLUSTER_LUA_CPUS [0] (the script client stands where a node would)
 *   part 3: BENCH_CLUSTER_IDLE_CONNECTIONS [100000], BENCH_CLUSTER_IDLE_NODES [6],
 *           BENCH_CLUSTER_IDLE_CONCURRENCY [100] (connects in flight per load generator),
 *           BENCH_CLUSTER_IDLE_SETTLE_SEC [10], BENCH_CLUSTER_IDLE_BARE [1] (0: skip bare Bun)
 *   BENCH_CLUSTER_SINAL_ENV                       extra sinal settings, "K=V K=V"
 *   BENCH_CLUSTER_BUN_FLAGS                       bun flags for sinal nodes, e.g. "--cpu-prof --cpu-prof-dir=/tmp/p"
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import Redis from "ioredis";
import { BUN, ROOT, cpuTicks, exited, freePort, loadavg, machineBusyTicks, schedMs, startSinal, statusKb } from "../lib/proc.ts";
import { startBenchPostgres, type BenchPostgres } from "../lib/postgres.ts";
import { startRedis, type RedisServer } from "../../test/support/redis.ts";
import { renderCluster, type ClusterReport, type FanoutRun, type IdleRun, type LuaRun, type PublishRun } from "./report.ts";

const num = (name: string, fallback: number) => {
  const raw = process.env[name];
  const n = raw === undefined || raw === "" ? fallback : Number(raw);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name} must be a non-negative number, got "${raw}"`);
  return n;
};
const list = (name: string, fallback: string) => (process.env[name] ?? fallback).split(",").map((s) => s.trim()).filter(Boolean);

const S = {
  parts: list("BENCH_CLUSTER_PARTS", "fanout,publish,idle"),
  deadlineSec: num("BENCH_CLUSTER_DEADLINE_SEC", 1500),
  serverCpus: process.env.BENCH_CLUSTER_SERVER_CPUS ?? "0",
  loadgenCpus: process.env.BENCH_CLUSTER_LOADGEN_CPUS ?? "1",
  fanoutNodes: num("BENCH_CLUSTER_FANOUT_NODES", 3),
  subscribers: num("BENCH_CLUSTER_SUBSCRIBERS", 1000),
  rounds: Math.max(1, num("BENCH_CLUSTER_ROUNDS", 2)),
  warmupSec: num("BENCH_CLUSTER_WARMUP_SEC", 2),
  maxSec: num("BENCH_CLUSTER_MAX_SEC", 4),
  window: num("BENCH_CLUSTER_WINDOW", 256),
  fixedDeliveriesPerSec: num("BENCH_CLUSTER_FIXED_DELIVERIES_PER_SEC", 100_000),
  fixedSec: num("BENCH_CLUSTER_FIXED_SEC", 4),
  payloadBytes: num("BENCH_CLUSTER_PAYLOAD_BYTES", 100),
  pubNodes: list("BENCH_CLUSTER_PUB_NODES", "1,2").map(Number),
  pubNodeCpus: process.env.BENCH_CLUSTER_PUB_NODE_CPUS ?? "0",
  redisCpus: process.env.BENCH_CLUSTER_REDIS_CPUS ?? "1",
  pubConnections: num("BENCH_CLUSTER_PUB_CONNECTIONS", 8),
  pubWindow: num("BENCH_CLUSTER_PUB_WINDOW", 128),
  pubChannels: num("BENCH_CLUSTER_PUB_CHANNELS", 64),
  pubSec: num("BENCH_CLUSTER_PUB_SEC", 5),
  luaInflight: num("BENCH_CLUSTER_LUA_INFLIGHT", 256),
  luaCpus: process.env.BENCH_CLUSTER_LUA_CPUS ?? "0",
  idleConnections: num("BENCH_CLUSTER_IDLE_CONNECTIONS", 100_000),
  idleNodes: Math.max(1, num("BENCH_CLUSTER_IDLE_NODES", 6)),
  idleConcurrency: num("BENCH_CLUSTER_IDLE_CONCURRENCY", 100),
  idleSettleSec: num("BENCH_CLUSTER_IDLE_SETTLE_SEC", 10),
  idleBare: num("BENCH_CLUSTER_IDLE_BARE", 1) > 0,
  sinalEnv: process.env.BENCH_CLUSTER_SINAL_ENV ?? "",
  bunFlags: (process.env.BENCH_CLUSTER_BUN_FLAGS ?? "").split(" ").filter(Boolean),
};

const log = (msg: string) => process.stderr.write(`[cluster ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
const secret = randomBytes(32).toString("base64url");
const apiKey = `sk_bench_${randomBytes(16).toString("hex")}`;

// ---------------------------------------------------------------- clean-up

const children = new Set<ChildProcess>();
const stoppers: (() => Promise<void> | void)[] = [];
const killAll = () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
};
process.on("exit", killAll);
process.on("SIGINT", () => process.exit(130));
process.on("SIGTERM", () => process.exit(143));
setTimeout(() => {
  log(`deadline of ${S.deadlineSec} s passed, stopping everything`);
  void cleanUp().finally(() => process.exit(1));
}, S.deadlineSec * 1000).unref();

async function cleanUp(): Promise<void> {
  killAll();
  for (const stop of stoppers.splice(0).reverse()) {
    try {
      await stop();
    } catch (err) {
      log(`clean-up: ${(err as Error).message}`);
    }
  }
}

async function stopChild(c: ChildProcess, graceMs = 10_000): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null) return;
  c.kill("SIGTERM");
  if ((await exited(c, graceMs)) === null && c.exitCode === null && c.signalCode === null) {
    c.kill("SIGKILL");
    await exited(c, 2000);
  }
  children.delete(c);
}

/** A child's stdout JSON lines, handed out in order (`next`) as they come. */
function lines(c: ChildProcess): { next(timeoutMs: number, what: string): Promise<Record<string, unknown>> } {
  const queue: Record<string, unknown>[] = [];
  let waiting: ((line: Record<string, unknown>) => void) | null = null;
  createInterface({ input: c.stdout! }).on("line", (line) => {
    if (!line.startsWith("{")) return;
    const parsed = JSON.parse(line) as Record<string, unknown>;
    if (waiting) {
      const w = waiting;
      waiting = null;
      w(parsed);
    } else queue.push(parsed);
  });
  return {
    next(timeoutMs, what) {
      if (queue.length > 0) return Promise.resolve(queue.shift()!);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no ${what} within ${timeoutMs / 1000} s`)), timeoutMs);
        c.once("exit", (code) => reject(new Error(`${what}: the process exited (${code}) first`)));
        waiting = (line) => (clearTimeout(timer), resolve(line));
      });
    },
  };
}

function bun(args: string[], cpuList: string | null, env: Record<string, string> = {}): ChildProcess {
  const cmd = cpuList === null ? [BUN, ...args] : ["taskset", "-c", cpuList, BUN, ...args];
  const c = spawn(cmd[0]!, cmd.slice(1), { cwd: ROOT, env: { ...process.env, ...env }, stdio: ["pipe", "pipe", "inherit"] });
  children.add(c);
  return c;
}

// ---------------------------------------------------------------- servers

interface BenchRedis {
  server: RedisServer;
  url: string;
  pid: number;
}

/** A throwaway redis-server (no persistence), pinned with all its threads to `cpuList`. */
async function benchRedis(cpuList: string): Promise<BenchRedis> {
  const server = await startRedis();
  stoppers.push(() => server.stop());
  const client = new Redis(server.url, { lazyConnect: true });
  await client.connect();
  const info = await client.info("server");
  client.disconnect();
  const pid = Number(/process_id:(\d+)/.exec(info)?.[1]);
  spawnSync("taskset", ["-a", "-p", "-c", cpuList, String(pid)], { stdio: "ignore" });
  return { server, url: server.url, pid };
}

/** Redis's counters that say whether it dropped a node's connection (a pub/sub client too slow to read). */
async function redisStats(url: string): Promise<Record<string, number>> {
  const client = new Redis(url, { lazyConnect: true });
  await client.connect();
  const info = await client.info();
  client.disconnect();
  const pick = ["total_connections_received", "client_output_buffer_limit_disconnections", "total_commands_processed", "evictedclients"];
  return Object.fromEntries(pick.flatMap((k) => {
    const m = new RegExp(`^${k}:(\\d+)`, "m").exec(info);
    return m ? [[k, Number(m[1])]] : [];
  }));
}

let pg: BenchPostgres | null = null;

/** One PostgreSQL for the whole run (the store the nodes share; idle while parts 1-2 run). */
async function postgres(): Promise<BenchPostgres> {
  if (pg === null) {
    pg = await startBenchPostgres(S.serverCpus);
    stoppers.push(() => pg?.stop());
  }
  return pg;
}

const extraEnv = () => Object.fromEntries(S.sinalEnv.split(" ").filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]));

interface Node {
  child: ChildProcess;
  /** Its first output lines (warnings and errors: LOG_LEVEL=warn). */
  out: string[];
  pid: number;
  port: number;
  host: string;
}

/** A sinal node; with `redisUrl` a cluster member, else one node with the memory broker. */
async function startNode(redisUrl: string | null, cpuList: string, host = "127.0.0.1"): Promise<Node> {
  const db = await postgres();
  const env: Record<string, string> = {
    JWT_SECRET: secret,
    DATABASE_URL: db.url,
    SINAL_API_KEYS: `bench:${apiKey}`,
    // part 3 puts 100,000 connections of one tenant on the cluster, counted cluster-wide
    MAX_CONNECTIONS_PER_TENANT: "1000000",
    ...(redisUrl === null ? {} : { REDIS_URL: redisUrl }),
    ...extraEnv(),
  };
  const { child, port, out } = await startSinal(children, env, S.bunFlags, { cpus: cpuList, host });
  child.once("exit", (code, signal) => {
    if (code !== 0 && code !== null && signal === null) log(`sinal on ${host}:${port} exited ${code}: ${out.join("").slice(-1500)}`);
  });
  return { child, pid: child.pid!, port, host, out };
}

/** Stops the nodes; returns what they logged (warnings and errors), for the report. */
async function stopNodes(nodes: Node[]): Promise<string[]> {
  await Promise.all(nodes.map((n) => stopChild(n.child, 15_000)));
  const logged = nodes.filter((n) => n.out.length > 0).map((n) => `${n.host}:${n.port}: ${n.out.join("").trim().slice(0, 1500)}`);
  for (const l of logged) log(`node output: ${l}`);
  return logged;
}

// ---------------------------------------------------------------- part 1: fan-out

async function fanoutOnce(mode: "one node" | "cluster", round: number): Promise<FanoutRun> {
  const run: FanoutRun = { mode, round, nodes: mode === "cluster" ? S.fanoutNodes : 1, phases: [], loadBefore: loadavg() };
  let redis: BenchRedis | null = null;
  const nodes: Node[] = [];
  try {
    if (mode === "cluster") redis = await benchRedis(S.serverCpus);
    for (let i = 0; i < run.nodes; i++) nodes.push(await startNode(redis?.url ?? null, S.serverCpus));
    const budget = S.warmupSec + 2 * (S.maxSec + S.fixedSec + 2 * 10 + 12) + 90;
    const child = bun(
      [
        "bench/loadgen.ts",
        "fanout",
        JSON.stringify({
          target: "sinal",
          host: "127.0.0.1",
          port: nodes[0]!.port,
          subscriberPorts: nodes.map((n) => n.port),
          secret,
          serverPid: nodes[0]!.pid,
          serverPids: [...nodes.slice(1).map((n) => n.pid), ...(redis ? [redis.pid] : [])],
          concurrency: 100,
          deadlineSec: budget,
          subscribers: S.subscribers,
          payloadBytes: S.payloadBytes,
          warmupSec: S.warmupSec,
          maxSec: S.maxSec,
          window: S.window,
          maxLatencyEvery: 10,
          fixedRate: Math.max(1, Math.round(S.fixedDeliveriesPerSec / S.subscribers)),
          fixedSec: S.fixedSec,
          quietPct: 15,
          attempts: 2,
          quietWaitSec: 10,
        }),
      ],
      S.loadgenCpus,
      // a channel of its own per run: nothing carries over in Redis between runs
      { BENCH_CHANNEL: `roulette:fanout-${round}-${mode === "cluster" ? "c" : "n"}` },
    );
    const out = lines(child);
    for (let i = 0; i < 2; i++) {
      const line = await out.next((budget + 10) * 1000, "fan-out phase");
      if (line.event === "error") throw new Error(String(line.message));
      run.phases.push(line as unknown as FanoutRun["phases"][number]);
    }
    await exited(child, 10_000);
    if (redis) run.redisStats = await redisStats(redis.url);
  } catch (err) {
    run.failure = (err as Error).message;
    log(`fan-out ${mode} round ${round} failed: ${run.failure}`);
  } finally {
    run.nodeOutput = await stopNodes(nodes);
    await redis?.server.stop();
  }
  run.loadAfter = loadavg();
  return run;
}

// ---------------------------------------------------------------- part 2: publications

async function publishOnce(nodeCount: number): Promise<PublishRun> {
  const run: PublishRun = { nodes: nodeCount, loadBefore: loadavg() } as PublishRun;
  let redis: BenchRedis | null = null;
  const nodes: Node[] = [];
  try {
    redis = await benchRedis(S.redisCpus);
    for (let i = 0; i < nodeCount; i++) nodes.push(await startNode(redis.url, S.pubNodeCpus));
    const config = {
      host: "127.0.0.1",
      ports: nodes.map((n) => n.port),
      secret,
      connections: S.pubConnections,
      window: S.pubWindow,
      channels: S.pubChannels,
      kind: "roulette",
      payloadBytes: S.payloadBytes,
      warmupSec: 2,
      seconds: S.pubSec,
      deadlineSec: S.pubSec + 60,
    };
    const child = bun(["bench/cluster/publisher.ts", JSON.stringify(config)], S.loadgenCpus);
    const out = lines(child);
    await out.next(60_000, "publisher start");
    const t0 = performance.now();
    const [n0, r0, m0] = [nodes.map((n) => cpuTicks(n.pid)), cpuTicks(redis.pid), machineBusyTicks()];
    // time spent runnable but waiting for a core (schedstat): says whether a process was starved
    const [nw0, rw0] = [nodes.map((n) => schedMs(n.pid).waitMs), schedMs(redis.pid).waitMs];
    const result = await out.next((S.pubSec + 30) * 1000, "publisher result");
    const wall = (performance.now() - t0) / 1000;
    const nodeTicks = nodes.map((n, i) => cpuTicks(n.pid) - n0[i]!);
    const redisTicks = cpuTicks(redis.pid) - r0;
    Object.assign(run, {
      nodeWaitPct: nodes.map((n, i) => (schedMs(n.pid).waitMs - nw0[i]!) / (wall * 10)),
      redisWaitPct: (schedMs(redis.pid).waitMs - rw0) / (wall * 10),
      ackedPerSec: Number(result.acked_per_sec),
      acked: Number(result.acked),
      failed: Number(result.failed),
      errors: result.errors as string[],
      p50Ms: Number(result.p50_ms),
      p99Ms: Number(result.p99_ms),
      inflight: S.pubConnections * S.pubWindow,
      nodeCpuPct: nodeTicks.map((t) => t / wall),
      redisCpuPct: redisTicks / wall,
      loadgenCpuPct: Number(result.loadgen_cpu_pct),
      otherCpuPct: (machineBusyTicks() - m0 - nodeTicks.reduce((a, b) => a + b, 0) - redisTicks) / wall - Number(result.loadgen_cpu_pct),
      nodeUsPerPub: (nodeTicks.reduce((a, b) => a + b, 0) * 10_000) / Number(result.acked),
      redisUsPerPub: (redisTicks * 10_000) / Number(result.acked),
    });
    await exited(child, 10_000);
  } catch (err) {
    run.failure = (err as Error).message;
    log(`publish on ${nodeCount} node(s) failed: ${run.failure}`);
  } finally {
    await stopNodes(nodes);
    await redis?.server.stop();
  }
  run.loadAfter = loadavg();
  return run;
}

async function luaRuns(): Promise<LuaRun[]> {
  const runs: LuaRun[] = [];
  const redis = await benchRedis(S.redisCpus);
  try {
    const modes = ["script", "script+publish", "script-publish", "append"];
    const stats = new Redis(redis.url, { lazyConnect: true });
    await stats.connect();
    const child = bun(
      ["bench/cluster/lua.ts", JSON.stringify({ url: redis.url, modes, inflight: S.luaInflight, channels: S.pubChannels, payloadBytes: S.payloadBytes, warmupSec: 1, seconds: S.pubSec })],
      S.luaCpus,
    );
    const out = lines(child);
    for (const _ of modes) {
      await out.next(60_000, "lua start");
      await stats.config("RESETSTAT");
      const [r0, t0] = [cpuTicks(redis.pid), performance.now()];
      const result = await out.next((S.pubSec + 30) * 1000, "lua result");
      const wall = (performance.now() - t0) / 1000;
      const redisTicks = cpuTicks(redis.pid) - r0;
      // Redis's own account of each command's time (those a script calls included), µs per call
      const commandUs: Record<string, number> = {};
      for (const m of (await stats.info("commandstats")).matchAll(/cmdstat_(\w+):calls=(\d+),usec=(\d+)/g)) {
        if (Number(m[2]) >= 1000) commandUs[m[1]!] = Number(m[3]) / Number(m[2]);
      }
      runs.push({
        commandUs,
        mode: String(result.mode),
        inflight: S.luaInflight,
        callsPerSec: Number(result.calls_per_sec),
        clientCpuPct: Number(result.client_cpu_pct),
        redisCpuPct: redisTicks / wall,
        redisUsPerCall: (redisTicks * 10_000) / Number(result.calls),
      });
      log(`lua ${result.mode}: ${result.calls_per_sec}/s, redis ${(redisTicks / wall).toFixed(0)}%, client ${result.client_cpu_pct}%`);
    }
    await exited(child, 10_000);
    stats.disconnect();
  } finally {
    await redis.server.stop();
  }
  return runs;
}

// ---------------------------------------------------------------- part 3: idle connections

function openFilesLimit(): { soft: number; hard: number } {
  const m = /Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)/.exec(readFileSync("/proc/self/limits", "utf8"));
  const n = (s: string | undefined) => (s === "unlimited" || s === undefined ? Number.POSITIVE_INFINITY : Number(s));
  return { soft: n(m?.[1]), hard: n(m?.[2]) };
}

/** Opens `count` idle sinal (or bare Bun) connections from one load-generator process; resolves on its ready line. */
function idleLoadgen(target: "sinal" | "bun", host: string, port: number, pid: number, count: number, offset: number) {
  const child = bun(["bench/loadgen.ts", "idle", JSON.stringify({ target, host, port, secret, serverPid: pid, concurrency: S.idleConcurrency, deadlineSec: 600, count, offset })], null);
  return { child, ready: lines(child).next(300_000, "idle ready line") };
}

async function idleRun(): Promise<IdleRun> {
  const limit = openFilesLimit();
  const perNode = Math.ceil(S.idleConnections / S.idleNodes);
  const run: IdleRun = { requested: S.idleConnections, nodes: S.idleNodes, perNode, openFiles: limit, nodeRows: [], loadBefore: loadavg() } as unknown as IdleRun;
  // A node holds its connections plus ~100 files (Redis, PostgreSQL, its own); so does a load generator.
  if (perNode + 200 > limit.soft) {
    run.failure = `${perNode} connections per process need more open files than this process may hold (${limit.soft}, hard ${limit.hard}); raise BENCH_CLUSTER_IDLE_NODES`;
    return run;
  }
  let redis: BenchRedis | null = null;
  const nodes: Node[] = [];
  const gens: ChildProcess[] = [];
  try {
    redis = await benchRedis("0,1");
    for (let i = 0; i < S.idleNodes; i++) nodes.push(await startNode(redis.url, "0,1", `127.0.0.${i + 1}`));
    await Bun.sleep(1000);
    const before = nodes.map((n) => statusKb(n.pid));
    // CPU while the connections open: where the time to connect goes
    const [cn0, cr0, cm0] = [nodes.map((n) => cpuTicks(n.pid)), cpuTicks(redis.pid), machineBusyTicks()];
    const t0 = performance.now();
    const started = nodes.map((n, i) => {
      const count = Math.min(perNode, S.idleConnections - i * perNode);
      const g = idleLoadgen("sinal", n.host, n.port, n.pid, count, i * perNode);
      gens.push(g.child);
      return g.ready.then((line) => ({ line, at: (performance.now() - t0) / 1000 }));
    });
    const readies = await Promise.all(started);
    run.openSec = Math.max(...readies.map((r) => r.at));
    const genTicks = gens.reduce((sum, g) => sum + cpuTicks(g.pid!), 0);
    run.connectCpu = {
      nodesSec: nodes.reduce((sum, n, i) => sum + cpuTicks(n.pid) - cn0[i]!, 0) / 100,
      redisSec: (cpuTicks(redis.pid) - cr0) / 100,
      loadgensSec: genTicks / 100,
      machineSec: (machineBusyTicks() - cm0) / 100,
    };
    run.connected = readies.reduce((n, r) => n + Number(r.line.connected), 0);
    run.failed = readies.reduce((n, r) => n + Number(r.line.failed), 0);
    run.errors = [...new Set(readies.flatMap((r) => (r.line.errors as string[]) ?? []))].slice(0, 3);
    log(`idle: ${run.connected} connected (${run.failed} failed) in ${run.openSec.toFixed(1)} s`);
    const c0 = nodes.map((n) => cpuTicks(n.pid));
    const r0 = cpuTicks(redis.pid);
    const s0 = performance.now();
    await Bun.sleep(S.idleSettleSec * 1000);
    const wall = (performance.now() - s0) / 1000;
    run.redisIdleCpuPct = (cpuTicks(redis.pid) - r0) / wall;
    run.nodeRows = nodes.map((n, i) => {
      const connected = Number(readies[i]!.line.connected);
      const after = statusKb(n.pid);
      return {
        host: n.host,
        connected,
        openSec: Number(readies[i]!.line.seconds),
        rssBeforeMb: before[i]! / 1024,
        rssAfterMb: after / 1024,
        mbPer1000: (after - before[i]!) / 1024 / (connected / 1000),
        idleCpuPct: (cpuTicks(n.pid) - c0[i]!) / wall,
      };
    });
  } catch (err) {
    run.failure = (err as Error).message;
    log(`idle failed: ${run.failure}`);
  } finally {
    await Promise.all(gens.map((g) => stopChild(g, 20_000)));
    run.nodeLog = logCodes(await stopNodes(nodes));
    await redis?.server.stop();
  }
  if (S.idleBare && run.failure === undefined) {
    // bare Bun with one node's share, for the RSS per 1,000 of the same connections in the same run
    const port = await freePort();
    const server = spawn(BUN, ["bench/servers/bun-bare.ts"], { cwd: ROOT, env: { ...process.env, PORT: String(port) }, stdio: ["ignore", "ignore", "inherit"] });
    children.add(server);
    try {
      for (let i = 0; ; i++) {
        try {
          if ((await fetch(`http://127.0.0.1:${port}/stats`)).ok) break;
        } catch {}
        if (i > 200) throw new Error("bare Bun did not start");
        await Bun.sleep(50);
      }
      await Bun.sleep(1000);
      const before = statusKb(server.pid!);
      const t0 = performance.now();
      const g = idleLoadgen("bun", "127.0.0.1", port, server.pid!, perNode, 0);
      gens.push(g.child);
      const line = await g.ready;
      const openSec = (performance.now() - t0) / 1000;
      await Bun.sleep(S.idleSettleSec * 1000);
      const after = statusKb(server.pid!);
      run.bare = { connected: Number(line.connected), openSec, rssBeforeMb: before / 1024, rssAfterMb: after / 1024, mbPer1000: (after - before) / 1024 / (Number(line.connected) / 1000) };
      await stopChild(g.child, 20_000);
    } catch (err) {
      log(`bare Bun idle failed: ${(err as Error).message}`);
    } finally {
      await stopChild(server);
    }
  }
  run.loadAfter = loadavg();
  return run;
}

/** What the nodes logged, by `code` (or message) with a count and the first error message. */
function logCodes(outputs: string[]): string[] {
  const seen = new Map<string, { n: number; first: string }>();
  for (const o of outputs) {
    for (const line of o.split("\n")) {
      const m = /"code":"([^"]+)"/.exec(line) ?? /"msg":"([^"]+)"/.exec(line);
      if (!m) continue;
      const err = /"message":"([^"]+)"/.exec(line)?.[1] ?? "";
      const entry = seen.get(m[1]!) ?? { n: 0, first: err };
      entry.n++;
      seen.set(m[1]!, entry);
    }
  }
  return [...seen].map(([code, { n, first }]) => `${code} × ${n}${first ? ` (${first.slice(0, 150)})` : ""}`);
}

// ---------------------------------------------------------------- main

const sh = (cmd: string, args: string[]) => spawnSync(cmd, args, { encoding: "utf8", cwd: ROOT }).stdout?.trim() ?? "";
const report: ClusterReport = {
  startedAt: new Date().toISOString(),
  finishedAt: "",
  machine: {
    nproc: cpus().length,
    cpu: cpus()[0]?.model ?? "?",
    kernel: sh("uname", ["-r"]),
    bun: Bun.version,
    redis: sh("redis-server", ["--version"]).split(" ").find((w) => w.startsWith("v="))?.slice(2) ?? "?",
    commit: sh("git", ["rev-parse", "--short", "HEAD"]) + (sh("git", ["status", "--porcelain", "src"]) ? " (src/ modified)" : ""),
    ephemeralPorts: readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().replace(/\s+/, "-"),
  },
  settings: { ...S, parts: S.parts.join(","), pubNodes: S.pubNodes.join(","), bunFlags: S.bunFlags.join(" ") },
  fanout: [],
  publish: [],
  lua: [],
  idle: null,
};

try {
  if (cpus().length < 2) throw new Error("the parts pin servers and load generators to separate cores; this machine has one");
  const db = await postgres();
  report.postgres = db.settings;
  if (S.parts.includes("fanout")) {
    for (let round = 1; round <= S.rounds; round++) {
      const order: FanoutRun["mode"][] = round % 2 === 1 ? ["one node", "cluster"] : ["cluster", "one node"];
      for (const mode of order) {
        log(`fan-out round ${round}/${S.rounds}: ${mode}`);
        report.fanout.push(await fanoutOnce(mode, round));
      }
    }
  }
  if (S.parts.includes("publish")) {
    for (const n of S.pubNodes) {
      log(`publish: ${n} node(s), ${S.pubConnections} connections × ${S.pubWindow} in flight`);
      const r = await publishOnce(n);
      log(`publish on ${n} node(s): ${r.ackedPerSec}/s, p99 ${r.p99Ms?.toFixed(1)} ms, nodes ${r.nodeCpuPct?.map((p) => p.toFixed(0)).join("+")}%, redis ${r.redisCpuPct?.toFixed(0)}%`);
      report.publish.push(r);
    }
    log("lua: the append script straight through ioredis");
    report.lua = await luaRuns();
  }
  if (S.parts.includes("idle")) {
    log(`idle: ${S.idleConnections} connections over ${S.idleNodes} nodes`);
    report.idle = await idleRun();
  }
} catch (err) {
  report.failure = (err as Error).stack ?? String(err);
  log(`failed: ${report.failure}`);
} finally {
  await cleanUp();
}
report.finishedAt = new Date().toISOString();
const md = renderCluster(report);
const dir = join(ROOT, "bench/results");
mkdirSync(dir, { recursive: true });
const stamp = report.startedAt.slice(0, 19).replace(/[:T]/g, "-");
for (const name of [`cluster-${stamp}`, "cluster-latest"]) {
  writeFileSync(join(dir, `${name}.json`), `${JSON.stringify(report, null, 2)}\n`);
  writeFileSync(join(dir, `${name}.md`), `${md}\n`);
}
process.stdout.write(`${md}\n`);
const failed = report.failure !== undefined || report.fanout.some((r) => r.failure) || report.publish.some((r) => r.failure) || report.idle?.failure !== undefined;
process.exit(failed ? 1 : 0);
