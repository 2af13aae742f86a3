import { afterEach, describe, expect } from "bun:test";
import { testsNeedingAll } from "./support/required.ts";
import { readdirSync, readFileSync } from "node:fs";
import { Socket } from "node:net";
import { SQL } from "bun";
import { Client } from "./helpers.ts";
import { ChildStartError } from "./support/child-server.ts";
import { ClusterStartError, startCluster, type Cluster, type ClusterNode } from "./support/cluster.ts";
import { postgresTests, startDatabase } from "./support/postgres.ts";
import { redisTests } from "./support/redis.ts";

// The cluster test bed itself (test/support/cluster.ts, test/support/load-balancer.ts), over real
// sockets: the balancer's round robin and controls, the launcher's nodes, kill and restart, and
// that nothing outlives stop(). Until sinal accepts REDIS_URL the nodes run without Redis
// (`redis: false`): independent nodes on one PostgreSQL database are enough to test a balancer.

const pg = postgresTests();
const redis = redisTests();
const withRedis = testsNeedingAll(pg, redis);

const clusters: Cluster[] = [];
const clients: Client[] = [];
afterEach(async () => {
  for (const client of clients.splice(0)) client.close();
  await Promise.all(clusters.splice(0).map((cluster) => cluster.stop()));
});

async function cluster(options: Parameters<typeof startCluster>[0]): Promise<Cluster> {
  const started = await startCluster(options);
  clusters.push(started);
  return started;
}

/** A WebSocket through the balancer, once welcomed. */
async function connect(bed: Cluster): Promise<Client> {
  const { client, welcome } = await Client.connect(`${bed.wsUrl}?token=${await bed.token()}`);
  clients.push(client);
  expect(welcome.type).toBe("welcome");
  return client;
}

/** The tenant's WebSocket connections on each node, as each node's own /v1/stats counts them. */
async function connectionsOn(nodes: ClusterNode[], apiKey: string): Promise<number[]> {
  return Promise.all(
    nodes.map(async (node) => {
      const res = await fetch(`${node.url}/v1/stats`, { headers: { authorization: `Bearer ${apiKey}` } });
      expect(res.status).toBe(200);
      return ((await res.json()) as { tenant: { connections: number } }).tenant.connections;
    }),
  );
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The processes whose parent is this test process, as "pid command" (zombies included). */
function childProcesses(): string[] {
  const children: string[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, "utf8");
    } catch {
      continue; // gone meanwhile
    }
    // pid (comm) state ppid ...; comm may hold spaces and parentheses, so split after the last ")".
    const comm = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
    const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    if (ppid === process.pid) children.push(`${entry} ${comm}`);
  }
  return children;
}

/** Whether something accepts TCP connections on 127.0.0.1:port. */
function listens(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = new Socket();
    socket.setTimeout(1000, () => {
      socket.destroy();
      resolve(true); // no refusal within a second: something holds the port
    });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
    socket.connect(port, "127.0.0.1");
  });
}

/** The names of the databases of the PostgreSQL server that holds `url`. */
async function databasesOf(url: string): Promise<string[]> {
  const admin = new URL(url);
  admin.pathname = "/postgres";
  const sql = new SQL(admin.toString(), { prepare: false, max: 1 });
  try {
    const rows: { datname: string }[] = await sql`SELECT datname FROM pg_database`;
    return rows.map((row) => row.datname);
  } finally {
    await sql.close();
  }
}

