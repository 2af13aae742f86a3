/**
 * Recovery benchmark: `bun bench/recovery/run.ts` (about 2 minutes).
 *
 * 1,000 clients each miss 100 publications and resubscribe at once with `since`; the reference in
 * the same run is the same 1,000 clients reconnecting and subscribing without `since` (no replay).
 * For each scenario (channel × payload size) a fresh sinal (`bun src/main.ts serve`, sqlite store,
 * pinned to core 0) and one load generator (bench/recovery/loadgen.ts, core 1) that runs the rounds
 * in ABBA order (base, recover, recover, base, ...). Server CPU and RSS are read from /proc by the
 * load generator; the orchestrator (this file, core 1) only starts, collects and reports.
 * A recovery that is not exact (not recovered:true, not exactly the missed publications in order,
 * a duplicate, a timeout) fails the run with exit code 1.
 *
 * Settings (environment): BENCH_RECOVERY_CLIENTS [1000], BENCH_RECOVERY_MISSED [100],
 * BENCH_RECOVERY_ROUNDS [3: rounds of each mode per scenario], BENCH_RECOVERY_SCENARIOS
 * [dept:bench/20,dept:bench/200,dept:bench/1000,room:bench/20,room:bench/200,room:bench/1000:
 * channel/payload bytes], BENCH_RECOVERY_WINDOW_MS [500: the before and after windows],
 * BENCH_RECOVERY_TIMEOUT_SEC [30], BENCH_RECOVERY_DEADLINE_SEC [240],
 * BENCH_RECOVERY_SINAL_ENV (extra sinal settings, "K=V;K=V"), BENCH_RECOVERY_BUN_FLAGS (bun flags for sinal).
 * Writes bench/results/recovery-<time>.json and bench/results/recovery-latest.{json,md}.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, release, tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { median } from "../lib/report.ts";
import { BUN, ROOT, exited, loadavg, startSinal } from "../lib/proc.ts";

const RESULTS = join(ROOT, "bench/results");
const env = process.env;
const num = (name: string, fallback: number) => (env[name] === undefined || env[name] === "" ? fallback : Number(env[name]));
const CLIENTS = num("BENCH_RECOVERY_CLIENTS", 1000);
const MISSED = num("BENCH_RECOVERY_MISSED", 100);
const ROUNDS = Math.max(1, num("BENCH_RECOVERY_ROUNDS", 3));
const WINDOW_MS = num("BENCH_RECOVERY_WINDOW_MS", 500);
const TIMEOUT_SEC = num("BENCH_RECOVERY_TIMEOUT_SEC", 30);
const DEADLINE_SEC = num("BENCH_RECOVERY_DEADLINE_SEC", 240);
const SCENARIOS = (env.BENCH_RECOVERY_SCENARIOS ?? "dept:bench/20,dept:bench/200,dept:bench/1000,room:bench/20,room:bench/200,room:bench/1000")
  .split(",")
  .map((s) => {
    const [channel, bytes] = s.trim().split("/");
    if (!channel || !/^\d+$/.test(bytes ?? "")) throw new Error(`BENCH_RECOVERY_SCENARIOS: "${s}" is not channel/payload-bytes`);
    return { channel, payloadBytes: Number(bytes) };
  });
const EXTRA_ENV = Object.fromEntries(
  (env.BENCH_RECOVERY_SINAL_ENV ?? "")
    .split(";")
    .filter((kv) => kv.includes("="))
    .map((kv) => [kv.slice(0, kv.indexOf("=")).trim(), kv.slice(kv.indexOf("=") + 1).trim()]),
);
const TENANT = "bench";

const startedAt = new Date();
const log = (msg: string) => process.stderr.write(`[recovery ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
spawnSync("taskset", ["-a", "-cp", "1", String(process.pid)], { stdio: "ignore" });
const children = new Set<ChildProcess>();
const dir = mkdtempSync(join(tmpdir(), "sinal-recovery-bench-"));
function killAll(): void {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
}
process.on("exit", killAll);
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(sig, () => process.exit(130));
setTimeout(() => {
  log(`deadline of ${DEADLINE_SEC} s passed; stopping everything`);
  process.exit(1);
}, DEADLINE_SEC * 1000).unref();


const secret = randomBytes(32).toString("base64url");
const apiKey = `sk_bench_${randomBytes(16).toString("hex")}`;

function startRecoverySinal(dbPath: string) {
  // BENCH_RECOVERY_BUN_FLAGS: e.g. "--cpu-prof-md --cpu-prof-dir=/tmp/prof" to profile sinal
  const flags = (env.BENCH_RECOVERY_BUN_FLAGS ?? "").split(" ").filter(Boolean);
  return startSinal(children, { JWT_SECRET: secret, DATABASE_URL: `sqlite:${dbPath}`, SINAL_API_KEYS: `${TENANT}:${apiKey}`, ...EXTRA_ENV }, flags);
}

type Stats = { ms: number; server_cpu_ms: number; server_cpu_ms_schedstat: number; server_cpu_pct: number; loadgen_cpu_pct: number; other_cpu_pct: number; rss_end_kb: number; rss_peak_sampled_kb: number; rss_peak_hwm_kb?: number };
interface Round {
  round: number;
  mode: "base" | "recover";
  ms_to_all_done: number;
  client_done_ms: { p50: number; p90: number; p99: number; max: number };
  client_reply_ms: { p50: number; p99: number; max: number };
  replayed: number;
  expected_replayed: number;
  replay_bytes_per_client: number;
  slow_clients_after: number;
  before: Stats;
  during: Stats;
  after: Stats;
}
interface ScenarioResult {
  channel: string;
  history: string;
  payloadBytes: number;
  loadavg_before: string;
  rounds: Round[];
  server_exit: number | null;
  server_warnings: string[];
  error?: string;
}

const order: ("base" | "recover")[] = [];
for (let i = 0; i < ROUNDS; i++) order.push(...(i % 2 === 0 ? (["base", "recover"] as const) : (["recover", "base"] as const)));

const results: ScenarioResult[] = [];
log(`${SCENARIOS.length} scenarios, ${CLIENTS} clients missing ${MISSED} publications, ${ROUNDS} rounds per mode (${order.join(", ")})`);
for (const [i, sc] of SCENARIOS.entries()) {
  const kind = sc.channel.split(":")[0]!;
  const result: ScenarioResult = {
    channel: sc.channel,
    history: kind === "room" ? "sqlite" : "memory",
    payloadBytes: sc.payloadBytes,
    loadavg_before: loadavg(),
    rounds: [],
    server_exit: null,
    server_warnings: [],
  };
  results.push(result);
  log(`scenario ${i + 1}/${SCENARIOS.length}: ${sc.channel}, ${sc.payloadBytes}-byte data; load average ${result.loadavg_before}`);
  let server: Awaited<ReturnType<typeof startSinal>>;
  try {
    server = await startRecoverySinal(join(dir, `s${i}.db`));
  } catch (err) {
    result.error = (err as Error).message;
    log(`scenario ${sc.channel}/${sc.payloadBytes} FAILED: ${result.error}`);
    continue;
  }
  try {
    const lg = spawn(
      "taskset",
      [
        "-c",
        "1",
        BUN,
        "bench/recovery/loadgen.ts",
        JSON.stringify({
          host: "127.0.0.1",
          port: server.port,
          secret,
          apiKey,
          tenant: TENANT,
          serverPid: server.child.pid,
          channel: sc.channel,
          clients: CLIENTS,
          missed: MISSED,
          payloadBytes: sc.payloadBytes,
          rounds: order,
          timeoutSec: TIMEOUT_SEC,
          windowMs: WINDOW_MS,
          deadlineSec: DEADLINE_SEC,
        }),
      ],
      { cwd: ROOT, stdio: ["ignore", "pipe", "inherit"] },
    );
    children.add(lg);
    for await (const line of createInterface({ input: lg.stdout! })) {
      if (!line.startsWith("{")) continue;
      const msg = JSON.parse(line) as { event: string; message?: string } & Round;
      if (msg.event === "round") result.rounds.push(msg);
      if (msg.event === "error") result.error = msg.message;
    }
    const code = await exited(lg, 5000);
    if (code !== 0 && result.error === undefined) result.error = `load generator exited with ${code} (see its stderr above)`;
  } catch (err) {
    result.error = (err as Error).message;
  } finally {
    server.child.kill("SIGTERM");
    result.server_exit = await exited(server.child, 12_000);
    if (result.server_exit === null) server.child.kill("SIGKILL");
    result.server_warnings = server.out.join("").split("\n").filter((l) => l.trim() !== "").slice(0, 20);
  }
  if (result.error) log(`scenario ${sc.channel}/${sc.payloadBytes} FAILED: ${result.error}`);
}

// ---------------------------------------------------------------- report

const fmt = (n: number, d = 0) => (Number.isFinite(n) ? n.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d }) : "n/a");
const mb = (kb: number) => fmt(kb / 1024, 1);
const range = (xs: number[], d = 0) => `${fmt(Math.min(...xs), d)}–${fmt(Math.max(...xs), d)}`;
const commit = spawnSync("git", ["rev-parse", "--short", "HEAD"], { cwd: ROOT, encoding: "utf8" }).stdout.trim();
const dirty = spawnSync("git", ["status", "--porcelain", "src"], { cwd: ROOT, encoding: "utf8" }).stdout.trim().split("\n").filter(Boolean).length;
const peak = (r: Round) => (Number.isFinite(r.during.rss_peak_hwm_kb ?? Number.NaN) ? r.during.rss_peak_hwm_kb! : r.during.rss_peak_sampled_kb);

const md: string[] = [];
md.push(
  `Run of \`bun bench/recovery/run.ts\` at ${startedAt.toISOString().slice(0, 16).replace("T", " ")} UTC, ${Math.round((Date.now() - startedAt.getTime()) / 1000)} s; ` +
    `sinal at ${commit}${dirty ? ` with ${dirty} uncommitted files in src/` : ""}; ${cpus().length} × ${cpus()[0]?.model ?? "?"}, Linux ${release()}, bun ${spawnSync(BUN, ["--version"], { encoding: "utf8" }).stdout.trim()}.`,
  `${fmt(CLIENTS)} clients (each its own user, with a second connection that stays subscribed), each missing ${MISSED} publications (one REST batch); ` +
    `${ROUNDS} rounds per mode, alternating; figures are medians over the rounds (range in brackets).`,
  "",
);
md.push(
  "| channel (history) | data bytes | mode | load avg before | time to all done ms | per-client done p50 / p99 ms | replayed / expected | bytes received per client | server CPU ms (stat ticks) | server CPU ms (schedstat) | server CPU % during | load-gen CPU % during | other CPU % during | RSS MB before → peak → after |",
  "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
);
const ratios: string[] = [];
for (const r of results) {
  for (const mode of ["base", "recover"] as const) {
    const rs = r.rounds.filter((x) => x.mode === mode);
    if (rs.length === 0) continue;
    const t = rs.map((x) => x.ms_to_all_done);
    const cpu = rs.map((x) => x.during.server_cpu_ms);
    md.push(
      `| ${r.channel} (${r.history}) | ${r.payloadBytes} | ${mode === "base" ? "reconnect, no since (reference)" : "**recover with since**"} | ${r.loadavg_before} | ` +
        `${fmt(median(t))} (${range(t)}) | ${fmt(median(rs.map((x) => x.client_done_ms.p50)))} / ${fmt(median(rs.map((x) => x.client_done_ms.p99)))} | ` +
        `${fmt(rs.reduce((s, x) => s + x.replayed, 0))} / ${fmt(rs.reduce((s, x) => s + x.expected_replayed, 0))} | ${fmt(median(rs.map((x) => x.replay_bytes_per_client)))} | ` +
        `${fmt(median(cpu))} (${range(cpu)}) | ${fmt(median(rs.map((x) => x.during.server_cpu_ms_schedstat)))} | ${fmt(median(rs.map((x) => x.during.server_cpu_pct)))} | ${fmt(median(rs.map((x) => x.during.loadgen_cpu_pct)))} | ${fmt(median(rs.map((x) => x.during.other_cpu_pct)))} | ` +
        `${mb(median(rs.map((x) => x.before.rss_end_kb)))} → ${mb(median(rs.map(peak)))} → ${mb(median(rs.map((x) => x.after.rss_end_kb)))} |`,
    );
  }
  const base = r.rounds.filter((x) => x.mode === "base");
  const rec = r.rounds.filter((x) => x.mode === "recover");
  if (base.length && rec.length) {
    const tb = median(base.map((x) => x.ms_to_all_done));
    const tr = median(rec.map((x) => x.ms_to_all_done));
    // schedstat: ns resolution; the 10 ms ticks are coarse against windows of ~100 ms
    const cb = median(base.map((x) => x.during.server_cpu_ms_schedstat));
    const cr = median(rec.map((x) => x.during.server_cpu_ms_schedstat));
    const first = r.rounds[0]!.before.rss_end_kb;
    const last = r.rounds.at(-1)!.after.rss_end_kb;
    ratios.push(
      `| ${r.channel} (${r.history}) | ${r.payloadBytes} | ${fmt(tr / tb, 2)}× | ${fmt(cr / cb, 2)}× | ${fmt(((cr - cb) * 1000) / CLIENTS)} | ${fmt(((cr - cb) * 1e6) / (CLIENTS * MISSED))} | ` +
        `${fmt(median(rec.map(peak)) - median(rec.map((x) => x.before.rss_end_kb)) > 0 ? (median(rec.map(peak)) - median(rec.map((x) => x.before.rss_end_kb))) / 1024 : 0, 1)} | ${mb(first)} → ${mb(last)} | ${Math.max(...rec.map((x) => x.slow_clients_after))} |`,
    );
  }
}
md.push("");
md.push(
  "| channel (history) | data bytes | recovery ÷ reference, time to all done | recovery ÷ reference, server CPU (schedstat) | extra server CPU per recovered client µs | per replayed publication ns | RSS rise during recovery MB | RSS first round before → last round after MB | slow-lane clients left after |",
  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
  ...ratios,
  "",
);
const failures = results.filter((r) => r.error !== undefined);
for (const f of failures) md.push(`**FAILED** ${f.channel} with ${f.payloadBytes}-byte data: ${f.error}`, "");
const warned = results.filter((r) => r.server_warnings.length > 0 || (r.server_exit !== 0 && r.server_exit !== null));
for (const w of warned) md.push(`sinal output for ${w.channel}/${w.payloadBytes} (exit ${w.server_exit}): ${w.server_warnings.slice(0, 3).map((l) => l.slice(0, 200)).join(" | ")}`, "");
const text = md.join("\n");
mkdirSync(RESULTS, { recursive: true });
const stamp = startedAt.toISOString().replace(/[:.]/g, "-");
const json = JSON.stringify({ started_at: startedAt, commit, src_changes: dirty, settings: { CLIENTS, MISSED, ROUNDS, WINDOW_MS, TIMEOUT_SEC, SCENARIOS, EXTRA_ENV }, results }, null, 2);
writeFileSync(join(RESULTS, `recovery-${stamp}.json`), json);
writeFileSync(join(RESULTS, "recovery-latest.json"), json);
writeFileSync(join(RESULTS, "recovery-latest.md"), text + "\n");
process.stdout.write(text + "\n");
process.exit(failures.length > 0 ? 1 : 0);
