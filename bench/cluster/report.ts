/** The shapes bench/cluster/run.ts collects, and their markdown. */

export interface FanoutPhase {
  phase: "max" | "fixed";
  deliveries_per_sec: number;
  publications_per_sec: number;
  received: number;
  expected_deliveries: number;
  server_deliveries: number;
  drained: boolean;
  stalled: boolean;
  server_cpu_pct: number;
  loadgen_cpu_pct: number;
  other_cpu_pct: number;
  frame_bytes: number;
  latency?: { p50_ms: number; p99_ms: number; p999_ms: number; max_ms: number; samples: number };
  attempt: number;
  closed_during_run: number;
  close_reasons: string[];
}

export interface FanoutRun {
  mode: "one node" | "cluster";
  round: number;
  nodes: number;
  phases: FanoutPhase[];
  /** Cluster: Redis's connection counters after the run (a node disconnected for a slow pub/sub read shows here). */
  redisStats?: Record<string, number>;
  /** What the nodes logged (LOG_LEVEL=warn). */
  nodeOutput?: string[];
  loadBefore: string;
  loadAfter?: string;
  failure?: string;
}

export interface PublishRun {
  nodes: number;
  inflight: number;
  ackedPerSec: number;
  acked: number;
  failed: number;
  errors: string[];
  p50Ms: number;
  p99Ms: number;
  nodeCpuPct: number[];
  redisCpuPct: number;
  /** Time runnable but waiting for a core, % of the wall time (schedstat). */
  nodeWaitPct: number[];
  redisWaitPct: number;
  loadgenCpuPct: number;
  otherCpuPct: number;
  nodeUsPerPub: number;
  redisUsPerPub: number;
  loadBefore: string;
  loadAfter?: string;
  failure?: string;
}

export interface LuaRun {
  mode: string;
  inflight: number;
  callsPerSec: number;
  clientCpuPct: number;
  redisCpuPct: number;
  redisUsPerCall: number;
  /** Redis's INFO commandstats over the measured seconds: µs per call of each command. */
  commandUs: Record<string, number>;
}

export interface IdleRun {
  requested: number;
  nodes: number;
  perNode: number;
  openFiles: { soft: number; hard: number };
  connected: number;
  failed: number;
  errors: string[];
  openSec: number;
  redisIdleCpuPct: number;
  /** CPU seconds used from starting the load generators to the last ready line. */
  connectCpu?: { nodesSec: number; redisSec: number; loadgensSec: number; machineSec: number };
  /** What the nodes logged (first lines only), by code. */
  nodeLog?: string[];
  nodeRows: { host: string; connected: number; openSec: number; rssBeforeMb: number; rssAfterMb: number; mbPer1000: number; idleCpuPct: number }[];
  bare?: { connected: number; openSec: number; rssBeforeMb: number; rssAfterMb: number; mbPer1000: number };
  loadBefore: string;
  loadAfter?: string;
  failure?: string;
}

export interface ClusterReport {
  startedAt: string;
  finishedAt: string;
  machine: Record<string, string | number>;
  settings: Record<string, unknown>;
  postgres?: string;
  fanout: FanoutRun[];
  publish: PublishRun[];
  lua: LuaRun[];
  idle: IdleRun | null;
  failure?: string;
}

