/** Result shapes of the chat benchmark (bench/chat/run.ts) and their markdown rendering. */
import { median } from "../lib/report.ts";

/** One measured step: every load-generator process's line for it, added up. */
export interface Step {
  kind: "warm-up" | "scenario" | "ladder";
  offered: number;
  repeat: number;
  sent: number;
  /** Messages per second the generators actually sent (sent ÷ their send time). */
  sendRate: number;
  acked: number;
  errors: number;
  delivered: number;
  expected: number;
  drained: boolean;
  /** Stored (acknowledged) messages per second: acked ÷ time from the step's start to its last ack. */
  storedPerSec: number;
  latencySamples: number;
  p50: number;
  p99: number;
  max: number;
  wallSec: number;
  /** Percent of one core over the step's wall time (sending and draining). */
  sinalCpuPct: number;
  postgresCpuPct: number;
  loadgenCpuPct: number;
  /** The machine's busy time minus sinal, PostgreSQL and the generators (other workers' tests). */
  otherCpuPct: number;
  /** Percent of the step sinal's threads spent runnable but waiting for a core (taken by others). */
  sinalWaitPct: number;
  /**
   * The same readings over the send time only (up to the planned end of sending, without the
   * tail); the generators' CPU in `otherCpuPct` is taken as even over the step.
   */
  sending: { sinalCpuPct: number; postgresCpuPct: number; otherCpuPct: number; sinalWaitPct: number };
  /** Server CPU per stored message: sinal's, PostgreSQL's, and both. */
  sinalUsPerMsg: number;
  postgresUsPerMsg: number;
  serverUsPerMsg: number;
  /** The same, less what sinal and PostgreSQL use idle over the step's wall time. */
  serverUsPerMsgNet: number;
}

export interface StoreRun {
  store: "sqlite" | "postgres";
  description: string;
  loadBefore: string;
  loadAfter: string;
  steps: Step[];
  skippedRates: number[];
  storedInDb: number | null;
  ackedTotal: number;
  /** Percent of a core with every user connected and nobody sending. */
  idleSinalCpuPct: number;
  idlePostgresCpuPct: number;
  failure?: string;
  /** Why the run ended before its last step, if it did. */
  stopped?: string;
  /** The end of what sinal wrote (LOG_LEVEL=warn), if anything. */
  sinalOutput?: string;
}

export interface ChatReport {
  startedAt: string;
  finishedAt: string;
  machine: Record<string, string | number>;
  settings: Record<string, string | number>;
  loadBefore: string;
  loadAfter: string;
  stores: StoreRun[];
}

const P99_LIMIT_MS = 100;
const fmtInt = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString("en-US") : "n/a");
const fmt = (n: number, digits = 1) => (Number.isFinite(n) ? n.toFixed(digits) : "n/a");
const range = (v: number[], f: (n: number) => string) => (v.length ? `${f(Math.min(...v))}–${f(Math.max(...v))}` : "n/a");

/** The repeats of one step, summarized by medians and ranges. */
export interface StepSummary {
  offered: number;
  repeats: Step[];
  p99: number;
  p99s: number[];
  p50: number;
  stored: number;
  storedAll: number[];
  sendRate: number;
  sinalCpu: number;
  postgresCpu: number;
  loadgenCpu: number;
  otherCpu: number;
  sinalWait: number;
  /** Medians over the send time only. */
  sendingServerCpu: number;
  sendingSinalWait: number;
  sendingOtherCpu: number;
  serverUs: number;
  serverUsAll: number[];
  serverUsNet: number;
  sinalUs: number;
  postgresUs: number;
  allDrained: boolean;
}

export function summarize(steps: Step[], kind: Step["kind"]): StepSummary[] {
  const rates = [...new Set(steps.filter((s) => s.kind === kind).map((s) => s.offered))];
  return rates.map((offered) => {
    const repeats = steps.filter((s) => s.kind === kind && s.offered === offered);
    const pick = (f: (s: Step) => number) => repeats.map(f);
    return {
      offered,
      repeats,
      p99: median(pick((s) => s.p99)),
      p99s: pick((s) => s.p99),
      p50: median(pick((s) => s.p50)),
      stored: median(pick((s) => s.storedPerSec)),
      storedAll: pick((s) => s.storedPerSec),
      sendRate: median(pick((s) => s.sendRate)),
      sinalCpu: median(pick((s) => s.sinalCpuPct)),
      postgresCpu: median(pick((s) => s.postgresCpuPct)),
      loadgenCpu: median(pick((s) => s.loadgenCpuPct)),
      otherCpu: median(pick((s) => s.otherCpuPct)),
      sinalWait: median(pick((s) => s.sinalWaitPct)),
      sendingServerCpu: median(pick((s) => s.sending.sinalCpuPct + s.sending.postgresCpuPct)),
      sendingSinalWait: median(pick((s) => s.sending.sinalWaitPct)),
      sendingOtherCpu: median(pick((s) => s.sending.otherCpuPct)),
      serverUs: median(pick((s) => s.serverUsPerMsg)),
      serverUsAll: pick((s) => s.serverUsPerMsg),
      serverUsNet: median(pick((s) => s.serverUsPerMsgNet)),
      sinalUs: median(pick((s) => s.sinalUsPerMsg)),
      postgresUs: median(pick((s) => s.postgresUsPerMsg)),
      allDrained: repeats.every((s) => s.drained && s.errors === 0 && s.delivered === s.expected),
    };
  });
}

