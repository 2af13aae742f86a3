import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";
import { removeServerDir, SECRET, serverDatabaseUrl } from "../helpers.ts";

/** The repository root: the child runs `src/main.ts` from here, as `bun run start` does. */
const ROOT = resolve(import.meta.dir, "../..");
const BUN = join(ROOT, "node_modules/.bin/bun");

/** Which sinal runs: the source (`bun src/main.ts`) or the compiled binary (SINAL_BINARY). */
export type SinalTarget = "source" | "binary";

/** The target this run asks for: `SINAL_TARGET=binary` (see scripts/test.sh), else the source. */
export function defaultTarget(): SinalTarget {
  return process.env.SINAL_TARGET === "binary" ? "binary" : "source";
}

/**
 * `sinal <args>` and where it runs: the source from the repository root, or the compiled binary
 * (`SINAL_BINARY=<path>`) from the server's own directory (no node_modules, no source tree), as
 * test/helpers.ts does.
 */
function sinalCommand(args: string[], dir: string, target: SinalTarget): { cmd: string[]; cwd: string } {
  if (target === "source") return { cmd: [BUN, "src/main.ts", ...args], cwd: ROOT };
  const binary = process.env.SINAL_BINARY;
  if (!binary) throw new Error("SINAL_TARGET=binary needs SINAL_BINARY=<path to dist/sinal>");
  return { cmd: [binary, ...args], cwd: dir };
}

export interface ChildServerOptions {
  /** Added to (and overriding) the defaults: JWT_SECRET, DATABASE_URL, HOST, PORT=0, LOG_LEVEL=info. */
  env?: Record<string, string>;
  /** The server's directory; pass the `dir` of a stopped server to restart on its store. Default: a fresh temp dir. */
  dir?: string;
  /** How long to wait for the `listening` line. Default 15 s. */
  startTimeoutMs?: number;
  /** Default: `defaultTarget()` (SINAL_TARGET). */
  target?: SinalTarget;
}

/** A child that exited, or said nothing, before listening: how it ended and what it wrote on stderr. */
export class ChildStartError extends Error {
  constructor(
    message: string,
    /** How it exited; null when it was still running at the deadline (then it was killed). */
    readonly exit: ChildExit | null,
    readonly stderr: string,
  ) {
    super(message);
    this.name = "ChildStartError";
  }
}

/** How the child ended: an exit code, or the signal that killed it (then `code` is null). */
export interface ChildExit {
  code: number | null;
  signal: string | null;
}

export interface ChildServer {
  port: number;
  pid: number;
  http: string;
  ws: string;
  /**
   * The server's directory, which names its store as in test/helpers.ts (`<dir>/sinal.db`, or with
   * SINAL_STORE=postgres a throwaway PostgreSQL); the caller removes both with `removeServerDir`
   * (done here only when the start fails in a dir made here).
   */
  dir: string;
  /** The environment the child got (pass it back, with `dir`, to restart the same server). */
  env: Record<string, string>;
  /** Every stdout line the child wrote, parsed as JSON (a line that is not JSON is kept as `{ raw }`). */
  logs: Record<string, unknown>[];
  /** Everything the child wrote on stderr so far. */
  stderr(): string;
  /** Sends a signal (default SIGTERM); does nothing once the child has exited. */
  kill(signal?: NodeJS.Signals): void;
  /** Settles when the child has exited and its stdout is read to the end. */
  exited: Promise<ChildExit>;
  /** Resident memory of the child now (VmRSS in /proc/<pid>/status), in bytes. Throws once it has exited. */
  rssBytes(): number;
  /** Runs `sinal keys create --tenant <tenant>` with the same env and store; returns the new key. */
  createApiKey(tenant: string): Promise<string>;
}

/**
 * sinal as a real child process: `bun src/main.ts serve` from the repository root (or the binary,
 * see sinalCommand) with its own store (see `dir`), once it has logged `listening`. Unlike `startServer` (test/helpers.ts) nothing of it
 * lives in the test process, so a test can kill it (SIGKILL included), restart it on the same
 * store, and measure it (`rssBytes`). The child gets PATH, HOME and TMPDIR of this process and
 * nothing else from it (a stray REDIS_URL or SINAL_TARGET stays out). A start that fails throws a
 * ChildStartError. A watchdog SIGKILLs a child still running once the test process has gone.
 *
 * @example
 * const first = await startChildServer({ env: { SINAL_API_KEYS: "acme:a-key-of-16-chars-or-more" } });
 * first.kill("SIGKILL");
 * await first.exited; // { code: null, signal: "SIGKILL" }
 * const again = await startChildServer({ env: first.env, dir: first.dir }); // same store
 */