const int = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString("en-US") : "-");
const f1 = (n: number) => (Number.isFinite(n) ? n.toFixed(1) : "-");
const f2 = (n: number) => (Number.isFinite(n) ? n.toFixed(2) : "-");
const millions = (n: number) => (Number.isFinite(n) ? `${(n / 1e6).toFixed(2)}M` : "-");
const median = (xs: number[]) => {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  return s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

function fanoutSection(runs: FanoutRun[]): string[] {
  const out = ["### 1. Fan-out: 1 publisher → 1,000 subscribers", ""];
  out.push("| mode | round | max deliveries/s | server CPU % (all nodes + Redis) | server ns CPU per delivery | received = counted | p50 / p99 / p99.9 ms at the fixed rate | other CPU % (max, fixed) | load before |");
  out.push("| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- |");
  for (const r of runs) {
    if (r.failure) {
      out.push(`| ${r.mode} | ${r.round} | failed: ${r.failure.slice(0, 200)} | | | | | | ${r.loadBefore} |`);
      continue;
    }
    const max = r.phases.find((p) => p.phase === "max")!;
    const fixed = r.phases.find((p) => p.phase === "fixed")!;
    const ns = (max.server_cpu_pct / 100 / max.deliveries_per_sec) * 1e9;
    const counted = r.phases.every((p) => p.received === p.server_deliveries) ? "yes" : r.phases.map((p) => `${p.received}/${p.server_deliveries}`).join(", ");
    const lat = fixed.latency;
    out.push(
      `| ${r.mode} (${r.nodes}) | ${r.round} | ${millions(max.deliveries_per_sec)}${max.drained ? "" : " (not drained)"} | ${f1(max.server_cpu_pct)} | ${int(ns)} | ${counted} | ${lat ? `${f2(lat.p50_ms)} / ${f2(lat.p99_ms)} / ${f2(lat.p999_ms)}` : "-"} | ${f1(max.other_cpu_pct)}, ${f1(fixed.other_cpu_pct)} | ${r.loadBefore} |`,
    );
  }
  for (const r of runs) {
    const closed = r.phases.reduce((n, p) => n + p.closed_during_run, 0);
    const notes: string[] = [];
    if (closed > 0) notes.push(`${closed} subscribers closed by the server during the phases (${[...new Set(r.phases.flatMap((p) => p.close_reasons))].join("; ").slice(0, 200)})`);
    if (r.redisStats) notes.push(`Redis: ${Object.entries(r.redisStats).map(([k, v]) => `${k} ${v}`).join(", ")}`);
    for (const o of r.nodeOutput ?? []) notes.push(`node logged: ${o.slice(0, 400)}`);
    if (notes.length > 0) out.push("", `- ${r.mode}, round ${r.round}: ${notes.join("; ")}`);
  }
  const ok = runs.filter((r) => !r.failure);
  const of = (mode: FanoutRun["mode"], pick: (r: FanoutRun) => number) => median(ok.filter((r) => r.mode === mode).map(pick));
  const maxRate = (r: FanoutRun) => r.phases.find((p) => p.phase === "max")!.deliveries_per_sec;
  const p99 = (r: FanoutRun) => r.phases.find((p) => p.phase === "fixed")!.latency?.p99_ms ?? Number.NaN;
  const nsPer = (r: FanoutRun) => {
    const m = r.phases.find((p) => p.phase === "max")!;
    return (m.server_cpu_pct / 100 / m.deliveries_per_sec) * 1e9;
  };
  const one = { rate: of("one node", maxRate), p99: of("one node", p99), ns: of("one node", nsPer) };
  const cl = { rate: of("cluster", maxRate), p99: of("cluster", p99), ns: of("cluster", nsPer) };
  out.push("", "Medians over the rounds:", "");
  out.push("| | one node (memory broker) | cluster | cluster ÷ one node |", "| --- | ---: | ---: | ---: |");
  out.push(`| max deliveries/s | ${millions(one.rate)} | ${millions(cl.rate)} | ${f2(cl.rate / one.rate)}× |`);
  out.push(`| p99 at the fixed rate, ms | ${f2(one.p99)} | ${f2(cl.p99)} | ${f2(cl.p99 / one.p99)}× |`);
  out.push(`| server ns CPU per delivery (max phase) | ${int(one.ns)} | ${int(cl.ns)} | ${f2(cl.ns / one.ns)}× |`);
  return out;
}

function publishSection(runs: PublishRun[], lua: LuaRun[]): string[] {
  const out = ["### 2. Publications/s with history (roulette channels: 20 kept for 2 min, in Redis)", ""];
  out.push("| nodes | publications in flight | acknowledged/s | p50 / p99 ack ms | node CPU % (waiting for a core %) | Redis CPU % (waiting %) | load generator CPU % | other CPU % | node µs CPU per publication | Redis µs CPU per publication | failed |");
  out.push("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
  for (const r of runs) {
    if (r.failure) {
      out.push(`| ${r.nodes} | failed: ${r.failure.slice(0, 200)} | | | | | | | | | |`);
      continue;
    }
    out.push(
      `| ${r.nodes} | ${int(r.inflight)} | **${int(r.ackedPerSec)}** | ${f1(r.p50Ms)} / ${f1(r.p99Ms)} | ${r.nodeCpuPct.map((p, i) => `${f1(p)} (${f1(r.nodeWaitPct[i]!)})`).join(" + ")} | ${f1(r.redisCpuPct)} (${f1(r.redisWaitPct)}) | ${f1(r.loadgenCpuPct)} | ${f1(r.otherCpuPct)} | ${f1(r.nodeUsPerPub)} | ${f1(r.redisUsPerPub)} | ${int(r.failed)}${r.errors.length ? ` (${r.errors[0]!.slice(0, 120)})` : ""} |`,
    );
  }
  out.push("", "The same Redis work without sinal (bench/cluster/lua.ts, ioredis with auto-pipelining):", "");
  out.push("| what | calls in flight | calls/s | Redis CPU % | Redis µs CPU per call | client CPU % | client µs CPU per call |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
  // The client's µs per call is what a node spends on the same calls through ioredis.
  for (const l of lua) out.push(`| ${l.mode} | ${l.inflight} | **${int(l.callsPerSec)}** | ${f1(l.redisCpuPct)} | ${f1(l.redisUsPerCall)} | ${f1(l.clientCpuPct)} | ${f1((l.clientCpuPct * 10_000) / l.callsPerSec)} |`);
  out.push("", "Inside Redis (INFO commandstats over the same seconds, µs per call; a script's commands are counted too):", "");
  for (const l of lua) {
    const parts = Object.entries(l.commandUs).sort((a, b) => b[1] - a[1]).map(([c, us]) => `${c} ${f1(us)}`);
    out.push(`- ${l.mode}: ${parts.join(", ")}`);
  }
  return out;
}

function idleSection(r: IdleRun): string[] {
  const out = [`### 3. Idle authenticated connections over ${r.nodes} nodes`, ""];
  out.push(`Open files per process: soft ${r.openFiles.soft}, hard ${r.openFiles.hard}; ${int(r.perNode)} connections per node and per load generator.`, "");
  if (r.failure) out.push(`**Failed**: ${r.failure}`, "");
  if (r.nodeRows.length > 0) {
    out.push(`**${int(r.connected)} of ${int(r.requested)} connected** (${int(r.failed)} failed${r.errors.length ? `: ${r.errors.join("; ").slice(0, 300)}` : ""}) in **${f1(r.openSec)} s** (from starting the load generators to the last one's ready line).`, "");
    out.push("| node | connected | seconds to open | RSS before MB | RSS after MB | MB per 1,000 | CPU % while idle |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (const n of r.nodeRows) out.push(`| ${n.host} | ${int(n.connected)} | ${f1(n.openSec)} | ${f1(n.rssBeforeMb)} | ${f1(n.rssAfterMb)} | ${f2(n.mbPer1000)} | ${f1(n.idleCpuPct)} |`);
    const med = median(r.nodeRows.map((n) => n.mbPer1000));
    out.push(`| **median** | | | | | **${f2(med)}** | |`);
    if (r.bare) out.push(`| bare Bun (one process) | ${int(r.bare.connected)} | ${f1(r.bare.openSec)} | ${f1(r.bare.rssBeforeMb)} | ${f1(r.bare.rssAfterMb)} | ${f2(r.bare.mbPer1000)} (sinal ÷ bare Bun ${f2(med / r.bare.mbPer1000)}×) | |`);
    out.push("", `Redis CPU while every connection sat idle: ${f1(r.redisIdleCpuPct)}%.`);
    if (r.connectCpu) {
      const c = r.connectCpu;
      out.push(
        "",
        `CPU while they opened (${f1(r.openSec)} s, ${f1((c.machineSec / r.openSec) * 100)}% of a core on average for the whole machine): sinal nodes ${f1(c.nodesSec)} s (${f1((c.nodesSec * 1e6) / Math.max(1, r.connected))} µs per connection), Redis ${f1(c.redisSec)} s, load generators ${f1(c.loadgensSec)} s, everything else ${f1(c.machineSec - c.nodesSec - c.redisSec - c.loadgensSec)} s.`,
      );
    }
    if (r.nodeLog && r.nodeLog.length > 0) out.push("", `The nodes logged (their first lines only): ${r.nodeLog.join("; ")}.`);
  }
  return out;
}

export function renderCluster(r: ClusterReport): string {
  const out = [`## Cluster bench, ${r.startedAt.slice(0, 16).replace("T", " ")}–${r.finishedAt.slice(11, 16)} UTC`, ""];
  out.push(`Machine: ${Object.entries(r.machine).map(([k, v]) => `${k} ${v}`).join(", ")}.`);
  if (r.postgres) out.push(`PostgreSQL: ${r.postgres}.`);
  out.push("");
  if (r.failure) out.push(`**Run failed**: ${r.failure.slice(0, 1000)}`, "");
  if (r.fanout.length > 0) out.push(...fanoutSection(r.fanout), "");
  if (r.publish.length > 0 || r.lua.length > 0) out.push(...publishSection(r.publish, r.lua), "");
  if (r.idle) out.push(...idleSection(r.idle), "");
  return out.join("\n");
}
