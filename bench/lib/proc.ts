import { spawn, type ChildProcess } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { join, resolve } from "node:path";

/** Process plumbing the bench scripts share: ports, /proc readings, and sinal as a child process. */

export const ROOT = resolve(import.meta.dir, "../..");
export const BUN = join(ROOT, "node_modules/.bin/bun");

/** A port nothing listens on now (the kernel's pick for port 0). */
export function freePort(): Promise<number> {
  return new Promise((res) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}

/** utime + stime of a process, in clock ticks (100/s). */
export function cpuTicks(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return Number(fields[11]) + Number(fields[12]);
}

/** The 1, 5 and 15 minute load averages, as /proc/loadavg prints them. */
export const loadavg = () => readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");

/** The child's exit code once it exits, or null after `ms`. */
export function exited(c: ChildProcess, ms: number): Promise<number | null> {
  if (c.exitCode !== null || c.signalCode !== null) return Promise.resolve(c.exitCode);
  return new Promise((r) => {
    const t = setTimeout(() => r(null), ms);
    c.once("exit", (code) => (clearTimeout(t), r(code)));
  });
}

/** A field of /proc/<pid>/status in kB (VmRSS: resident memory now; VmHWM: its peak). */
export function statusKb(pid: number, field: "VmRSS" | "VmHWM" | "RssAnon" | "RssFile" = "VmRSS"): number {
  const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) : Number.NaN;
}

export interface StartOptions {
  /** The checkout whose `src/main.ts` runs (its working directory); default this repository. */
  root?: string;
  /**
   * true (default): connection and rate limits raised out of the benchmark's way. false: the
   * server's own defaults, for the hostile-client benches that measure those limits.
   */
  benchLimits?: boolean;
  /** The cores it is pinned to (taskset -c); default "0". */
  cpus?: string;
  /** The loopback address it listens on (127.0.0.x); default 127.0.0.1. */
  host?: string;
}

const BENCH_LIMITS = {
  MAX_CONNECTIONS_PER_USER: "100000",
  MAX_CONNECTIONS_PER_TENANT: "100000",
  RATE_LIMIT_PER_SEC: "1000000",
  RATE_LIMIT_BURST: "1000000",
};

/**
 * `bun src/main.ts serve` pinned to core 0 (or `cpus`) with the benchmarks' settings (connection and rate
 * limits out of the way unless `benchLimits: false`) plus `env`, once it answers /health. `out`
 * keeps its first output lines.
 */
export async function startSinal(
  children: Set<ChildProcess>,
  env: Record<string, string>,
  bunFlags: string[] = [],
  { root = ROOT, benchLimits = true, cpus = "0", host = "127.0.0.1" }: StartOptions = {},
): Promise<{ child: ChildProcess; port: number; out: string[] }> {
  const port = await freePort();
  const child = spawn("taskset", ["-c", cpus, BUN, ...bunFlags, "src/main.ts", "serve"], {
    cwd: root,
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME ?? "/tmp",
      PORT: String(port),
      HOST: host,
      LOG_LEVEL: "warn",
      ...(benchLimits ? BENCH_LIMITS : {}),
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.add(child);
  const out: string[] = [];
  const keep = (d: Buffer) => void (out.length < 200 && out.push(d.toString()));
  child.stdout!.on("data", keep);
  child.stderr!.on("data", keep);
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`http://${host}:${port}/health`)).ok) break;
    } catch {}
    if (child.exitCode !== null) throw new Error(`sinal exited at start: ${out.join("").slice(0, 1000)}`);
    if (i > 400) throw new Error("sinal did not answer /health within 20 s");
    await Bun.sleep(50);
  }
  return { child, port, out };
}

/** Busy time of the whole machine (all cores, /proc/stat: everything but idle and iowait), in clock ticks. */
export function machineBusyTicks(): number {
  const f = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1, 9).map(Number);
  const [user, nice, system, _idle, _iowait, irq, softirq, steal] = f as [number, number, number, number, number, number, number, number];
  return user + nice + system + irq + softirq + steal;
}

/**
 * Time the threads of `pid` spent on a CPU and waiting in a run queue for one, in ms
 * (/proc/<pid>/task/<tid>/schedstat). Waiting time says whether a process was starved of CPU by
 * others, as opposed to idle or blocked on I/O.
 */
export function schedMs(pid: number): { runMs: number; waitMs: number } {
  let run = 0;
  let wait = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const [r, w] = readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ").map(Number);
      run += r!;
      wait += w!;
    } catch {
      // the thread exited while we looked
    }
  }
  return { runMs: run / 1e6, waitMs: wait / 1e6 };
}
