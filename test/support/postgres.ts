import type { test } from "bun:test";
import { testsNeeding, type Found } from "./required.ts";
import { SQL } from "bun";
import { drizzle } from "drizzle-orm/bun-sql";
import { migrate } from "drizzle-orm/bun-sql/migrator";
import type { PgDb } from "../../src/store/pg-db.ts";
import { spawn, spawnSync } from "node:child_process";
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/**
 * A throwaway PostgreSQL (per test file, or shared by a process: `startDatabase`): `initdb` into a fresh temp dir (trust auth), a server on a
 * free port of 127.0.0.1 with its socket inside that dir, one database; `stop()` stops it
 * (`pg_ctl stop -m immediate`) and removes the dir. Call `stop()` from afterAll; a server still
 * running when the test process has gone (a crash, an interrupted run, a shared server nobody
 * stops) is stopped and removed by a watchdog (see `watch`), so a run leaves nothing behind.
 *
 * The binaries come from Debian's layout, /usr/lib/postgresql/<version>/bin (the newest version
 * with an initdb), or from POSTGRES_BIN_DIR when set. Without them the tests skip with the reason
 * when run by hand; under CI=true a missing PostgreSQL fails the run (CI installs it in .ci/run).
 */

export interface Postgres {
  /** e.g. postgres://postgres@127.0.0.1:54321/sinal_test */
  url: string;
  stop(): Promise<void>;
}

export type { Found };

const DEBIAN_ROOT = "/usr/lib/postgresql";
const START_TIMEOUT_S = 30;
// Debian's initdb and postgres refuse to run as root; as root everything runs as this user.
const OS_USER = "postgres";

let found: Found | null = null;

/** Where the binaries are and whether they run; looked up once per process. */
export function findPostgres(): Found {
  found ??= lookUp();
  return found;
}

function lookUp(): Found {
  const override = process.env.POSTGRES_BIN_DIR;
  let bin: string;
  if (override !== undefined) {
    if (!existsSync(join(override, "initdb"))) return { ok: false, reason: `no initdb in POSTGRES_BIN_DIR=${override}` };
    bin = override;
  } else {
    const versions = existsSync(DEBIAN_ROOT)
      ? readdirSync(DEBIAN_ROOT)
          .filter((v) => existsSync(join(DEBIAN_ROOT, v, "bin/initdb")))
          .sort((a, b) => Number(b) - Number(a))
      : [];
    if (versions.length === 0) return { ok: false, reason: `no ${DEBIAN_ROOT}/<version>/bin/initdb (apt-get install postgresql)` };
    bin = join(DEBIAN_ROOT, versions[0]!, "bin");
  }
  if (isRoot() && spawnSync("id", ["-u", OS_USER]).status !== 0) {
    return { ok: false, reason: `running as root and there is no '${OS_USER}' user to run initdb as` };
  }
  const version = run(bin, "initdb", ["--version"], 10_000);
  if (version.status !== 0) return { ok: false, reason: `${bin}/initdb is not runnable: ${version.output}` };
  return { ok: true, bin };
}

/** `test` for suites that need PostgreSQL (see testsNeeding). */
export function postgresTests(): { test: typeof test; available: boolean } {
  return testsNeeding("PostgreSQL", "apt-get install postgresql", findPostgres());
}

/** Starts a fresh, empty PostgreSQL with one database and resolves once it accepts connections. */
export async function startPostgres(database = "sinal_test"): Promise<Postgres> {
  const pg = findPostgres();
  if (!pg.ok) throw new Error(pg.reason);
  const { bin } = pg;
  const dir = mkdtempSync(join(tmpdir(), "sinal-pg-"));
  const data = join(dir, "data");
  if (isRoot()) {
    const uid = Number(spawnSync("id", ["-u", OS_USER], { encoding: "utf8" }).stdout.trim());
    const gid = Number(spawnSync("id", ["-g", OS_USER], { encoding: "utf8" }).stdout.trim());
    chownSync(dir, uid, gid);
  }

  watch(bin, data, dir);
  let stopped = false;
  const stopNow = () => {
    if (stopped) return;
    stopped = true;
    const result = run(bin, "pg_ctl", ["stop", "-D", data, "-m", "immediate", "-w", "-t", "10"], 15_000);
    if (result.status !== 0) killPostmaster(data);
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    // fsync off and no sync at initdb: the data is thrown away, only speed matters.
    const init = run(bin, "initdb", ["-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"], 60_000);
    if (init.status !== 0) throw new Error(`initdb failed: ${init.output}`);
    const port = await freePort();
    const options = `-c listen_addresses=127.0.0.1 -p ${port} -k ${dir} -c fsync=off -c synchronous_commit=off -c full_page_writes=off`;
    const start = run(
      bin,
      "pg_ctl",
      ["start", "-D", data, "-l", join(dir, "server.log"), "-w", "-t", String(START_TIMEOUT_S), "-o", options],
      (START_TIMEOUT_S + 5) * 1000,
    );
    if (start.status !== 0) throw new Error(`PostgreSQL did not start within ${START_TIMEOUT_S} s: ${start.output}\n${serverLog(dir)}`);
    const create = run(bin, "createdb", ["-h", "127.0.0.1", "-p", String(port), "-U", "postgres", database], 15_000);
    if (create.status !== 0) throw new Error(`createdb failed: ${create.output}`);
    return {
      url: `postgres://postgres@127.0.0.1:${port}/${database}`,
      stop: async () => stopNow(),
    };
  } catch (err) {
    stopNow();
    throw err;
  }
}

