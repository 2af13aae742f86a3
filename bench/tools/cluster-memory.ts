/**
 * Diagnostic, not part of `npm run bench:cluster`: what an idle authenticated connection costs one
 * sinal node with and without the cluster. For each mode one node (bench/tools/memory-probe.ts
 * sinal) on a throwaway PostgreSQL, with REDIS_URL (a throwaway redis-server) in `cluster` mode;
 * then `count` idle connections (bench/loadgen.ts idle, each its own user); the node's RSS and JS
 * heap (after a full GC) are read before, 3 s after the last connection opened and again `laterSec`
 * later, with the object types that grew by at least one per 10 connections.
 *
 *   bun bench/tools/cluster-memory.ts [count=8000] [modes=single,cluster] [laterSec=10]
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createInterface } from "node:readline";
import { BUN, ROOT, freePort } from "../lib/proc.ts";
import { startBenchPostgres } from "../lib/postgres.ts";
import { startRedis } from "../../test/support/redis.ts";

const count = Number(process.argv[2] ?? 8000);
const modes = (process.argv[3] ?? "single,cluster").split(",");
const laterSec = Number(process.argv[4] ?? 10);
const secret = randomBytes(32).toString("base64url");
const out = (line: string) => process.stdout.write(`${line}\n`);

interface Probe {
  rss_kb_after_gc: number;
  heap_size_kb: number;
  heap_capacity_kb: number;
  extra_memory_kb: number;
  object_count: number;
  top_types: Record<string, number>;
}

const children: ChildProcess[] = [];
process.on("exit", () => children.forEach((c) => c.kill("SIGKILL")));

/** The probe's next JSON line on stderr after a SIGUSR2. */
function prober(node: ChildProcess): () => Promise<Probe> {
  const waiting: ((p: Probe) => void)[] = [];
  createInterface({ input: node.stderr! }).on("line", (line) => {
    if (line.startsWith('{"rss_kb_before_gc"')) waiting.shift()?.(JSON.parse(line) as Probe);
  });
  return () =>
    new Promise<Probe>((resolve) => {
      waiting.push(resolve);
      node.kill("SIGUSR2");
    });
}

const pg = await startBenchPostgres("0,1");
const redis = await startRedis();
try {
  for (const mode of modes) {
    const port = await freePort();
    const env = {
      PATH: process.env.PATH ?? "",
      HOME: "/tmp",
      PORT: String(port),
      HOST: "127.0.0.1",
      LOG_LEVEL: "warn",
      JWT_SECRET: secret,
      DATABASE_URL: pg.url,
      MAX_CONNECTIONS_PER_TENANT: "1000000",
      PROBE_TOP: "200",
      ...(mode === "cluster" ? { REDIS_URL: redis.url } : {}),
    };
    const node = spawn(BUN, ["bench/tools/memory-probe.ts", "sinal"], { cwd: ROOT, env, stdio: ["ignore", "inherit", "pipe"] });
    children.push(node);
    const probe = prober(node);
    for (let i = 0; ; i++) {
      try {
        if ((await fetch(`http://127.0.0.1:${port}/health`)).ok) break;
      } catch {}
      if (i > 400) throw new Error(`${mode}: sinal did not answer /health`);
      await Bun.sleep(50);
    }
    await Bun.sleep(500);
    const before = await probe();
    const gen = spawn(BUN, ["bench/loadgen.ts", "idle", JSON.stringify({ target: "sinal", host: "127.0.0.1", port, secret, serverPid: node.pid, concurrency: 50, deadlineSec: 600, count, offset: 0 })], {
      cwd: ROOT,
      stdio: ["pipe", "pipe", "inherit"],
    });
    children.push(gen);
    const ready = JSON.parse(await new Promise<string>((r) => createInterface({ input: gen.stdout! }).once("line", r))) as { connected: number; seconds: number };
    const n = ready.connected;
    const per = (a: number, b: number) => Math.round(((b - a) * 1024) / n);
    const row = (when: string, p: Probe) =>
      out(`  ${when}: RSS ${(((p.rss_kb_after_gc - before.rss_kb_after_gc) / 1024) / (n / 1000)).toFixed(2)} MB per 1,000; JS heap ${per(before.heap_size_kb, p.heap_size_kb)} B, heap capacity ${per(before.heap_capacity_kb, p.heap_capacity_kb)} B, extra ${per(before.extra_memory_kb, p.extra_memory_kb)} B, objects ${((p.object_count - before.object_count) / n).toFixed(1)} per connection`);
    out(`${mode}: ${n} connected in ${ready.seconds} s`);
    await Bun.sleep(3000);
    const after = await probe();
    row("+3 s", after);
    const grew = Object.entries(after.top_types)
      .map(([type, c]) => [type, (c - (before.top_types[type] ?? 0)) / n] as const)
      .filter(([, d]) => d >= 0.1)
      .sort((a, b) => b[1] - a[1]);
    out(`    per connection: ${grew.map(([t, d]) => `${t} ${d.toFixed(2)}`).join(", ")}`);
    await Bun.sleep(laterSec * 1000);
    row(`+${3 + laterSec} s`, await probe());
    gen.kill("SIGTERM");
    node.kill("SIGTERM");
    await Bun.sleep(1500);
  }
} finally {
  children.forEach((c) => c.kill("SIGKILL"));
  await redis.stop();
  await pg.stop();
}
process.exit(0);
