import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { createApp, type Sinal } from "../src/app.ts";
import { createApiKey } from "../src/auth/api-keys.ts";
import { mintToken, type MintOptions } from "../src/auth/tokens.ts";
import { loadConfig } from "../src/config.ts";
import { createLogger } from "../src/log.ts";
import { createBackends, openConfiguredStore } from "../src/backends.ts";
import { startDatabase, type Postgres } from "./support/postgres.ts";
import { startRedis, type RedisServer } from "./support/redis.ts";
import { LoadBalancer } from "./support/load-balancer.ts";
import type { Store } from "../src/store/store.ts";

export const SECRET = "test-secret-that-is-long-enough-for-hs256!";

/** A token signed with SECRET: tenant "acme", user "u1", valid for an hour, unless `opts` says otherwise. */
export function testToken(opts: Partial<MintOptions> = {}): string {
  return mintToken(SECRET, { tenant: "acme", user: "u1", ttlSec: 3600, ...opts });
}

export interface TestServer {
  port: number;
  http: string;
  ws: string;
  sinal: Sinal;
  store: Store;
  dir: string;
  /** Log lines the server wrote, parsed. */
  logs: Record<string, unknown>[];
  token(opts: Partial<MintOptions> & { tenant?: string; user?: string }): Promise<string>;
  apiKey(tenant: string): Promise<string>;
  stop(): Promise<void>;
  /**
   * Stops this server (draining, store flushed) and starts another on the same store and env;
   * `meanwhile` runs while no server is up (e.g. changes a stopped sinal must catch up on).
   */
  restart(meanwhile?: () => Promise<void>): Promise<TestServer>;
}

/**
 * Which sinal the suites run against: the source, in this process (default), or the compiled
 * binary as a child process (`SINAL_TARGET=binary SINAL_BINARY=<path>`, see scripts/test.sh), run
 * from a temp directory with no node_modules and no source tree. Suites that run against both
 * use only the network and the CLI (not `sinal` or `store`).
 */
const TARGET = process.env.SINAL_TARGET === "binary" ? "binary" : "source";

/**
 * The store every server of a run uses: a sqlite file in the server's dir (default), or with
 * `SINAL_STORE=postgres` (scripts/test.sh runs every suite that starts a server so) a database of
 * its own in the test process's throwaway PostgreSQL (startDatabase, test/support/postgres.ts).
 * Either is kept across `restart()` and dropped by `stop()`. A suite that must look at the store
 * does it through `server.store`, or `openServerStore(dir)` before a server starts, never through
 * the sqlite file.
 */
export const STORE: "sqlite" | "postgres" = process.env.SINAL_STORE === "postgres" || process.env.SINAL_CLUSTER === "redis" ? "postgres" : "sqlite";

/**
 * `SINAL_CLUSTER=redis` (scripts/test.sh): every server is a cluster node, on PostgreSQL (above) and
 * one throwaway Redis per test process, each server under a key prefix of its own, so the suites
 * run on the Redis broker, history, presence, locks, claims and counts as they run on one node.
 */
export const CLUSTER = process.env.SINAL_CLUSTER === "redis";
let sharedRedis: Promise<RedisServer> | null = null;
let prefixes = 0;

async function clusterEnv(dir: string): Promise<Record<string, string>> {
  if (!CLUSTER) return {};
  sharedRedis ??= startRedis();
  const redis = await sharedRedis;
  // One prefix per server dir: a restart on the same dir finds its channels again.
  let prefix = clusterPrefixes.get(dir);
  if (prefix === undefined) clusterPrefixes.set(dir, (prefix = `t${process.pid}-${++prefixes}`));
  return { REDIS_URL: redis.url, REDIS_PREFIX: prefix };
}
const clusterPrefixes = new Map<string, string>();
const databases = new Map<string, Postgres>();

