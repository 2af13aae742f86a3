/**
 * Soak under hostile load (issue 10): the same normal load twice, each time on a fresh server,
 * first alone (baseline), then beside a mix of hostile clients; the normal clients' latency of
 * both runs side by side, and the server's RSS every second.
 *
 *   bun bench/soak/run.ts [--root <checkout>] [--seconds 60] [--baseline 1] [--hostile 1] [--cap-mib 2048]
 *       [--clients 200] [--room-size 10] [--rate 100] [--max-in-flight 16]
 *       [--replay-sockets 2] [--replay-every-ms 2000] [--flood-sockets 4] [--flood-frames 1000]
 *       [--slow-readers 20] [--slow-stall-s 15] [--busy-rate 40] [--busy-bytes 16000] [--tricklers 40]
 *       [--channel-rate 2000] [--nest-every-s 10] [--nest-depth 3000000]
 *
 * - The server: `bun src/main.ts serve` from `--root` (default this repository), pinned to core 0,
 *   sqlite store, the server's own default limits (bench/hostile/lib.ts `startTarget`). API keys
 *   for tenants `acme` (normal), `evil` and `trickle` (hostile).
 * - Normal load (bench/soak/normal.ts, core 1): `--clients` users of tenant acme in rooms of
 *   `--room-size`, and `--rate` REST publications/s to those rooms; latency = publish request sent
 *   → frame received, every delivery.
 * - Hostile load (bench/soak/hostile.ts, core 1, second run only): replays on sockets that never
 *   read, frame floods past the rate limit, slow readers, REST bodies trickled at 1 byte/s, publishing
 *   to ever new channels, deeply nested bodies; the rates are the options above.
 * - Every 250 ms the server's VmRSS is read; past `--cap-mib` the server is killed (SIGKILL) and
 *   the run ends there, reported as such. Every process is killed on exit, failure or Ctrl-C, and
 *   after a deadline. Everything is on 127.0.0.1.
 *
 * Prints a markdown report and one summary line (last); writes bench/results/soak-latest.{json,md}.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { BUN, ROOT, cpuTicks, exited, loadavg } from "../lib/proc.ts";
import { children, cli, commitOf, guard, metrics, mib, RssSampler, startTarget, type Target } from "../hostile/lib.ts";

const { root, opts } = cli({
  seconds: 60,
  baseline: 1,
  hostile: 1,
  "cap-mib": 2048,
  clients: 200,
  "room-size": 10,
  rate: 100,
  "max-in-flight": 16,
  "replay-sockets": 2,
  "replay-every-ms": 2000,
  "flood-sockets": 4,
  "flood-frames": 1000,
  "slow-readers": 20,
  "slow-stall-s": 15,
  "busy-rate": 40,
  "busy-bytes": 16000,
  tricklers: 40,
  "channel-rate": 2000,
  "nest-every-s": 10,
  "nest-depth": 3_000_000,
});
guard((opts.seconds + 150) * 2 + 60);
const log = (s: string) => process.stderr.write(`[soak] ${s}\n`);
type Mode = "baseline" | "hostile";

/** A load generator process: JSON lines on stdout, commands on stdin. */
interface Gen {
  child: ChildProcess;
  last: Record<string, unknown> | null;
  /** Every `second` line by its `sec`. */
  bySec: Map<number, Record<string, unknown>>;
  ready: Promise<Record<string, unknown>>;
  done: Promise<Record<string, unknown>>;
  send(line: string): void;
}

function spawnGen(script: string, config: object): Gen {
  const child = spawn("taskset", ["-c", "1", BUN, script, JSON.stringify(config)], { cwd: ROOT, stdio: ["pipe", "pipe", "inherit"] });
  children.add(child);
  let onReady!: (v: Record<string, unknown>) => void;
  let onDone!: (v: Record<string, unknown>) => void;
  const gen: Gen = {
    child,
    last: null,
    bySec: new Map(),
    ready: new Promise((r) => (onReady = r)),
    done: new Promise((r) => (onDone = r)),
    send: (line) => void child.stdin!.write(`${line}\n`),
  };
  createInterface({ input: child.stdout! }).on("line", (line) => {
    const msg = JSON.parse(line) as Record<string, unknown>;
    if (msg.event === "ready") onReady(msg);
    else if (msg.event === "second") {
      gen.last = msg;
      gen.bySec.set(msg.sec as number, msg);
    }
    else if (msg.event === "done") onDone(msg);
  });
  return gen;
}

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([p, Bun.sleep(ms).then(() => Promise.reject(new Error(`${what}: nothing within ${ms / 1000} s`)))]);
}