export async function startChildServer(options: ChildServerOptions = {}): Promise<ChildServer> {
  const level = options.env?.LOG_LEVEL;
  if (level !== undefined && ["warn", "error", "fatal", "silent"].includes(level)) {
    throw new Error(`startChildServer needs LOG_LEVEL info or lower: the port is read from the "listening" line (got ${level})`);
  }
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), "sinal-child-"));
  const env: Record<string, string> = {
    JWT_SECRET: SECRET,
    DATABASE_URL: options.env?.DATABASE_URL ?? (await serverDatabaseUrl(dir)),
    HOST: "127.0.0.1",
    PORT: "0",
    LOG_LEVEL: "info",
    ...options.env,
  };
  const inherited: Record<string, string> = {};
  for (const name of ["PATH", "HOME", "TMPDIR"]) if (process.env[name] !== undefined) inherited[name] = process.env[name]!;
  const target = options.target ?? defaultTarget();
  const serve = sinalCommand(["serve"], dir, target);
  const proc = Bun.spawn(serve.cmd, {
    cwd: serve.cwd,
    env: { ...inherited, ...env },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  watch(proc.pid);

  const logs: Record<string, unknown>[] = [];
  let stderr = "";
  let onListening: (port: number) => void = () => {};
  const listening = new Promise<number>((resolve) => (onListening = resolve));
  const stdoutDone = readLines(proc.stdout, (line) => {
    let entry: Record<string, unknown>;
    try {
      entry = JSON.parse(line) as Record<string, unknown>;
    } catch {
      entry = { raw: line };
    }
    logs.push(entry);
    if (entry.msg === "listening" && typeof entry.port === "number") onListening(entry.port);
  });
  // Read to the end even if nobody asks: a full pipe would block the child.
  const stderrDone = (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of proc.stderr) stderr += decoder.decode(chunk, { stream: true });
  })();
  const exited: Promise<ChildExit> = Promise.all([proc.exited, stdoutDone, stderrDone]).then(() => ({
    code: proc.exitCode,
    signal: proc.signalCode === null ? null : String(proc.signalCode),
  }));

  const startTimeoutMs = options.startTimeoutMs ?? 15_000;
  let timer: Timer | undefined;
  const outcome = await Promise.race([
    listening,
    exited.then((exit) => new ChildStartError(`sinal exited (${exit.signal ?? exit.code}) before listening; stderr: ${stderr.slice(-2000)}`, exit, stderr)),
    new Promise<Error>((resolve) => (timer = setTimeout(() => resolve(new ChildStartError(`sinal did not log "listening" within ${startTimeoutMs} ms`, null, stderr)), startTimeoutMs))),
  ]);
  clearTimeout(timer);
  if (outcome instanceof Error) {
    proc.kill("SIGKILL");
    await exited;
    if (options.dir === undefined) await removeServerDir(dir);
    throw outcome;
  }
  const port = outcome;
  return {
    port,
    pid: proc.pid,
    http: `http://127.0.0.1:${port}`,
    ws: `ws://127.0.0.1:${port}/ws`,
    dir,
    env,
    logs,
    stderr: () => stderr,
    kill(signal = "SIGTERM") {
      if (!hasExited(proc)) proc.kill(signal);
    },
    exited,
    rssBytes: () => rssOf(proc.pid),
    async createApiKey(tenant) {
      const keys = sinalCommand(["keys", "create", "--tenant", tenant], dir, target);
      const created = Bun.spawn(keys.cmd, { cwd: keys.cwd, env: { ...inherited, ...env }, stdout: "pipe", stderr: "pipe" });
      const [code, out, err] = await Promise.all([created.exited, new Response(created.stdout).text(), new Response(created.stderr).text()]);
      if (code !== 0) throw new Error(`sinal keys create failed (${code}): ${err}`);
      return out.trimEnd().split("\n").at(-1)!;
    },
  };
}

/**
 * A background shell that SIGKILLs the child once this process has gone (bun test runs no exit
 * handler; see test/support/postgres.ts), and ends by itself as soon as the child has.
 */
function watch(pid: number): void {
  const script = `while kill -0 "$1" 2>/dev/null; do kill -0 "$2" 2>/dev/null || exit 0; sleep 1; done; kill -9 "$2" 2>/dev/null`;
  // detached, and in the background of a shell that exits at once: bun test kills its own
  // dangling children, and a Ctrl-C reaches the whole process group.
  const child = spawn("sh", ["-c", `(${script}) >/dev/null 2>&1 &`, "watchdog", String(process.pid), String(pid)], { detached: true, stdio: "ignore", cwd: tmpdir() });
  child.unref();
}

function hasExited(proc: Subprocess): boolean {
  return proc.exitCode !== null || proc.signalCode !== null;
}

/** Calls `onLine` for each complete line of `stream`; resolves at its end. */
async function readLines(stream: ReadableStream<Uint8Array>, onLine: (line: string) => void): Promise<void> {
  const decoder = new TextDecoder();
  let pending = "";
  for await (const chunk of stream) {
    pending += decoder.decode(chunk, { stream: true });
    let newline: number;
    while ((newline = pending.indexOf("\n")) >= 0) {
      const line = pending.slice(0, newline);
      pending = pending.slice(newline + 1);
      if (line !== "") onLine(line);
    }
  }
  if (pending !== "") onLine(pending);
}

/** VmRSS of a live process, in bytes. */
function rssOf(pid: number): number {
  let status: string;
  try {
    status = readFileSync(`/proc/${pid}/status`, "utf8");
  } catch {
    throw new Error(`process ${pid} is gone: no /proc/${pid}/status`);
  }
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  // A zombie (exited, not yet reaped) has no VmRSS line.
  if (match === null) throw new Error(`process ${pid} has no VmRSS (it has exited)`);
  return Number(match[1]) * 1024;
}