/** The DATABASE_URL of the servers started on `dir` (the same one for every call with that dir). */
export async function serverDatabaseUrl(dir: string): Promise<string> {
  if (STORE === "sqlite") return `sqlite:${join(dir, "sinal.db")}`;
  let pg = databases.get(dir);
  if (pg === undefined) databases.set(dir, (pg = await startDatabase()));
  return pg.url;
}

/**
 * Opens here the store a server started on `dir` will use (e.g. to put something in it before
 * the server starts); the caller closes it before starting the server.
 */
export async function openServerStore(dir: string): Promise<Store> {
  const config = loadConfig({ JWT_SECRET: SECRET, DATABASE_URL: await serverDatabaseUrl(dir) });
  return openConfiguredStore(config.database);
}

/** Drops the store of `dir` (its PostgreSQL; a sqlite file goes with the dir) and removes the dir. */
export async function removeServerDir(dir: string): Promise<void> {
  await databases.get(dir)?.stop();
  databases.delete(dir);
  rmSync(dir, { recursive: true, force: true });
}

/**
 * A real server on 127.0.0.1:0 in a fresh temp dir (or `reuseDir`), on this run's store (see
 * STORE) unless `env` names a DATABASE_URL.
 */
export async function startServer(env: Record<string, string> = {}, reuseDir?: string): Promise<TestServer> {
  // SINAL_CLUSTER: three nodes behind a balancer, unless the suite picked its own Redis or database.
  if (CLUSTER && env.REDIS_URL === undefined && env.DATABASE_URL === undefined) return startClusterNodes(env, reuseDir);
  return startNode(env, reuseDir);
}

/** A node of its own kind (see startServer), with `halt`: stopped, its dir and store kept. */
type Node = TestServer & { halt(): Promise<void> };

/**
 * SINAL_CLUSTER=redis: three nodes on one database and one Redis prefix, behind a TCP balancer that
 * sends each new connection to the next node in turn; the TestServer's addresses are the
 * balancer's, so a suite's clients and REST calls land on every node and the publications it
 * checks cross from one node to another. `sinal` and `store` are the first node's.
 */
const CLUSTER_NODES = 3;

async function startClusterNodes(env: Record<string, string>, reuseDir?: string): Promise<TestServer> {
  const dir = reuseDir ?? mkdtempSync(join(tmpdir(), "sinal-test-"));
  // The first one migrates the fresh database; the others start together after it.
  const first = await startNode(env, dir);
  const nodes = [first, ...(await Promise.all(Array.from({ length: CLUSTER_NODES - 1 }, () => startNode(env, dir))))];
  const balancer = await LoadBalancer.start(nodes.map((node) => node.port));
  const halt = async () => {
    await balancer.close();
    await Promise.all(nodes.map((node) => node.halt()));
  };
  return {
    port: balancer.port,
    http: balancer.url,
    ws: `${balancer.url.replace(/^http/, "ws")}/ws`,
    get sinal() {
      return first.sinal;
    },
    get store() {
      return first.store;
    },
    dir,
    logs: first.logs,
    token: first.token,
    apiKey: first.apiKey,
    async stop() {
      await halt();
      await removeServerDir(dir);
    },
    async restart(meanwhile) {
      await halt();
      await meanwhile?.();
      return startClusterNodes(env, dir);
    },
  };
}