/** Read from /metrics every second: the server's own view (4009s it decided, connections it counts). */
const METRICS = ["sinal_connections", "sinal_slow_consumer_closes_total", "sinal_slow_clients", "sinal_rejected_frames_total", "sinal_dropped_sends_total", "sinal_publications_total"];

interface Second {
  t: number;
  rss_mib: number;
  server_cpu_pct: number;
  /** The last answer of /metrics (null: it did not answer within 900 ms). */
  metrics: Record<string, number> | null;
  /** The generators' own line for this second (filled in after the run: their lines come a little after the tick). */
  normal: Record<string, unknown> | null;
  hostile: Record<string, unknown> | null;
}

interface RunResult {
  mode: Mode;
  commit: string;
  loadavg_before: string;
  seconds: number;
  ended: string;
  capped: { ms: number; kb: number } | null;
  rss_kb: { start: number; max: number; end: number };
  server_cpu_pct: number;
  normal: Record<string, unknown>;
  hostile: Record<string, unknown> | null;
  /** The last /metrics answer of the run. */
  metrics_end: Record<string, number> | null;
  timeline: Second[];
  server_log: string;
}

async function runOnce(mode: Mode): Promise<RunResult> {
  log(`${mode}: starting sinal from ${root}`);
  const target: Target = await startTarget(root, {}, ["evil", "trickle"]);
  const load = loadavg();
  let hostile: Gen | null = null;
  if (mode === "hostile") {
    hostile = spawnGen("bench/soak/hostile.ts", {
      port: target.port,
      secret: target.secret,
      evilKey: target.keys.evil,
      trickleKey: target.keys.trickle,
      replaySockets: opts["replay-sockets"],
      replayEveryMs: opts["replay-every-ms"],
      replayMessages: 1000,
      replayBytes: 16000,
      floodSockets: opts["flood-sockets"],
      floodFrames: opts["flood-frames"],
      slowReaders: opts["slow-readers"],
      slowStallSec: opts["slow-stall-s"],
      busyRate: opts["busy-rate"],
      busyBytes: opts["busy-bytes"],
      tricklers: opts.tricklers,
      channelRate: opts["channel-rate"],
      nestEverySec: opts["nest-every-s"],
      nestDepth: opts["nest-depth"],
    });
    const ready = await within(hostile.ready, 120_000, "hostile set-up");
    log(`hostile set-up done: ${JSON.stringify(ready)}`);
  }
  const normal = spawnGen("bench/soak/normal.ts", {
    port: target.port,
    secret: target.secret,
    apiKey: target.apiKey,
    clients: opts.clients,
    roomSize: opts["room-size"],
    rate: opts.rate,
    maxInFlight: opts["max-in-flight"],
  });
  await within(normal.ready, 60_000, "normal clients");
  await Bun.sleep(1000);

  const ticksOf = () => {
    try {
      return cpuTicks(target.pid);
    } catch {
      return Number.NaN; // the server is gone
    }
  };
  const t0 = performance.now();
  const sampler = new RssSampler(target, t0, 250, opts["cap-mib"] * 1024);
  let ticks = ticksOf();
  const ticks0 = ticks;
  let at = t0;
  normal.send("go");
  hostile?.send("go");
  const timeline: Second[] = [];
  let ended = "ran its time";
  let lastMetrics: Record<string, number> | null = null;
  let metricsEnd: Record<string, number> | null = null;
  const pollMetrics = () =>
    void metrics(target.base, METRICS, 900).then((m) => {
      lastMetrics = m;
      if (m !== null) metricsEnd = m;
    });
  pollMetrics();
  for (let s = 1; s <= opts.seconds; s++) {
    await Bun.sleep(Math.max(0, t0 + s * 1000 - performance.now()));
    if (sampler.capped !== null) {
      ended = `server killed at the ${opts["cap-mib"]} MiB RSS cap at ${(sampler.capped.ms / 1000).toFixed(1)} s`;
      break;
    }
    if (target.child.exitCode !== null || target.child.signalCode !== null) {
      ended = `server exited by itself at ${s} s (code ${target.child.exitCode}, signal ${target.child.signalCode})`;
      break;
    }
    const now = performance.now();
    const t = ticksOf();
    const kb = sampler.sample();
    timeline.push({ t: s, rss_mib: Math.round(kb / 1024), server_cpu_pct: Math.round((t - ticks) / ((now - at) / 1000)), metrics: lastMetrics, normal: null, hostile: null });
    pollMetrics();
    ticks = t;
    at = now;
    if (s % 10 === 0) {
      const n = normal.last as { p99?: number; deliveries?: number } | null;
      log(`${mode} t=${s} s: RSS ${mib(kb)} MiB, server CPU ${timeline.at(-1)!.server_cpu_pct}%, normal deliveries ${n?.deliveries} p99 ${n?.p99} ms`);
    }
  }
  const seconds = (performance.now() - t0) / 1000;
  const alive = sampler.capped === null && target.child.exitCode === null;
  const cpu = alive ? Math.round((ticksOf() - ticks0) / seconds) : Number.NaN;
  sampler.stop();
  normal.send("stop");
  hostile?.send("stop");
  const normalDone = await within(normal.done, 20_000, "normal clients' totals").catch((err: Error) => ({ error: err.message }));
  const hostileDone = hostile ? await within(hostile.done, 20_000, "hostile totals").catch((err: Error) => ({ error: err.message })) : null;
  for (const g of [normal, hostile]) if (g && g.child.exitCode === null) g.child.kill("SIGKILL");
  for (const second of timeline) {
    second.normal = normal.bySec.get(second.t) ?? null;
    second.hostile = hostile?.bySec.get(second.t) ?? null;
  }
  const endKb = sampler.samples.at(-1)!.kb;
  if (alive) {
    target.child.kill("SIGTERM");
    if ((await exited(target.child, 10_000)) === null) target.child.kill("SIGKILL");
  }
  return {
    mode,
    commit: target.commit,
    loadavg_before: load,
    seconds: Math.round(seconds * 10) / 10,
    ended,
    capped: sampler.capped,
    rss_kb: { start: sampler.samples[0]!.kb, max: sampler.peakKb, end: endKb },
    server_cpu_pct: cpu,
    metrics_end: metricsEnd,
    normal: normalDone,
    hostile: hostileDone,
    timeline,
    server_log: target.out.join("").slice(0, 4000),
  };
}

