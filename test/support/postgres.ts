import { test } from "bun:test";
import { SQL } from "bun";
import { drizzle } from "drizzle-orm/bun-sql";
import { migrate } from "drizzle-orm/bun-sql/migrator";
import type { PgDb } from "../../src/store/pg-db.ts";
import { spawnSync } from "node:child_process";
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/**
 * A throwaway PostgreSQL per test file: `initdb` into a fresh temp dir (trust auth), a server on a
 * free port of 127.0.0.1 with its socket inside that dir, one database; `stop()` stops it
 * (`pg_ctl stop -m immediate`) and removes the dir. Call `stop()` from afterAll; a server still
 * running when the process exits is stopped then too, so a failed or aborted test leaves nothing.
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

export type Found = { ok: true; bin: string } | { ok: false; reason: string };

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

/**
 * `test` for suites that need PostgreSQL: the real one when it is installed; otherwise, by hand,
 * skipped tests with the reason printed once; under CI=true, one failing test stating the reason.
 */
export function postgresTests(): { test: typeof test; available: boolean } {
  const pg = findPostgres();
  if (pg.ok) return { test, available: true };
  const reason = pg.reason;
  if (process.env.CI === "true") {
    test("PostgreSQL is available (apt-get install postgresql)", () => {
      throw new Error(reason);
    });
  } else {
    process.stderr.write(`skipping PostgreSQL tests: ${reason}\n`);
  }
  return { test: test.skip, available: false };
}

/** Stops servers that afterAll never reached (a crash, an interrupted run). */
const running = new Set<() => void>();
process.on("exit", () => {
  for (const stopNow of running) stopNow();
});

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

  let stopped = false;
  const stopNow = () => {
    if (stopped) return;
    stopped = true;
    running.delete(stopNow);
    const result = run(bin, "pg_ctl", ["stop", "-D", data, "-m", "immediate", "-w", "-t", "10"], 15_000);
    if (result.status !== 0) killPostmaster(data);
    rmSync(dir, { recursive: true, force: true });
  };
  running.add(stopNow);

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

function isRoot(): boolean {
  return process.getuid?.() === 0;
}

/** Runs one PostgreSQL binary (as the postgres user when we are root), bounded by `timeoutMs`. */
function run(bin: string, tool: string, args: string[], timeoutMs: number): { status: number | null; output: string } {
  const command = isRoot() ? ["runuser", "-u", OS_USER, "--", join(bin, tool), ...args] : [join(bin, tool), ...args];
  // cwd: the postgres user may not be allowed into the checkout, and initdb complains about that.
  const result = spawnSync(command[0]!, command.slice(1), { encoding: "utf8", timeout: timeoutMs, cwd: tmpdir() });
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