/** A ladder step counts as sustained when its median p99 is under 100 ms and it stored ≥ 95% of the offered rate. */
export const sustained = (s: StepSummary) => s.p99 < P99_LIMIT_MS && s.stored >= 0.95 * s.offered && s.allDrained;

export function best(run: StoreRun): StepSummary | undefined {
  return summarize(run.steps, "ladder").filter(sustained).at(-1);
}

/**
 * Who limits a step, from the readings over its send time: sinal and PostgreSQL share the server
 * core, the generators have theirs; sinal runnable but waiting for a core means others took it.
 */
export function limitedBy(s: StepSummary): string {
  const server = s.sendingServerCpu;
  if (s.loadgenCpu >= 85) return `load generator (${fmt(s.loadgenCpu, 0)}% of its core)`;
  if (server >= 85) return `server core (${fmt(server, 0)}% while sending)`;
  if (s.sendingSinalWait >= 10) return `server core shared with other processes (server ${fmt(server, 0)}%, sinal waiting for it ${fmt(s.sendingSinalWait, 0)}% of the send time)`;
  return `neither core saturated (server ${fmt(server, 0)}% while sending): waiting (commits, fsync)`;
}

export function renderChat(r: ChatReport): string {
  const m = r.machine;
  const s = r.settings;
  const out: string[] = [];
  out.push(`## Chat on sqlite and PostgreSQL, ${r.startedAt.slice(0, 19).replace("T", " ")} UTC`);
  out.push("");
  out.push(
    `Machine: ${m.nproc} cores (${m.cpu}), Linux ${m.kernel}, temp files on ${m.tmpfs}; bun ${m.bun}; sinal at ${m.commit}. ` +
      `sinal${r.stores.some((x) => x.store === "postgres") ? " and PostgreSQL" : ""} pinned to core ${s.serverCpus}, ${s.workers} load-generator process(es) to core ${s.loadgenCpus}; 127.0.0.1 only. ` +
      `Load average (1/5/15 min) before: ${r.loadBefore}; after: ${r.loadAfter}.`,
  );
  out.push("");
  out.push(
    `${fmtInt(Number(s.users))} users in rooms of ${s.roomSize}; warm-up ${s.warmupSec} s at ${fmtInt(Number(s.warmupRate))} msg/s; ` +
      `scenario ${s.repeats} × ${s.scenarioSec} s at 1 msg/s per user; ladder ${s.rates} msg/s, ${s.repeats} × ${s.stepSec} s each ` +
      `(up to ${s.drainSec} s more per step for the tail). Latency: send to receipt of \`new_message\` by the sender's room mates.`,
  );
  out.push("");
  for (const run of r.stores) renderStore(out, run);
  renderTargets(out, r);
  return out.join("\n");
}