const started = new Date();
const results: RunResult[] = [];
if (opts.baseline) results.push(await runOnce("baseline"));
if (opts.hostile) results.push(await runOnce("hostile"));

// --- report -------------------------------------------------------------------------------
type Lat = { p50: number | null; p99: number | null; p999: number | null; max: number | null };
const lat = (r: RunResult | undefined) => (r?.normal as { latency?: Lat } | undefined)?.latency;
const f2 = (n: number | null | undefined) => (n === null || n === undefined || !Number.isFinite(n) ? "n/a" : n.toFixed(2));
const int = (n: unknown) => (typeof n === "number" ? n.toLocaleString("en-US") : "n/a");
const base = results.find((r) => r.mode === "baseline");
const hot = results.find((r) => r.mode === "hostile");
const ratio = (a: number | null | undefined, b: number | null | undefined) => (a && b ? `${(a / b).toFixed(2)}×` : "n/a");

const md: string[] = [];
md.push(`### Soak: ${results[0]?.commit ?? "?"} (${root}), ${started.toISOString().slice(0, 16).replace("T", " ")} UTC, ${opts.seconds} s per run`);
md.push("");
md.push("| run | load avg before | lasted | normal p50 ms | p99 ms | p99.9 ms | max ms | delivered / expected | REST publishes ok / offered (skipped, errors) | REST p99 ms | normal sockets closed | RSS MiB start → max → end | server CPU | ended |");
md.push("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- | --- | ---: | --- |");
for (const r of results) {
  const n = r.normal as { published?: number; offered?: number; skipped?: number; errors?: Record<string, number>; expected?: number; received?: number; closes?: Record<string, number>; rest?: { p99: number } };
  const l = lat(r);
  const errs = Object.entries(n.errors ?? {}).map(([k, v]) => `${k}: ${v}`).join(", ") || "0";
  const closes = Object.entries(n.closes ?? {}).map(([k, v]) => `${k}: ${v}`).join(", ") || "0";
  md.push(
    `| ${r.mode} | ${r.loadavg_before} | ${r.seconds} s | ${f2(l?.p50)} | ${f2(l?.p99)} | ${f2(l?.p999)} | ${f2(l?.max)} | ${int(n.received)} / ${int(n.expected)} | ` +
      `${int(n.published)} / ${int(n.offered)} (${int(n.skipped)}, ${errs}) | ${f2(n.rest?.p99)} | ${closes} | ${mib(r.rss_kb.start)} → ${mib(r.rss_kb.max)} → ${mib(r.rss_kb.end)} | ${Number.isFinite(r.server_cpu_pct) ? `${r.server_cpu_pct}%` : "n/a"} | ${r.ended} |`,
  );
}
md.push("");
if (base && hot) md.push(`Normal clients' p99 under hostile load ÷ baseline: **${ratio(lat(hot)?.p99, lat(base)?.p99)}** (p50 ${ratio(lat(hot)?.p50, lat(base)?.p50)}, max ${ratio(lat(hot)?.max, lat(base)?.max)}).`);
if (hot?.hostile) {
  const h = hot.hostile as Record<string, unknown>;
  const bag = (v: unknown) => Object.entries((v ?? {}) as Record<string, number>).map(([k, n]) => `${k}: ${n}`).join(", ") || "none";
  md.push("");
  md.push("Hostile activity:");
  md.push(`- replays: ${int(h.replays_sent)} subscribes with since sent; closes: ${bag(h.replay_closes)}`);
  md.push(`- flood: ${int(h.flood_frames)} frames in ${int(h.flood_rounds)} rounds; ends: ${bag(h.flood_closes)}`);
  md.push(`- slow readers: closes ${bag(h.slow_closes)}; stalls survived ${int(h.slow_stalls_survived)}; busy publications ${bag(h.busy_answers)}`);
  md.push(`- trickled bodies: answers ${bag(h.trickle_answers)}; still open at the end ${int(h.trickle_open)} (oldest ${int(h.trickle_oldest_open_s)} s); longest held before an answer or close ${int(h.trickle_longest_s)} s`);
  md.push(`- new channels: ${int(h.channels_accepted)} accepted; answers ${bag(h.channel_answers)}`);
  md.push(`- nested bodies: ${((h.nest_answers ?? []) as string[]).join("; ") || "none"}`);
  md.push(`- connects that failed: ${int(h.connect_failures)}`);
  md.push(`- sockets that did not read, read again at the end for 3 s: ${bag(h.paused_at_end)}`);
}
for (const r of results) {
  const m = r.metrics_end;
  if (m) md.push(`- ${r.mode}, the server's own count at the end (/metrics): ${Object.entries(m).map(([k, v]) => `${k.replace(/^sinal_/, "")} ${int(v)}`).join(", ")}`);
}
md.push("");
md.push("Per 5 s: RSS MiB at its end, server CPU % over it, and the normal clients' worst p99 of its 5 seconds (ms; each second's p99 is over the deliveries received in that second, so a stall shows in the second after it):");
md.push("");
md.push(`| t s | ${results.map((r) => `${r.mode} RSS | ${r.mode} CPU | ${r.mode} worst p99`).join(" | ")} |`);
md.push(`| ---: | ${results.map(() => "---: | ---: | ---:").join(" | ")} |`);
for (let t = 5; t <= opts.seconds; t += 5) {
  const cells = results.map((r) => {
    const window = r.timeline.filter((x) => x.t > t - 5 && x.t <= t);
    const end = window.find((x) => x.t === t);
    if (end === undefined) return "- | - | -";
    const cpu = window.reduce((sum, x) => sum + x.server_cpu_pct, 0) / window.length;
    const p99s = window.map((x) => (x.normal as { p99?: number | null } | null)?.p99).filter((v): v is number => typeof v === "number");
    return `${end.rss_mib} | ${Math.round(cpu)} | ${p99s.length > 0 ? f2(Math.max(...p99s)) : "n/a"}`;
  });
  md.push(`| ${t} | ${cells.join(" | ")} |`);
}
md.push("");
md.push("<details><summary>Every second</summary>");
md.push("");
md.push(`| t s | ${results.map((r) => `${r.mode} RSS MiB | ${r.mode} CPU % | ${r.mode} p99 ms | ${r.mode} deliveries`).join(" | ")} |`);
md.push(`| ---: | ${results.map(() => "---: | ---: | ---: | ---:").join(" | ")} |`);
for (let t = 1; t <= opts.seconds; t++) {
  const cells = results.map((r) => {
    const s = r.timeline.find((x) => x.t === t);
    const n = s?.normal as { p99?: number; deliveries?: number } | null | undefined;
    return s ? `${s.rss_mib} | ${s.server_cpu_pct} | ${f2(n?.p99)} | ${int(n?.deliveries)}` : "- | - | - | -";
  });
  md.push(`| ${t} | ${cells.join(" | ")} |`);
}
md.push("");
md.push("</details>");
const report = md.join("\n");
const summary =
  `soak | ${results[0]?.commit ?? "?"} | ${opts.seconds} s | normal p99 baseline ${f2(lat(base)?.p99)} ms, with hostile load ${f2(lat(hot)?.p99)} ms (${ratio(lat(hot)?.p99, lat(base)?.p99)}) | ` +
  `RSS max baseline ${base ? mib(base.rss_kb.max) : "n/a"} MiB, hostile ${hot ? mib(hot.rss_kb.max) : "n/a"} MiB | hostile run ${hot?.ended ?? "not run"}`;
mkdirSync(join(ROOT, "bench/results"), { recursive: true });
writeFileSync(join(ROOT, "bench/results/soak-latest.json"), JSON.stringify({ started: started.toISOString(), root, commit: commitOf(root), opts, results }, null, 2));
writeFileSync(join(ROOT, "bench/results/soak-latest.md"), `${report}\n\n${summary}\n`);
process.stdout.write(`${report}\n\n${summary}\n`);
process.exit(0);