async function startNode(env: Record<string, string>, reuseDir?: string): Promise<Node> {
  if (TARGET === "binary") return startBinaryServer(env, reuseDir);
  const dir = reuseDir ?? mkdtempSync(join(tmpdir(), "sinal-test-"));
  const config = loadConfig({
    JWT_SECRET: SECRET,
    DATABASE_URL: env.DATABASE_URL ?? (await serverDatabaseUrl(dir)),
    ...(await clusterEnv(dir)),
    HOST: "127.0.0.1",
    PORT: "0",
    LOG_LEVEL: "debug",
    ...env,
  });
  const logs: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      for (const line of String(chunk).split("\n")) if (line) logs.push(JSON.parse(line));
      done();
    },
  });
  const logger = createLogger(config.logLevel, sink);
  // The store DATABASE_URL names (sqlite by default; `env` may name a PostgreSQL), and with
  // REDIS_URL the cluster's backends, as `sinal serve` builds them.
  const backends = await createBackends(config, logger);
  const { store } = backends;
  const sinal = createApp({ ...backends, config, logger });
  sinal.app.listen({ port: 0, hostname: "127.0.0.1", reusePort: false });
  const port = sinal.app.server!.port!;
  const halt = async () => {
    await sinal.stop();
    await store.close();
    await backends.cluster?.close();
  };
  return {
    port,
    http: `http://127.0.0.1:${port}`,
    ws: `ws://127.0.0.1:${port}/ws`,
    sinal,
    store,
    dir,
    logs,
    token: async (opts) => testToken(opts),
    apiKey: async (tenant) => (await createApiKey(store, tenant)).key,
    halt,
    async stop() {
      await halt();
      await removeServerDir(dir);
    },
    async restart(meanwhile) {
      await halt();
      await meanwhile?.();
      return startServer(env, dir);
    },
  };
}

/** The compiled binary as a child process; `sinal` and `store` throw (they live in that process). */
async function startBinaryServer(env: Record<string, string>, reuseDir?: string): Promise<Node> {
  const binary = process.env.SINAL_BINARY;
  if (!binary) throw new Error("SINAL_TARGET=binary needs SINAL_BINARY=<path to dist/sinal>");
  const dir = reuseDir ?? mkdtempSync(join(tmpdir(), "sinal-test-"));
  const childEnv = { JWT_SECRET: SECRET, DATABASE_URL: env.DATABASE_URL ?? (await serverDatabaseUrl(dir)), ...(await clusterEnv(dir)), HOST: "127.0.0.1", PORT: "0", LOG_LEVEL: "debug", ...env };
  const proc = Bun.spawn([binary, "serve"], { cwd: dir, env: childEnv, stdin: "ignore", stdout: "pipe", stderr: "inherit" });
  const logs: Record<string, unknown>[] = [];
  const port = await new Promise<number>((resolve, reject) => {
    let pending = "";
    const decoder = new TextDecoder();
    void (async () => {
      for await (const chunk of proc.stdout) {
        pending += decoder.decode(chunk, { stream: true });
        let newline;
        while ((newline = pending.indexOf("\n")) >= 0) {
          const line = pending.slice(0, newline);
          pending = pending.slice(newline + 1);
          if (line === "") continue;
          const entry = JSON.parse(line) as Record<string, unknown>;
          logs.push(entry);
          if (entry.msg === "listening") resolve(entry.port as number);
        }
      }
      reject(new Error(`the binary exited (${await proc.exited}) before listening`));
    })();
  });
  const unavailable = (what: string) => () => {
    throw new Error(`server.${what} is in-process only; this suite runs against the binary too`);
  };
  let stopped = false;
  const stopProcess = async () => {
    if (stopped) return;
    stopped = true;
    proc.kill("SIGTERM");
    const code = await proc.exited;
    if (code !== 0) throw new Error(`the binary exited ${code} on SIGTERM`);
  };
  const server: Node = {
    port,
    http: `http://127.0.0.1:${port}`,
    ws: `ws://127.0.0.1:${port}/ws`,
    get sinal(): Sinal {
      return unavailable("sinal")();
    },
    get store(): Store {
      return unavailable("store")();
    },
    dir,
    logs,
    token: async (opts) => testToken(opts),
    async apiKey(tenant) {
      const created = Bun.spawnSync([binary, "keys", "create", "--tenant", tenant], { cwd: dir, env: childEnv });
      if (created.exitCode !== 0) throw new Error(`keys create failed: ${created.stderr.toString()}`);
      return created.stdout.toString().trimEnd().split("\n").at(-1)!;
    },
    halt: stopProcess,
    async stop() {
      await stopProcess();
      await removeServerDir(dir);
    },
    async restart(meanwhile) {
      await stopProcess();
      await meanwhile?.();
      return startBinaryServer(env, dir);
    },
  };
  return server;
}

