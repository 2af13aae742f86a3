import type { test } from "bun:test";
import { testsNeeding, type Found } from "./required.ts";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, Socket } from "node:net";
import { tmpdir } from "node:os";
import { connectRedis, openRedis, type Redis } from "../../src/redis/redis-client.ts";
import { join } from "node:path";

/**
 * A throwaway redis-server (Debian's `redis-server` package, or REDIS_SERVER_BIN) on a free port
 * of 127.0.0.1, its files in a fresh temp dir. `stop()` stops it and removes the dir; `kill()` is a
 * SIGKILL (a crash), `start()` starts it again on the same port (a restart: with `persist` it
 * reloads its append-only file, otherwise it comes back empty). A watchdog stops a server whose
 * test process has gone (bun test runs no exit handler; see test/support/postgres.ts).
 *
 * Without redis-server the tests skip with the reason when run by hand; under CI=true a missing
 * Redis fails the run (CI installs it in .ci/run).
 */
export interface RedisServer {
  /** redis://127.0.0.1:<port> */
  url: string;
  port: number;
  /** Starts it again after `kill()` (same port, same dir). */
  start(): Promise<void>;
  /** SIGKILL: no shutdown, no save. */
  kill(): Promise<void>;
  stop(): Promise<void>;
}

export interface RedisOptions {
  /** appendonly yes, appendfsync always: a restart keeps every acknowledged write. */
  persist?: boolean;
}

let found: Found | null = null;

export function findRedis(): Found {
  if (found !== null) return found;
  const bin = process.env.REDIS_SERVER_BIN ?? "redis-server";
  const version = spawnSync(bin, ["--version"], { encoding: "utf8", timeout: 10_000 });
  found = version.status === 0 ? { ok: true, bin } : { ok: false, reason: `${bin} is not runnable (apt-get install redis-server): ${version.error?.message ?? version.stderr}` };
  return found;
}

/** `test` for suites that need Redis (see testsNeeding). */
export function redisTests(): { test: typeof test; available: boolean } {
  return testsNeeding("Redis", "apt-get install redis-server", findRedis());
}

export async function startRedis(options: RedisOptions = {}): Promise<RedisServer> {
  const redis = findRedis();
  if (!redis.ok) throw new Error(redis.reason);
  const dir = mkdtempSync(join(tmpdir(), "sinal-redis-"));
  const port = await freePort();
  const args = [
    "--port", String(port),
    "--bind", "127.0.0.1",
    "--dir", dir,
    "--save", "",
    "--appendonly", options.persist ? "yes" : "no",
    "--appendfsync", "always",
    "--maxmemory-policy", "noeviction",
    "--daemonize", "no",
    "--logfile", join(dir, "redis.log"),
  ];
  let child: ChildProcess | null = null;
  const start = async () => {
    child = spawn(redis.bin, args, { stdio: "ignore", cwd: dir });
    watch(child.pid!, dir);
    await waitForPort(port, 10_000);
  };
  const kill = async () => {
    const running = child;
    child = null;
    if (running === null || running.exitCode !== null) return;
    const exited = new Promise((resolve) => running.once("exit", resolve));
    running.kill("SIGKILL");
    await exited;
  };
  await start();
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    start,
    kill,
    stop: async () => {
      await kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A background shell that SIGKILLs the server and removes its dir once this process has gone. */
function watch(pid: number, dir: string): void {
  const script = `while kill -0 "$1" 2>/dev/null; do sleep 1; done; kill -9 "$2" 2>/dev/null; rm -rf "$3"`;
  const child = spawn("sh", ["-c", `(${script}) >/dev/null 2>&1 &`, "watchdog", String(process.pid), String(pid), dir], { detached: true, stdio: "ignore", cwd: tmpdir() });
  child.unref();
}

async function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await answersPing(port)) return;
    await Bun.sleep(20);
  }
  throw new Error(`redis-server did not answer on port ${port} within ${timeoutMs} ms`);
}

function answersPing(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = new Socket();
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(500, () => done(false));
    socket.once("error", () => done(false));
    socket.connect(port, "127.0.0.1", () => socket.write("PING\r\n"));
    socket.once("data", (data) => done(data.toString().startsWith("+PONG")));
  });
}

export function freePort(): Promise<number> {
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

/** A connection to `url` as sinal makes it (connectRedis), opened; added to `opened` for the caller's afterAll. */
export async function openConnection(url: string, opened: Redis[], commandTimeoutMs = 1000, subscriber = false): Promise<Redis> {
  const connection = connectRedis({ url, commandTimeoutMs, prefix: "unused" }, "test", undefined, subscriber);
  opened.push(connection);
  await openRedis(connection, 5000);
  return connection;
}

/** Keys under `prefix`, sorted (SCAN, as a test can afford): what a subject leaves behind in Redis. */
export async function keysUnder(connection: Redis, prefix: string): Promise<string[]> {
  let cursor = "0";
  const found = new Set<string>();
  do {
    const [next, batch] = await connection.scan(cursor, "MATCH", `${prefix}:*`, "COUNT", 1000);
    cursor = next;
    // SCAN may return a key twice while Redis rehashes.
    for (const key of batch) found.add(key);
  } while (cursor !== "0");
  return [...found].sort();
}
