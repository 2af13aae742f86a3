import type { MintOptions } from "../../src/auth/tokens.ts";
import { removeServerDir, testToken } from "../helpers.ts";
import { startChildServer, type ChildExit, type ChildServer, type SinalTarget } from "./child-server.ts";
import { LoadBalancer } from "./load-balancer.ts";
import { startDatabase, type Postgres } from "./postgres.ts";
import { startRedis, type RedisServer } from "./redis.ts";

export interface ClusterOptions {
  /** How many sinal nodes. Default 3. */
  nodes?: number;
  /** Added to (and overriding) every node's environment (see startChildServer for the defaults). */
  env?: Record<string, string>;
  /** Default: SINAL_TARGET (see test/support/child-server.ts). */
  target?: SinalTarget;
  /**
   * Default true: a throwaway redis-server, its URL in every node's REDIS_URL. false: no Redis, so
   * N independent nodes on one PostgreSQL database (a publication stays on the node it reached).
   */
  redis?: boolean;
  /** How long each node may take to log `listening`. Default 15 s. */
  startTimeoutMs?: number;
}

export interface ClusterNode {
  readonly index: number;
  /** http://127.0.0.1:<port> of the node itself (not the balancer); a restart changes it. */
  readonly url: string;
  /** ws://127.0.0.1:<port>/ws of the node itself. */
  readonly wsUrl: string;
  readonly port: number;
  readonly pid: number;
  /** The running (or last) process: its logs, stderr, exit. */
  readonly child: ChildServer;
  /**
   * Sends `signal` (default SIGKILL: the node dies with no goodbye) and resolves once it has exited.
   * The balancer is left alone: mark the node down (`setUp`) and cut its connections
   * (`dropConnections`) as the test's scenario needs.
   */
  kill(signal?: NodeJS.Signals): Promise<ChildExit>;
  /**
   * Stops the node (SIGTERM) if it still runs, starts it again with the same environment on a new
   * port, and points its backend in the balancer there. Its up/down mark stays as it was.
   */
  restart(): Promise<void>;
}

export interface Cluster {
  /** http://127.0.0.1:<port> of the load balancer. */
  url: string;
  /** ws://127.0.0.1:<port>/ws of the load balancer. */
  wsUrl: string;
  balancer: LoadBalancer;
  /** nodes[i] is backend i of the balancer. */
  nodes: ClusterNode[];
  /** The redis-server every node uses; null with `redis: false`. */
  redis: RedisServer | null;
  /** The PostgreSQL database every node uses (dropped by `stop()`). */
  databaseUrl: string;
  /** A token every node accepts (the shared JWT_SECRET); defaults as test/helpers.ts's `token`. */
  token(opts?: Partial<MintOptions>): Promise<string>;
  /** A new API key of `tenant`, stored in the shared database (`sinal keys create`): every node accepts it. */
  apiKey(tenant: string): Promise<string>;
  /** SIGKILLs every node, closes the balancer, stops redis-server and drops the database; a second call waits for the first. */
  stop(): Promise<void>;
}

/** A cluster that did not start; everything it had started is stopped again. */
export class ClusterStartError extends Error {
  constructor(
    /** Why each part that failed did (a node's is a ChildStartError, with its exit and stderr). */
    readonly causes: unknown[],
  ) {
    super(`the cluster did not start: ${causes.map((cause) => (cause instanceof Error ? cause.message : String(cause))).join("; ")}`);
    this.name = "ClusterStartError";
  }
}

/**
 * N sinal nodes as child processes (startChildServer) behind a LoadBalancer, sharing one fresh
 * PostgreSQL database (startDatabase), one throwaway redis-server (startRedis, unless
 * `redis: false`) and JWT_SECRET. Everything starts in parallel; a start that fails stops what
 * did start and throws a ClusterStartError. Every process has a watchdog that ends it once the
 * test process has gone, so a failed test that never reaches `stop()` leaves nothing behind.
 *
 * @example
 * const cluster = await startCluster({ nodes: 3 });
 * const { client } = await Client.connect(`${cluster.wsUrl}?token=${await cluster.token()}`);
 * await cluster.nodes[1]!.kill(); // SIGKILL
 * cluster.balancer.setUp(1, false);
 * await cluster.stop();
 */