function renderStore(out: string[], run: StoreRun): void {
  out.push(`### ${run.description}`);
  out.push("");
  out.push(
    `Load average before: ${run.loadBefore}; after: ${run.loadAfter}. Idle, every user connected: sinal ${fmt(run.idleSinalCpuPct)}% of a core` +
      `${run.store === "postgres" ? `, PostgreSQL ${fmt(run.idlePostgresCpuPct)}%` : ""}.`,
  );
  out.push("");
  if (run.failure) {
    out.push(`**Failed:** ${run.failure}`);
    out.push("");
  }
  const scenario = summarize(run.steps, "scenario")[0];
  if (scenario) {
    out.push(
      `Scenario, ${fmtInt(scenario.offered)} users × 1 msg/s: p99 median **${fmt(scenario.p99, 2)} ms**, range ${range(scenario.p99s, (n) => fmt(n, 2))} ms; ` +
        `per repeat p50/p99 ${scenario.repeats.map((x) => `${fmt(x.p50, 2)}/${fmt(x.p99, 2)}`).join(", ")} ms; server ${fmt(scenario.serverUs, 0)} µs CPU per stored message (${fmt(scenario.serverUsNet, 0)} net of idle).`,
    );
    out.push("");
  }
  out.push(
    "| offered msg/s | sent msg/s | stored msg/s, median (range) | p50 ms | p99 ms, median (range) | max ms | sinal CPU | PostgreSQL CPU | server CPU while sending | server µs CPU / stored msg (range) | net of idle | load-gen CPU | other CPU while sending | sinal waiting for a core while sending | all acked and delivered | limited by |",
  );
  out.push("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |");
  for (const x of summarize(run.steps, "ladder")) {
    out.push(
      `| ${fmtInt(x.offered)} | ${fmtInt(x.sendRate)} | ${fmtInt(x.stored)} (${range(x.storedAll, fmtInt)}) | ${fmt(x.p50)} | ${fmt(x.p99)} (${range(x.p99s, (n) => fmt(n))}) | ` +
        `${fmt(Math.max(...x.repeats.map((y) => y.max)), 0)} | ${fmt(x.sinalCpu, 0)}% | ${run.store === "postgres" ? `${fmt(x.postgresCpu, 0)}%` : "–"} | ${fmt(x.sendingServerCpu, 0)}% | ` +
        `${fmt(x.serverUs, 0)} (${range(x.serverUsAll, (n) => fmt(n, 0))})${run.store === "postgres" ? ` = ${fmt(x.sinalUs, 0)} + ${fmt(x.postgresUs, 0)}` : ""} | ${fmt(x.serverUsNet, 0)} | ` +
        `${fmt(x.loadgenCpu, 0)}% | ${fmt(x.sendingOtherCpu, 0)}% | ${fmt(x.sendingSinalWait, 0)}% | ${x.allDrained ? "yes" : "**no**"} | ${limitedBy(x)} |`,
    );
  }
  if (run.skippedRates.length) out.push(`| ${run.skippedRates.map(fmtInt).join(", ")} | not run | | | | | | | | | | | | | | |`);
  out.push("");
  if (run.stopped) {
    out.push(`Stopped early: ${run.stopped}.`);
    out.push("");
  }
  const top = best(run);
  out.push(
    `Highest offered rate with median p99 < ${P99_LIMIT_MS} ms (and ≥ 95% of it stored): **${top ? `${fmtInt(top.offered)} msg/s** (stored ${fmtInt(top.stored)}/s, p99 ${fmt(top.p99)} ms)` : "none**"}. ` +
      `Messages in the database at the end: ${run.storedInDb === null ? "not counted" : fmtInt(run.storedInDb)}; acknowledged: ${fmtInt(run.ackedTotal)} ` +
      `(every acknowledged message stored: ${run.storedInDb === null ? "not checked" : run.storedInDb >= run.ackedTotal ? "yes" : "**NO**"}).`,
  );
  out.push("");
  out.push("<details><summary>Every step</summary>");
  out.push("");
  out.push("| step | offered | repeat | sent msg/s | stored msg/s | p50 ms | p99 ms | max ms | sinal CPU | PostgreSQL CPU | µs / msg | load-gen CPU | other CPU | sinal waiting | acked / sent | delivered / expected |");
  out.push("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
  for (const x of run.steps) {
    out.push(
      `| ${x.kind} | ${fmtInt(x.offered)} | ${x.repeat} | ${fmtInt(x.sendRate)} | ${fmtInt(x.storedPerSec)} | ${fmt(x.p50, 2)} | ${fmt(x.p99, 2)} | ${fmt(x.max, 0)} | ` +
        `${fmt(x.sinalCpuPct, 0)}% | ${fmt(x.postgresCpuPct, 0)}% | ${fmt(x.serverUsPerMsg, 0)} | ${fmt(x.loadgenCpuPct, 0)}% | ${fmt(x.otherCpuPct, 0)}% | ${fmt(x.sinalWaitPct, 0)}% | ` +
        `${fmtInt(x.acked)} / ${fmtInt(x.sent)}${x.errors ? ` (${x.errors} errors)` : ""} | ${fmtInt(x.delivered)} / ${fmtInt(x.expected)} |`,
    );
  }
  out.push("");
  out.push("</details>");
  out.push("");
}

function renderTargets(out: string[], r: ChatReport): void {
  const sqlite = r.stores.find((x) => x.store === "sqlite");
  const pg = r.stores.find((x) => x.store === "postgres");
  const yes = (ok: boolean | undefined) => (ok === undefined ? "not measured" : ok ? "yes" : "**no**");
  out.push("### Targets (issue 12)");
  out.push("");
  out.push("| target | measured | met |");
  out.push("| --- | --- | --- |");
  for (const run of [sqlite, pg]) {
    if (!run) continue;
    const sc = summarize(run.steps, "scenario")[0];
    out.push(
      `| ${run.store}: p99 < 25 ms at 1,000 users × 1 msg/s | ${sc ? `median ${fmt(sc.p99, 2)} ms (range ${range(sc.p99s, (n) => fmt(n, 2))})` : "n/a"} | ${yes(sc && Number.isFinite(sc.p99) ? sc.p99 < 25 : undefined)} |`,
    );
  }
  const sTop = sqlite ? best(sqlite) : undefined;
  const pTop = pg ? best(pg) : undefined;
  if (sqlite) out.push(`| sqlite (synchronous=full): 20,000 stored msg/s with p99 < 100 ms | ${sTop ? `${fmtInt(sTop.offered)} msg/s` : "none"} | ${yes((sTop?.offered ?? 0) >= 20_000)} |`);
  if (pg) out.push(`| PostgreSQL: ≥ 10,000 stored msg/s (half of 20,000) with p99 < 100 ms | ${pTop ? `${fmtInt(pTop.offered)} msg/s` : "none"} | ${yes((pTop?.offered ?? 0) >= 10_000)} |`);
  out.push("");
}
