/** Result shapes of the benchmark and their markdown rendering. */
import type { TargetName } from "./targets.ts";

export interface Latency {
  samples: number;
  p50_ms: number;
  p90_ms: number;
  p99_ms: number;
  p999_ms: number;
  max_ms: number;
  mean_ms: number;
}

/** One line the load generator prints per measured phase (see loadgen.ts). */
export interface FanoutPhase {
  target: TargetName;
  phase: "max" | "fixed";
  subscribers: number;
  seconds: number;
  window?: number;
  offered_rate?: number;
  publications: number;
  expected_deliveries: number;
  received: number;
  deliveries_per_sec: number;
  publications_per_sec: number;
  frame_bytes: number;
  drained: boolean;
  stalled: boolean;
  server_publications: number;
  server_deliveries: number;
  server_cpu_pct: number;
  server_rss_kb: number;
  loadgen_cpu_pct: number;
  other_cpu_pct: number;
  other_cpu_before_pct: number;
  latency?: Latency;
  latency_sampled_subscribers: number;
  attempt: number;
  round?: number;
  closed_during_run: number;
  close_reasons: string[];
}

export interface MemoryResult {
  target: TargetName;
  requested: number;
  connected: number;
  failed: number;
  errors: string[];
  open_seconds: number;
  server_connections: number | null;
  rss_before_kb: number;
  rss_after_kb: number;
  rss_samples_kb: number[];
  idle_cpu_pct: number;
  mb_per_1000: number;
}

export interface Report {
  started_at: string;
  finished_at?: string;
  machine: Record<string, string | number>;
  settings: Record<string, unknown>;
  fanout: FanoutPhase[];
  memory: MemoryResult[];
  failures: { target: TargetName; phase: string; message: string }[];
}

export const LABELS: Record<TargetName, string> = {
  sinal: "sinal (JWT auth, tenant topics, offsets)",
  bun: "bare Bun.serve pub/sub",
  ws: "Node ws",
  socketio: "Socket.IO",
};

/** "Other CPU" is machine busy time minus the two processes; tick sampling can make it slightly negative. */
const fmtOther = (n: number) => `${Number.isFinite(n) ? Math.max(0, Math.round(n)) : "n/a"}%`;
const fmtInt = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString("en-US") : "n/a");
const fmtM = (n: number) => (Number.isFinite(n) ? `${(n / 1e6).toFixed(2)}M` : "n/a");
const fmt = (n: number | undefined, digits = 2) => (n === undefined || !Number.isFinite(n) ? "n/a" : n.toFixed(digits));
const ratio = (a: number | undefined, b: number | undefined) =>
  a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0 ? "n/a" : `${(a / b).toFixed(2)}×`;

export function median(values: number[]): number {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return Number.NaN;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 === 1 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
}

/** The rounds of one server and phase kind, summarized by medians. */
export interface Summary {
  target: TargetName;
  rounds: FanoutPhase[];
  deliveriesPerSec: number;
  minDeliveriesPerSec: number;
  maxDeliveriesPerSec: number;
  frameBytes: number;
  serverCpu: number;
  /** Server CPU time per delivery (ns): its cost independent of how fast the load generator reads. */
  serverNsPerDelivery: number;
  loadgenCpu: number;
  otherCpu: number;
  received: number;
  serverDeliveries: number;
  allDrained: boolean;
  p50: number;
  p99: number;
  p999: number;
  maxLatency: number;
  p99s: number[];
}

export const nsPerDelivery = (p: FanoutPhase) => (p.deliveries_per_sec > 0 ? (p.server_cpu_pct / 100) * 1e9 / p.deliveries_per_sec : Number.NaN);

