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

const fmtInt = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString("en-US") : "n/a");
const fmtM = (n: number) => (Number.isFinite(n) ? `${(n / 1e6).toFixed(2)}M` : "n/a");
const fmt = (n: number | undefined, digits = 2) => (n === undefined || !Number.isFinite(n) ? "n/a" : n.toFixed(digits));
const ratio = (a: number | undefined, b: number | undefined) =>
  a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0 ? "n/a" : `${(a / b).toFixed(2)}×`;

/** Who limited a max-throughput phase, judged from CPU use (each process is pinned to one core). */
export function boundBy(p: FanoutPhase): string {
  if (p.server_cpu_pct >= 90) return "server";
  if (p.loadgen_cpu_pct >= 90) return "**load generator**";
  if (p.other_cpu_pct >= 30) return "**other processes**";
  return "neither (window/latency)";
}

function counted(p: FanoutPhase): string {
  const same = p.received === p.server_deliveries;
  return `${fmtInt(p.received)} / ${fmtInt(p.server_deliveries)}${same ? "" : " **(differ)**"}`;
}

export function renderReport(r: Report): string {
  const m = r.machine;
  const s = r.settings as Record<string, number>;
  const phase = (t: TargetName, kind: "max" | "fixed") => r.fanout.find((p) => p.target === t && p.phase === kind);
  const mem = (t: TargetName) => r.memory.find((x) => x.target === t);
  const targets = [...new Set([...r.fanout.map((p) => p.target), ...r.memory.map((x) => x.target)])];
  const out: string[] = [];

  out.push(`## sinal benchmark, ${r.started_at.slice(0, 19).replace("T", " ")} UTC`);
  out.push("");
  out.push(
    `Machine: ${m.nproc} cores (${m.cpu_model}), ${m.memory_gb} GB, Linux ${m.kernel}; bun ${m.bun}, node ${m.node}, ws ${m.ws}, socket.io ${m.socket_io}. ` +
      `Server pinned to core 0, load generator to core 1; everything on 127.0.0.1.`,
  );
  out.push("");

  out.push(
    `### Fan-out, max throughput: 1 publisher → ${fmtInt(s.subscribers ?? 0)} subscribers of one channel, ${s.payloadBytes}-byte payload, ` +
      `${s.maxSec} s, at most ${s.window} publications in flight`,
  );
  out.push("");
  out.push("| server | deliveries/s | sinal ÷ this | frame bytes | server CPU | load-gen CPU | other CPU | limited by | received / server counted | p50 / p99 ms (saturated) |");
  out.push("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |");
  const sinalMax = phase("sinal", "max");
  for (const t of targets) {
    const p = phase(t, "max");
    if (!p) {
      out.push(`| ${LABELS[t]} | failed | | | | | | | | |`);
      continue;
    }
    out.push(
      `| ${LABELS[t]} | ${fmtM(p.deliveries_per_sec)} | ${t === "sinal" ? "" : ratio(sinalMax?.deliveries_per_sec, p.deliveries_per_sec)} | ${p.frame_bytes} | ` +
        `${p.server_cpu_pct}% | ${p.loadgen_cpu_pct}% | ${p.other_cpu_pct}% | ${boundBy(p)} | ${counted(p)}${p.stalled ? " (stalled)" : ""} | ` +
        `${fmt(p.latency?.p50_ms, 1)} / ${fmt(p.latency?.p99_ms, 1)} |`,
    );
  }
  out.push("");

  const fixed = r.fanout.find((p) => p.phase === "fixed");
  const offered = fixed ? (fixed.offered_rate ?? 0) * fixed.subscribers : 0;
  out.push(
    `### Fan-out, fixed offered load: ${fixed?.offered_rate ?? "?"} publications/s × ${fmtInt(fixed?.subscribers ?? 0)} subscribers = ${fmtInt(offered)} deliveries/s, ${s.fixedSec} s`,
  );
  out.push("");
  out.push("| server | achieved deliveries/s | p50 ms | p99 ms | p99.9 ms | max ms | sinal p99 ÷ this | server CPU | load-gen CPU | other CPU | received / server counted |");
  out.push("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
  const sinalFixed = phase("sinal", "fixed");
  for (const t of targets) {
    const p = phase(t, "fixed");
    if (!p || !p.latency) {
      out.push(`| ${LABELS[t]} | failed | | | | | | | | | |`);
      continue;
    }
    const l = p.latency;
    out.push(
      `| ${LABELS[t]} | ${fmtInt(p.deliveries_per_sec)}${p.drained ? "" : " (backlog)"} | ${fmt(l.p50_ms)} | ${fmt(l.p99_ms)} | ${fmt(l.p999_ms)} | ${fmt(l.max_ms)} | ` +
        `${t === "sinal" ? "" : ratio(sinalFixed?.latency?.p99_ms, l.p99_ms)} | ${p.server_cpu_pct}% | ${p.loadgen_cpu_pct}% | ${p.other_cpu_pct}% | ${counted(p)} |`,
    );
  }
  out.push("");

  out.push(`### Idle memory: ${fmtInt(s.idleConnections ?? 0)} connections (opened by ${s.idleProcesses} load-generator processes), server VmRSS`);
  out.push("");
  out.push("| server | connected (failed) | server saw | RSS before MB | RSS after MB | MB per 1,000 connections | sinal ÷ this |");
  out.push("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
  const sinalMem = mem("sinal");
  for (const t of targets) {
    const x = mem(t);
    if (!x) {
      out.push(`| ${LABELS[t]} | failed | | | | | |`);
      continue;
    }
    out.push(
      `| ${LABELS[t]} | ${fmtInt(x.connected)} (${x.failed}) | ${x.server_connections === null ? "?" : fmtInt(x.server_connections)} | ` +
        `${fmt(x.rss_before_kb / 1024, 1)} | ${fmt(x.rss_after_kb / 1024, 1)} | ${fmt(x.mb_per_1000)} | ${t === "sinal" ? "" : ratio(sinalMem?.mb_per_1000, x.mb_per_1000)} |`,
    );
  }
  out.push("");

  out.push("### Targets (sinal against bare Bun)");
  out.push("");
  out.push("| target | measured | met |");
  out.push("| --- | --- | --- |");
  const bunMax = phase("bun", "max");
  const bunFixed = phase("bun", "fixed");
  const tput = sinalMax && bunMax ? sinalMax.deliveries_per_sec / bunMax.deliveries_per_sec : Number.NaN;
  const lat = sinalFixed?.latency && bunFixed?.latency ? sinalFixed.latency.p99_ms / bunFixed.latency.p99_ms : Number.NaN;
  const yes = (ok: boolean, known: boolean) => (!known ? "not measured" : ok ? "yes" : "**no**");
  out.push(`| deliveries/s ≥ 80% of bare Bun | ${Number.isFinite(tput) ? `${(tput * 100).toFixed(0)}%` : "n/a"} | ${yes(tput >= 0.8, Number.isFinite(tput))} |`);
  out.push(
    `| p99 at ${fmtInt(offered)} deliveries/s ≤ 1.5× bare Bun | ${Number.isFinite(lat) ? `${fmt(sinalFixed?.latency?.p99_ms)} ms vs ${fmt(bunFixed?.latency?.p99_ms)} ms = ${lat.toFixed(2)}×` : "n/a"} | ${yes(lat <= 1.5, Number.isFinite(lat))} |`,
  );
  const mb = sinalMem?.mb_per_1000;
  out.push(`| idle memory < 3 MB per 1,000 authenticated connections | ${mb === undefined ? "n/a" : `${fmt(mb)} MB`} | ${yes((mb ?? Infinity) < 3, mb !== undefined && Number.isFinite(mb))} |`);
  out.push("");

  const notes: string[] = [];
  for (const p of r.fanout) {
    if (p.closed_during_run > 0) notes.push(`${p.target} ${p.phase}: ${p.closed_during_run} connections closed during the run (${p.close_reasons.join("; ")})`);
    if (p.other_cpu_pct >= 20) notes.push(`${p.target} ${p.phase}: other processes used ${p.other_cpu_pct}% of a core during the phase; its figures are skewed`);
    if (!p.drained) notes.push(`${p.target} ${p.phase}: not every delivery arrived within 5 s after the publisher stopped (the server could not keep up)`);
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