let shared: Promise<Postgres> | null = null;
let databasesMade = 0;

/**
 * A fresh, empty database of its own, in one throwaway PostgreSQL shared by the whole process
 * (started on first use, stopped by its watchdog once the process has gone): a store sees nothing of another's, as with a server of
 * its own, for a CREATE DATABASE (a fraction of a second) instead of an initdb and a start
 * (2 to 5 s on a busy 2-core machine), so a suite can give every server it starts its own.
 * `stop()` drops the database (closing any connection still open to it).
 */
export async function startDatabase(): Promise<Postgres> {
  shared ??= startPostgres("sinal_admin");
  const server = await shared;
  const name = `sinal_${++databasesMade}`;
  await adminQuery(server.url, `CREATE DATABASE ${name}`);
  const url = new URL(server.url);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    stop: () => adminQuery(server.url, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`),
  };
}

async function adminQuery(url: string, statement: string): Promise<void> {
  const admin = new SQL(url, { prepare: false, max: 1 });
  try {
    await admin.unsafe(statement);
  } finally {
    await admin.close();
  }
}

/**
 * A shell in the background that waits for this process to end, then stops the server of `data`
 * (if it still runs) and removes `dir`. bun test (1.4.5) runs no process "exit" or "beforeExit"
 * handler, and neither runs after a crash or a SIGKILL, so the clean-up cannot live in this
 * process. The watchdog is not its child either: after a test times out, bun test kills the
 * child processes still running ("killed 1 dangling process"), so the shell started here puts
 * the watchdog in the background and exits at once.
 */
function watch(bin: string, data: string, dir: string): void {
  const pgCtl = command(bin, "pg_ctl").map(quote).join(" ");
  // $1: this process, $2: the data dir, $3: the dir to remove.
  const script = `while kill -0 "$1" 2>/dev/null; do sleep 1; done; [ -f "$2/postmaster.pid" ] && ${pgCtl} stop -D "$2" -m immediate -w -t 10; rm -rf "$3"`;
  // detached: a Ctrl-C to the test's process group leaves the watchdog to do its work.
  const child = spawn("sh", ["-c", `(${script}) >/dev/null 2>&1 &`, "watchdog", String(process.pid), data, dir], {
    detached: true,
    stdio: "ignore",
    cwd: tmpdir(),
  });
  child.unref();
}

function quote(word: string): string {
  return `'${word.replaceAll("'", "'\\''")}'`;
}

/** The command line of one PostgreSQL tool (as the postgres user when we are root). */
function command(bin: string, tool: string): string[] {
  return isRoot() ? ["runuser", "-u", OS_USER, "--", join(bin, tool)] : [join(bin, tool)];
}

function isRoot(): boolean {
  return process.getuid?.() === 0;
}

/** Runs one PostgreSQL binary (as the postgres user when we are root), bounded by `timeoutMs`. */
function run(bin: string, tool: string, args: string[], timeoutMs: number): { status: number | null; output: string } {
  const line = [...command(bin, tool), ...args];
  // cwd: the postgres user may not be allowed into the checkout, and initdb complains about that.
  const result = spawnSync(line[0]!, line.slice(1), { encoding: "utf8", timeout: timeoutMs, cwd: tmpdir() });
  const output = `${result.error?.message ?? ""}${result.stdout ?? ""}${result.stderr ?? ""}`.trim().slice(-2000);
  return { status: result.status, output };
}

/** A port nothing listens on right now (the OS picks it; PostgreSQL binds it a moment later). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** The last resort when pg_ctl cannot stop it: SIGKILL the pid in postmaster.pid. */
function killPostmaster(data: string): void {
  try {
    const pid = Number(readFileSync(join(data, "postmaster.pid"), "utf8").split("\n")[0]);
    if (pid > 0) process.kill(pid, "SIGKILL");
  } catch {
    // no pid file: nothing was started
  }
}

function serverLog(dir: string): string {
  try {
    return readFileSync(join(dir, "server.log"), "utf8").slice(-2000);
  } catch {
    return "(no server log)";
  }
}

/**
 * Drizzle connections to a test's PostgreSQL, opened as the store opens them (`prepare: false`),
 * each one a node's own; `close()` closes them all (from afterAll).
 */
export class PgConnections {
  private readonly clients: SQL[] = [];

  open(url: string): PgDb {
    const client = new SQL(url, { prepare: false });
    this.clients.push(client);
    return drizzle({ client }) as PgDb;
  }

  /** Applies drizzle/pg's migrations, as generated by drizzle-kit. */
  async migrate(db: PgDb): Promise<void> {
    await migrate(db, { migrationsFolder: join(import.meta.dir, "../../drizzle/pg") });
  }

  async close(): Promise<void> {
    for (const client of this.clients) await client.close();
  }
}