export function summarize(phases: FanoutPhase[], target: TargetName, kind: "max" | "fixed"): Summary | null {
  const rounds = phases.filter((p) => p.target === target && p.phase === kind);
  if (rounds.length === 0) return null;
  const pick = (f: (p: FanoutPhase) => number | undefined) => rounds.map((p) => f(p) ?? Number.NaN);
  const dps = pick((p) => p.deliveries_per_sec);
  return {
    target,
    rounds,
    deliveriesPerSec: median(dps),
    minDeliveriesPerSec: Math.min(...dps),
    maxDeliveriesPerSec: Math.max(...dps),
    frameBytes: Math.round(median(pick((p) => p.frame_bytes))),
    serverCpu: median(pick((p) => p.server_cpu_pct)),
    serverNsPerDelivery: median(pick((p) => nsPerDelivery(p))),
    loadgenCpu: median(pick((p) => p.loadgen_cpu_pct)),
    otherCpu: median(pick((p) => p.other_cpu_pct)),
    received: rounds.reduce((n, p) => n + p.received, 0),
    serverDeliveries: rounds.reduce((n, p) => n + p.server_deliveries, 0),
    allDrained: rounds.every((p) => p.drained),
    p50: median(pick((p) => p.latency?.p50_ms)),
    p99: median(pick((p) => p.latency?.p99_ms)),
    p999: median(pick((p) => p.latency?.p999_ms)),
    maxLatency: Math.max(...pick((p) => p.latency?.max_ms)),
    p99s: pick((p) => p.latency?.p99_ms),
  };
}

/** Who limited a max-throughput phase, judged from CPU use (each process is pinned to one core). */
export function boundBy(x: { serverCpu: number; loadgenCpu: number; otherCpu: number }): string {
  const server = x.serverCpu >= 90;
  const loadgen = x.loadgenCpu >= 90;
  if (server && loadgen) return "server (load gen. also ≥ 90%)";
  if (server) return "server";
  if (loadgen) return "**load generator**";
  if (x.otherCpu >= 30) return "**other processes**";
  return "neither (window/latency)";
}

function counted(x: Summary): string {
  const same = x.received === x.serverDeliveries;
  return `${fmtInt(x.received)} / ${fmtInt(x.serverDeliveries)}${same ? "" : " **(differ)**"}`;
}

