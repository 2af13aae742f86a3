/**
 * A throwaway PostgreSQL for the bench scripts, with PostgreSQL's durable defaults (fsync on,
 * synchronous_commit on, full_page_writes on): a commit is on disk before it returns, as sqlite's
 * synchronous=full. test/support/postgres.ts starts its servers with fsync off, which suits tests
 * but would flatter PostgreSQL in a benchmark; its binary lookup (findPostgres) is reused here.
 */
import { spawnSync } from "node:child_process";
import { chownSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { findPostgres } from "../../test/support/postgres.ts";
import { freePort } from "./proc.ts";

export interface BenchPostgres {
  /** postgres://postgres@127.0.0.1:<port>/<database> */
  url: string;
  /** The postmaster's pid. */
  pid: number;
  /** Data directory and its settings, for the report. */
  settings: string;
  /** CPU ticks (1/100 s) used so far by the postmaster and every live process under it. */
  cpuTicks(): number;
  /** Stops it (`pg_ctl stop -m fast`) and removes its directory. */
  stop(): void;
}

// Debian's initdb and postgres refuse to run as root; as root everything runs as this user.
const OS_USER = "postgres";
const isRoot = () => process.getuid?.() === 0;

/**
 * initdb into a fresh temp dir, then a server on a free port of 127.0.0.1 (its socket in that
 * dir), pinned to `cpus` with taskset, and one empty database. Stopped on process exit too.
 */
export async function startBenchPostgres(cpus: string, database = "sinal_bench"): Promise<BenchPostgres> {
  const found = findPostgres();
  if (!found.ok) throw new Error(`PostgreSQL is needed for this benchmark: ${found.reason}`);
  const { bin } = found;
  const dir = mkdtempSync(join(tmpdir(), "sinal-bench-pg-"));
  const data = join(dir, "data");
  if (isRoot()) {
    const id = (flag: string) => Number(spawnSync("id", [flag, OS_USER], { encoding: "utf8" }).stdout.trim());
    chownSync(dir, id("-u"), id("-g"));
  }
  let stopped = false;
  const stop = () => {
    if (stopped) return;
    stopped = true;
    const r = run(bin, "pg_ctl", ["stop", "-D", data, "-m", "fast", "-w", "-t", "20"], 25_000);
    if (r.status !== 0) postmasterPid(data, (pid) => process.kill(pid, "SIGKILL"));
    rmSync(dir, { recursive: true, force: true });
  };
  process.on("exit", stop);
  try {
    const init = run(bin, "initdb", ["-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"], 60_000);
    if (init.status !== 0) throw new Error(`initdb failed: ${init.output}`);
    const port = await freePort();
    // Durability left at PostgreSQL's defaults; only where it listens is set.
    const settings = `-c listen_addresses=127.0.0.1 -p ${port} -k ${dir}`;
    const start = run(bin, "pg_ctl", ["start", "-D", data, "-l", join(dir, "server.log"), "-w", "-t", "30", "-o", settings], 35_000, cpus);
    if (start.status !== 0) throw new Error(`PostgreSQL did not start: ${start.output}`);
    const create = run(bin, "createdb", ["-h", "127.0.0.1", "-p", String(port), "-U", "postgres", database], 15_000);
    if (create.status !== 0) throw new Error(`createdb failed: ${create.output}`);
    let pid = 0;
    postmasterPid(data, (p) => (pid = p));
    const show = run(bin, "psql", ["-h", "127.0.0.1", "-p", String(port), "-U", "postgres", "-At", "-c", "select string_agg(name || '=' || setting, ', ' order by name) from pg_settings where name in ('fsync','synchronous_commit','full_page_writes','wal_sync_method','shared_buffers','server_version')", database], 15_000);
    return {
      url: `postgres://postgres@127.0.0.1:${port}/${database}`,
      pid,
      settings: show.output,
      cpuTicks: () => treeTicks(pid),
      stop,
    };
  } catch (err) {
    stop();
    throw err;
  }
}

/** Runs one PostgreSQL binary (as the postgres user when root; pinned with taskset when `cpus`). */
function run(bin: string, tool: string, args: string[], timeoutMs: number, cpus?: string): { status: number | null; output: string } {
  const asUser = isRoot() ? ["runuser", "-u", OS_USER, "--"] : [];
  const pin = cpus ? ["taskset", "-c", cpus] : [];
  const command = [...pin, ...asUser, join(bin, tool), ...args];
  // cwd: the postgres user may not be allowed into the checkout.
  const r = spawnSync(command[0]!, command.slice(1), { encoding: "utf8", timeout: timeoutMs, cwd: tmpdir() });
  return { status: r.status, output: `${r.error?.message ?? ""}${r.stdout ?? ""}${r.stderr ?? ""}`.trim().slice(-2000) };
}

function postmasterPid(data: string, use: (pid: number) => void): void {
  try {
    const pid = Number(readFileSync(join(data, "postmaster.pid"), "utf8").split("\n")[0]);
    if (pid > 0) use(pid);
  } catch {
    // no pid file: nothing was started
  }
}

/**
 * utime+stime of `root` and of every live process below it, plus the children `root` has already
 * reaped (cutime+cstime), in clock ticks.
 */
function treeTicks(root: number): number {
  const parent = new Map<number, number>();
  const ticks = new Map<number, number>();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const f = readFileSync(`/proc/${name}/stat`, "utf8").split(") ")[1]!.split(" ");
      const pid = Number(name);
      parent.set(pid, Number(f[1]));
      ticks.set(pid, Number(f[11]) + Number(f[12]) + (pid === root ? Number(f[13]) + Number(f[14]) : 0));
    } catch {
      // exited while we looked
    }
  }
  let sum = 0;
  for (const [pid, t] of ticks) {
    for (let p: number | undefined = pid; p !== undefined && p > 1; p = parent.get(p)) {
      if (p === root) {
        sum += t;
        break;
      }
    }
  }
  return sum;
}