describe("cluster bed without Redis (independent nodes on one PostgreSQL database)", () => {
  pg.test("the balancer hands connections to the nodes in turn, and passes plain HTTP through", async () => {
    const bed = await cluster({ nodes: 3, redis: false });
    const key = await bed.apiKey("acme");
    expect(await connectionsOn(bed.nodes, key)).toEqual([0, 0, 0]);

    const expected = [0, 0, 0];
    for (let i = 0; i < 6; i++) {
      await connect(bed);
      expected[i % 3]!++;
      expect(await connectionsOn(bed.nodes, key)).toEqual(expected);
    }
    expect(bed.nodes.map((_, i) => [bed.balancer.routed(i), bed.balancer.active(i)])).toEqual([
      [2, 2],
      [2, 2],
      [2, 2],
    ]);

    const health = await fetch(`${bed.url}/health`, { headers: { connection: "close" } });
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({ status: "ok" });
  });

  pg.test("a node marked down gets no new connection; marked up again, it gets its turn", async () => {
    const bed = await cluster({ nodes: 3, redis: false });
    const key = await bed.apiKey("acme");
    bed.balancer.setUp(1, false);
    for (let i = 0; i < 4; i++) await connect(bed);
    expect(await connectionsOn(bed.nodes, key)).toEqual([2, 0, 2]);
    expect(bed.balancer.routed(1)).toBe(0);

    bed.balancer.setUp(1, true);
    for (let i = 0; i < 3; i++) await connect(bed);
    expect(await connectionsOn(bed.nodes, key)).toEqual([3, 1, 3]);
  });

  pg.test("a node killed with SIGKILL and cut off: its clients see a close, reconnect to the others, and the restarted node takes connections again", async () => {
    const bed = await cluster({ nodes: 3, redis: false });
    const key = await bed.apiKey("acme");
    const onNode = [await connect(bed), await connect(bed), await connect(bed)];
    expect(await connectionsOn(bed.nodes, key)).toEqual([1, 1, 1]);

    const killedPid = bed.nodes[1]!.pid;
    expect(await bed.nodes[1]!.kill("SIGKILL")).toEqual({ code: null, signal: "SIGKILL" });
    expect(isAlive(killedPid)).toBe(false);
    bed.balancer.setUp(1, false);
    bed.balancer.dropConnections(1);
    expect((await onNode[1]!.closed).code).toBe(1006);
    expect(bed.balancer.active(1)).toBe(0);

    // The others stay connected and served.
    for (const client of [onNode[0]!, onNode[2]!]) {
      expect(client.socket.readyState).toBe(WebSocket.OPEN);
      expect((await client.request({ type: "ping" })).type).toBe("reply");
    }
    const routedToKilled = bed.balancer.routed(1);
    await connect(bed);
    expect(bed.balancer.routed(1)).toBe(routedToKilled);
    const [first, third] = await connectionsOn([bed.nodes[0]!, bed.nodes[2]!], key);
    expect(first! + third!).toBe(3);

    await bed.nodes[1]!.restart();
    expect(bed.nodes[1]!.pid).not.toBe(killedPid);
    bed.balancer.setUp(1, true);
    for (let i = 0; i < 3; i++) await connect(bed);
    expect(bed.balancer.routed(1)).toBe(routedToKilled + 1);
    expect(bed.balancer.active(1)).toBe(1);
    expect((await connectionsOn(bed.nodes, key))[1]).toBe(1);
  });

  pg.test("stop() leaves no node process, no database and no balancer behind", async () => {
    const bed = await startCluster({ nodes: 2, redis: false });
    const pids = bed.nodes.map((node) => node.pid);
    const database = new URL(bed.databaseUrl).pathname.slice(1);
    expect(pids.every(isAlive)).toBe(true);
    expect(await databasesOf(bed.databaseUrl)).toContain(database);

    await bed.stop();
    expect(pids.filter(isAlive)).toEqual([]);
    expect(childProcesses()).toEqual([]);
    expect(await databasesOf(bed.databaseUrl)).not.toContain(database);
    expect(await listens(bed.balancer.port)).toBe(false);
  });
});

describe("cluster bed with Redis", () => {
  withRedis("a cluster whose nodes fail to start stops what it started: no node, no redis-server, no database left", async () => {
    const neighbour = await startDatabase(); // on the same PostgreSQL server as the cluster's
    try {
      const before = await databasesOf(neighbour.url);
      // IDLE_TIMEOUT_S must be longer than PING_INTERVAL_MS: every node refuses this configuration.
      const failed = await startCluster({ nodes: 2, env: { IDLE_TIMEOUT_S: "2", PING_INTERVAL_MS: "5000" } }).catch((err: unknown) => err);
      expect(failed).toBeInstanceOf(ClusterStartError);
      const causes = (failed as ClusterStartError).causes;
      expect(causes).toHaveLength(2);
      for (const cause of causes) expect((cause as ChildStartError).exit).toEqual({ code: 1, signal: null });
      expect(childProcesses()).toEqual([]);
      expect(await databasesOf(neighbour.url)).toEqual(before);
    } finally {
      await neighbour.stop();
    }
  });

  withRedis("three nodes on one Redis and one database start, take connections in turn, and leave nothing behind", async () => {
    const bed = await startCluster({ nodes: 3 });
    const pids = bed.nodes.map((node) => node.pid);
    const database = new URL(bed.databaseUrl).pathname.slice(1);
    try {
      expect(bed.nodes.map((node) => node.child.env.REDIS_URL)).toEqual([bed.redis!.url, bed.redis!.url, bed.redis!.url]);
      for (const node of bed.nodes) expect((await fetch(`${node.url}/ready`)).status).toBe(200);
      const key = await bed.apiKey("acme");
      for (let i = 0; i < 3; i++) await connect(bed);
      expect(await connectionsOn(bed.nodes, key)).toEqual([1, 1, 1]);
    } finally {
      for (const client of clients.splice(0)) client.close();
      await bed.stop();
    }
    expect(pids.filter(isAlive)).toEqual([]);
    expect(childProcesses()).toEqual([]);
    expect(await listens(bed.redis!.port)).toBe(false);
    expect(await databasesOf(bed.databaseUrl)).not.toContain(database);
  });
});