export function renderReport(r: Report): string {
  const m = r.machine;
  const s = r.settings as Record<string, number>;
  const targets = [...new Set([...r.fanout.map((p) => p.target), ...r.memory.map((x) => x.target)])];
  const sum = (t: TargetName, kind: "max" | "fixed") => summarize(r.fanout, t, kind);
  const mem = (t: TargetName) => r.memory.find((x) => x.target === t);
  const roundsOf = (t: TargetName) => new Set(r.fanout.filter((p) => p.target === t).map((p) => p.round ?? 1)).size;
  const out: string[] = [];

  out.push(`## sinal benchmark, ${r.started_at.slice(0, 19).replace("T", " ")} UTC`);
  out.push("");
  out.push(
    `Machine: ${m.nproc} cores (${m.cpu_model}), ${m.memory_gb} GB, Linux ${m.kernel}; bun ${m.bun}, node ${m.node}, ws ${m.ws}, socket.io ${m.socket_io}. ` +
      `sinal at commit ${m.commit}${Number(m.src_changes) > 0 ? ` with ${m.src_changes} uncommitted change(s) in src/` : ""}. ` +
      `Server pinned to core 0, load generator to core 1; everything on 127.0.0.1. ` +
      `Fan-out figures are medians over rounds (${targets.map((t) => `${t} ${roundsOf(t)}`).join(", ")}; a fresh server each round; servers interleaved, order alternating).`,
  );
  out.push("");

  out.push(
    `### Fan-out, max throughput: 1 publisher → ${fmtInt(s.subscribers ?? 0)} subscribers of one channel (\`${(r.settings as Record<string, string>).channel}\`), ${s.payloadBytes}-byte payload, ` +
      `${s.maxSec} s per round, at most ${s.window} publications in flight`,
  );
  out.push("");
  out.push(
    "| server | deliveries/s | range over rounds | sinal ÷ this | frame bytes | server CPU | server ns CPU per delivery | load-gen CPU | other CPU | limited by | received / server counted | p50 / p99 ms (saturated) |",
  );
  out.push("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |");
  const sinalMax = sum("sinal", "max");
  for (const t of targets) {
    const x = sum(t, "max");
    if (!x) {
      out.push(`| ${LABELS[t]} | failed | | | | | | | | | | |`);
      continue;
    }
    out.push(
      `| ${LABELS[t]} | ${fmtM(x.deliveriesPerSec)} | ${fmtM(x.minDeliveriesPerSec)}–${fmtM(x.maxDeliveriesPerSec)} | ` +
        `${t === "sinal" ? "" : ratio(sinalMax?.deliveriesPerSec, x.deliveriesPerSec)} | ${x.frameBytes} | ` +
        `${fmt(x.serverCpu, 0)}% | ${fmt(x.serverNsPerDelivery, 0)} | ${fmt(x.loadgenCpu, 0)}% | ${fmtOther(x.otherCpu)} | ${boundBy(x)} | ${counted(x)} | ${fmt(x.p50, 1)} / ${fmt(x.p99, 1)} |`,
    );
  }
  out.push("");
  out.push(
    `Saturated latencies (every ${s.maxLatencyEvery}th subscriber sampled) mostly measure the queue of ${s.window} publications in flight; ` +
      `the fixed-load table below is the latency figure.`,
  );
  out.push("");

  const anyFixed = r.fanout.find((p) => p.phase === "fixed");
  const offered = anyFixed ? (anyFixed.offered_rate ?? 0) * anyFixed.subscribers : 0;
  out.push(
    `### Fan-out, fixed offered load: ${anyFixed?.offered_rate ?? "?"} publications/s × ${fmtInt(anyFixed?.subscribers ?? 0)} subscribers = ` +
      `${fmtInt(offered)} deliveries/s, ${s.fixedSec} s per round, publish-to-receive latency of every delivery`,
  );
  out.push("");
  out.push("| server | achieved deliveries/s | p50 ms | p99 ms | p99 per round | p99.9 ms | max ms | sinal p99 ÷ this | server CPU | load-gen CPU | other CPU | received / server counted |");
  out.push("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
  const sinalFixed = sum("sinal", "fixed");
  for (const t of targets) {
    const x = sum(t, "fixed");
    if (!x) {
      out.push(`| ${LABELS[t]} | failed | | | | | | | | | | |`);
      continue;
    }
    out.push(
      `| ${LABELS[t]} | ${fmtInt(x.deliveriesPerSec)}${x.allDrained ? "" : " (fell behind)"} | ${fmt(x.p50)} | ${fmt(x.p99)} | ${x.p99s.map((v) => fmt(v, 1)).join(", ")} | ` +
        `${fmt(x.p999)} | ${fmt(x.maxLatency)} | ${t === "sinal" ? "" : ratio(sinalFixed?.p99, x.p99)} | ` +
        `${fmt(x.serverCpu, 0)}% | ${fmt(x.loadgenCpu, 0)}% | ${fmtOther(x.otherCpu)} | ${counted(x)} |`,
    );
  }
  out.push("");

  const sinalMem = mem("sinal");
  if (r.memory.length > 0 || r.failures.some((f) => f.phase === "memory")) {
    out.push(`### Idle memory: ${fmtInt(s.idleConnections ?? 0)} connections (opened by ${s.idleProcesses} load-generator processes), server VmRSS`);
    out.push("");
    out.push("| server | connected (failed) | server saw | seconds to open | RSS before MB | RSS after MB | MB per 1,000 connections | sinal ÷ this | server CPU while idle |");
    out.push("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (const t of targets) {
      const x = mem(t);
      if (!x) {
        out.push(`| ${LABELS[t]} | failed | | | | | | | |`);
        continue;
      }
      out.push(
        `| ${LABELS[t]} | ${fmtInt(x.connected)} (${x.failed}) | ${x.server_connections === null ? "?" : fmtInt(x.server_connections)} | ${fmt(x.open_seconds, 1)} | ` +
          `${fmt(x.rss_before_kb / 1024, 1)} | ${fmt(x.rss_after_kb / 1024, 1)} | ${fmt(x.mb_per_1000)} | ${t === "sinal" ? "" : ratio(sinalMem?.mb_per_1000, x.mb_per_1000)} | ${fmt(x.idle_cpu_pct, 1)}% |`,
      );
    }
    out.push("");
  }

  out.push("### Targets (sinal against bare Bun)");
  out.push("");
  out.push("| target | measured | met |");
  out.push("| --- | --- | --- |");
  const bunMax = sum("bun", "max");
  const bunFixed = sum("bun", "fixed");
  const perRound = (kind: "max" | "fixed", f: (p: FanoutPhase) => number | undefined) =>
    r.fanout
      .filter((p) => p.target === "sinal" && p.phase === kind)
      .map((p) => {
        const other = r.fanout.find((q) => q.target === "bun" && q.phase === kind && q.round === p.round);
        return other ? (f(p) ?? Number.NaN) / (f(other) ?? Number.NaN) : Number.NaN;
      });
  const tput = sinalMax && bunMax ? sinalMax.deliveriesPerSec / bunMax.deliveriesPerSec : Number.NaN;
  const tputRounds = perRound("max", (p) => p.deliveries_per_sec);
  const cost = sinalMax && bunMax ? sinalMax.serverNsPerDelivery / bunMax.serverNsPerDelivery : Number.NaN;
  const lat = sinalFixed && bunFixed ? sinalFixed.p99 / bunFixed.p99 : Number.NaN;
  const latRounds = perRound("fixed", (p) => p.latency?.p99_ms);
  const yes = (ok: boolean, known: boolean) => (!known ? "not measured" : ok ? "yes" : "**no**");
  const list = (v: number[], pct: boolean) => v.map((x) => (pct ? `${(x * 100).toFixed(0)}%` : `${x.toFixed(2)}×`)).join(", ");
  out.push(
    `| deliveries/s ≥ 80% of bare Bun | ${Number.isFinite(tput) ? `${(tput * 100).toFixed(0)}% of medians (per round: ${list(tputRounds, true)})` : "n/a"} | ${yes(tput >= 0.8, Number.isFinite(tput))} |`,
  );
  out.push(
    `| p99 at ${fmtInt(offered)} deliveries/s ≤ 1.5× bare Bun | ${Number.isFinite(lat) ? `${fmt(sinalFixed?.p99)} ms vs ${fmt(bunFixed?.p99)} ms = ${lat.toFixed(2)}× (per round: ${list(latRounds, false)})` : "n/a"} | ${yes(lat <= 1.5, Number.isFinite(lat))} |`,
  );
  out.push(
    `| (supporting) server CPU per delivery at max throughput | ${Number.isFinite(cost) ? `${fmt(sinalMax?.serverNsPerDelivery, 0)} ns vs ${fmt(bunMax?.serverNsPerDelivery, 0)} ns = ${cost.toFixed(2)}× bare Bun` : "n/a"} | |`,
  );
  const mb = sinalMem?.mb_per_1000;
  out.push(`| idle memory < 3 MB per 1,000 authenticated connections | ${mb === undefined ? "n/a" : `${fmt(mb)} MB`} | ${yes((mb ?? Infinity) < 3, mb !== undefined && Number.isFinite(mb))} |`);
  out.push("");

  out.push("<details><summary>Every round</summary>");
  out.push("");
  out.push("| round | server | phase | deliveries/s | p50 ms | p99 ms | server CPU | server ns/delivery | load-gen CPU | other CPU | attempt |");
  out.push("| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
  for (const p of r.fanout) {
    out.push(
      `| ${p.round ?? 1} | ${p.target} | ${p.phase} | ${fmtInt(p.deliveries_per_sec)} | ${fmt(p.latency?.p50_ms)} | ${fmt(p.latency?.p99_ms)} | ` +
        `${p.server_cpu_pct}% | ${fmt(nsPerDelivery(p), 0)} | ${p.loadgen_cpu_pct}% | ${fmtOther(p.other_cpu_pct)} | ${p.attempt} |`,
    );
  }
  out.push("");
  out.push("</details>");
  out.push("");

  const notes: string[] = [];
  for (const p of r.fanout) {
    const tag = `${p.target} ${p.phase} round ${p.round ?? 1}`;
    if (p.closed_during_run > 0) notes.push(`${tag}: ${p.closed_during_run} connections closed during the run (${p.close_reasons.join("; ")})`);
    if (p.other_cpu_pct >= 15) notes.push(`${tag}: other processes used ${p.other_cpu_pct}% of a core during the phase (after ${p.attempt} attempts); its figures are skewed`);
    if (!p.drained) notes.push(`${tag}: not every delivery arrived within 5 s after the publisher stopped (the server could not keep up)`);
    if (p.stalled) notes.push(`${tag}: deliveries stopped for 0.5 s; the phase ended early`);
  }
  for (const x of r.memory) if (x.failed > 0) notes.push(`${x.target} idle: ${x.failed} connections failed (${x.errors.join("; ")})`);
  for (const f of r.failures) notes.push(`${f.target} ${f.phase} FAILED: ${f.message}`);
  if (notes.length > 0) {
    out.push("Notes:");
    for (const n of notes) out.push(`- ${n}`);
    out.push("");
  }
  return out.join("\n");
}