export type Frame = Record<string, any>;

/** A WebSocket client that queues every frame so tests can assert the exact order on the wire. */
export class Client {
  private readonly queue: Frame[] = [];
  private waiters: ((f: Frame) => void)[] = [];
  private nextId = 1;
  readonly closed: Promise<{ code: number; reason: string }>;

  private constructor(readonly socket: WebSocket) {
    socket.onmessage = (event) => {
      const frame = JSON.parse(String(event.data)) as Frame;
      const waiter = this.waiters.shift();
      if (waiter) waiter(frame);
      else this.queue.push(frame);
    };
    this.closed = new Promise((resolve) => {
      socket.onclose = (event) => resolve({ code: event.code, reason: event.reason });
    });
  }

  /** Opens a socket and waits for the welcome frame, which it returns. */
  static async connect(url: string, options: { headers?: Record<string, string>; protocols?: string[] } = {}): Promise<{ client: Client; welcome: Frame }> {
    const socket = new WebSocket(url, options as any);
    const client = new Client(socket);
    await new Promise<void>((resolve, reject) => {
      socket.onopen = () => resolve();
      socket.onerror = () => reject(new Error(`could not open ${url}`));
    });
    const welcome = await client.next();
    return { client, welcome };
  }

  /** Connects with `?token=` and returns the client once welcomed. */
  static async open(server: TestServer, opts: Partial<MintOptions> = {}): Promise<Client> {
    const token = await server.token(opts);
    const { client, welcome } = await Client.connect(`${server.ws}?token=${token}`);
    if (welcome.type !== "welcome") throw new Error(`expected welcome, got ${JSON.stringify(welcome)}`);
    return client;
  }

  /** The next frame, or a rejection naming what was awaited after `ms`. */
  next(ms = 2000): Promise<Frame> {
    const queued = this.queue.shift();
    if (queued) return Promise.resolve(queued);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`no frame within ${ms} ms`));
      }, ms);
      const waiter = (f: Frame) => {
        clearTimeout(timer);
        resolve(f);
      };
      this.waiters.push(waiter);
    });
  }

  /** Resolves true if no frame arrives within `ms` (for "must not receive" assertions). */
  async silentFor(ms: number): Promise<boolean> {
    if (this.queue.length > 0) return false;
    try {
      await this.next(ms).then((f) => this.queue.unshift(f));
      return false;
    } catch {
      return true;
    }
  }

  send(frame: unknown): void {
    this.socket.send(typeof frame === "string" ? frame : JSON.stringify(frame));
  }

  /** Sends a frame with a fresh id and returns the next frame (which must be its reply). */
  async request(frame: Frame): Promise<Frame> {
    const id = this.nextId++;
    this.send({ ...frame, id });
    const reply = await this.next();
    if (reply.type !== "reply" || reply.id !== id) throw new Error(`expected reply ${id}, got ${JSON.stringify(reply)}`);
    return reply;
  }

  close(): void {
    this.socket.close();
  }
}

/** Sends a real WebSocket handshake and returns the HTTP answer (status, headers, body) without a client library. */
export async function handshake(url: string, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(url.replace(/^ws/, "http"), {
    headers: {
      Connection: "Upgrade",
      Upgrade: "websocket",
      "Sec-WebSocket-Version": "13",
      "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
      ...headers,
    },
  });
}

/** POST JSON with a bearer credential. */
export function post(server: TestServer, path: string, body: unknown, credential?: string, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${server.http}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(credential ? { authorization: `Bearer ${credential}` } : {}), ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}