export async function startCluster(options: ClusterOptions = {}): Promise<Cluster> {
  const count = options.nodes ?? 3;
  if (!Number.isInteger(count) || count < 1) throw new RangeError(`nodes must be a whole number of at least 1 (got ${count})`);
  const [redisStart, databaseStart] = await Promise.allSettled([options.redis === false ? null : startRedis(), startDatabase()]);
  const redis = redisStart.status === "fulfilled" ? redisStart.value : null;
  const database = databaseStart.status === "fulfilled" ? databaseStart.value : null;
  if (redisStart.status === "rejected" || database === null) {
    await Promise.allSettled([redis?.stop(), database?.stop()]);
    throw new ClusterStartError([redisStart, databaseStart].flatMap((start) => (start.status === "rejected" ? [start.reason] : [])));
  }

  const env: Record<string, string> = {
    DATABASE_URL: database.url,
    ...(redis === null ? {} : { REDIS_URL: redis.url }),
    ...options.env,
  };
  const start = (childEnv: Record<string, string>, dir?: string) =>
    startChildServer({ env: childEnv, dir, target: options.target, startTimeoutMs: options.startTimeoutMs });
  const starts = await Promise.allSettled(Array.from({ length: count }, () => start(env)));
  const children = starts.flatMap((s) => (s.status === "fulfilled" ? [s.value] : []));
  let balancer: LoadBalancer | null = null;
  try {
    const failures = starts.flatMap((s) => (s.status === "rejected" ? [s.reason] : []));
    if (failures.length > 0) throw new ClusterStartError(failures);
    balancer = await LoadBalancer.start(children.map((child) => child.port));
  } catch (err) {
    await stopAll(children, null, redis, database);
    throw err;
  }

  const lb = balancer;
  const current = [...children];
  let stopping: Promise<void> | undefined;
  const nodes = current.map((_, index): ClusterNode => ({
    index,
    get url() {
      return current[index]!.http;
    },
    get wsUrl() {
      return current[index]!.ws;
    },
    get port() {
      return current[index]!.port;
    },
    get pid() {
      return current[index]!.pid;
    },
    get child() {
      return current[index]!;
    },
    async kill(signal = "SIGKILL") {
      const child = current[index]!;
      child.kill(signal);
      return child.exited;
    },
    async restart() {
      const old = current[index]!;
      old.kill("SIGTERM");
      await old.exited;
      const next = await start(old.env, old.dir);
      current[index] = next;
      lb.setPort(index, next.port);
    },
  }));

  return {
    url: lb.url,
    wsUrl: `ws://127.0.0.1:${lb.port}/ws`,
    balancer: lb,
    nodes,
    redis,
    databaseUrl: database.url,
    token: async (opts) => testToken(opts),
    // The CLI needs no running node, only the nodes' environment (the shared database).
    apiKey: (tenant) => current[0]!.createApiKey(tenant),
    // Once: a test may stop its cluster, and its afterEach again.
    stop: () => (stopping ??= stopAll(current, lb, redis, database)),
  };
}

/** Stops every part, each whatever the others do; throws the first failure once all are done. */
async function stopAll(children: ChildServer[], balancer: LoadBalancer | null, redis: RedisServer | null, database: Postgres): Promise<void> {
  const stopNode = async (child: ChildServer) => {
    child.kill("SIGKILL");
    await child.exited;
    await removeServerDir(child.dir);
  };
  const results = await Promise.allSettled([balancer?.close(), ...children.map(stopNode), redis?.stop(), database.stop()]);
  const failure = results.find((result) => result.status === "rejected");
  if (failure !== undefined) throw failure.reason;
}
