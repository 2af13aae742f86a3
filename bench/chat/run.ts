/**
 * Chat benchmark (`npm run bench:chat`): sinal pinned to core 0 with persistence on (sqlite,
 * SQLITE_SYNCHRONOUS=full by default), the load generator pinned to core 1. 1,000 users in rooms
 * of 10 each send messages; first at 1 message/s each (the scenario), then at rising total
 * rates until p99 send-to-receive latency passes 100 ms or the server stops keeping up.
 * Every message is acknowledged only after it is stored; the stored count is checked at the end.
 * Writes bench/results/chat-latest.{json,md} and prints the markdown table.
 */
import { Database } from "bun:sqlite";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { cpuTicks, freePort } from "../lib/proc.ts";

const ROOT = resolve(import.meta.dir, "../..");
const BUN = join(ROOT, "node_modules/.bin/bun");
const USERS = Number(process.env.BENCH_CHAT_USERS ?? 1000);
const ROOM_SIZE = 10;
const RATES = (process.env.BENCH_CHAT_RATES ?? "2000,5000,10000,15000,20000,25000,30000,40000").split(",").map(Number);
const STEP_SEC = Number(process.env.BENCH_CHAT_STEP_SEC ?? 5);
const P99_LIMIT_MS = 100;


const dir = mkdtempSync(join(tmpdir(), "sinal-chat-bench-"));
const port = await freePort();
const secret = randomBytes(32).toString("base64url");
const dbPath = join(dir, "chat.db");
const bunFlags = (process.env.BENCH_CHAT_BUN_FLAGS ?? "").split(" ").filter(Boolean); // e.g. --cpu-prof-md
const server = spawn("taskset", ["-c", "0", BUN, ...bunFlags, "src/main.ts", "serve"], {
  cwd: ROOT,
  env: { PATH: process.env.PATH, JWT_SECRET: secret, PORT: String(port), HOST: "127.0.0.1", DATABASE_URL: `sqlite:${dbPath}`, LOG_LEVEL: "warn", ...(process.env.SQLITE_SYNCHRONOUS ? { SQLITE_SYNCHRONOUS: process.env.SQLITE_SYNCHRONOUS } : {}), ...(process.env.HISTORY_ROOM ? { HISTORY_ROOM: process.env.HISTORY_ROOM } : {}) },
  stdio: ["ignore", "ignore", "inherit"],
});
const cleanup = () => {
  server.kill("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
};
process.on("exit", cleanup);

for (let i = 0; ; i++) {
  try {
    if ((await fetch(`http://127.0.0.1:${port}/health`)).ok) break;
  } catch {}
  if (i > 200) throw new Error("sinal did not start");
  await Bun.sleep(50);
}

const phases = [
  { name: `scenario: ${USERS} users x 1 msg/s`, rate: USERS, seconds: 10 },
  ...RATES.map((rate) => ({ name: `ramp ${rate} msg/s`, rate, seconds: STEP_SEC })),
];
const loadgen = spawn("taskset", ["-c", "1", BUN, "bench/chat/loadgen.ts", JSON.stringify({ url: `ws://127.0.0.1:${port}/ws`, secret, tenant: "bench", users: USERS, roomSize: ROOM_SIZE, phases })], {
  cwd: ROOT,
  stdio: ["ignore", "pipe", "inherit"],
});

interface Phase {
  name: string;
  offered: number;
  sent: number;
  acked: number;
  errors: number;
  delivered: number;
  expected: number;
  achievedMsgsPerSec: number;
  deliveriesPerSec: number;
  p50: number;
  p99: number;
  max: number;
  loadgenCpuPct: number;
  serverCpuPct?: number;
}
const results: Phase[] = [];
let ticks = cpuTicks(server.pid!);
let at = performance.now();
for await (const line of createInterface({ input: loadgen.stdout! })) {
  const msg = JSON.parse(line) as { event: string } & Phase;
  if (msg.event === "ready") {
    ticks = cpuTicks(server.pid!);
    at = performance.now();
    continue;
  }
  const now = performance.now();
  const t = cpuTicks(server.pid!);
  msg.serverCpuPct = (t - ticks) / ((now - at) / 1000); // ticks are 1/100 s, so this is percent of a core
  ticks = t;
  at = now;
  results.push(msg);
  process.stderr.write(`${msg.name}: ${Math.round(msg.achievedMsgsPerSec)} msg/s, p50 ${msg.p50.toFixed(2)} ms, p99 ${msg.p99.toFixed(2)} ms, server ${msg.serverCpuPct.toFixed(0)}% cpu\n`);
  if (msg.name.startsWith("ramp") && (msg.p99 > P99_LIMIT_MS || msg.achievedMsgsPerSec < msg.offered * 0.95)) break;
}
loadgen.kill();
server.kill("SIGTERM");
await new Promise((r) => server.once("exit", r));

const stored = (new Database(dbPath, { readonly: true }).query("select count(*) as n from messages").get() as { n: number }).n;
const acked = results.reduce((s, r) => s + r.acked, 0);
const sustained = results.filter((r) => r.name.startsWith("ramp") && r.p99 <= P99_LIMIT_MS && r.achievedMsgsPerSec >= r.offered * 0.95 && r.delivered === r.expected);
const best = sustained.at(-1);
const fmt = (n: number) => Math.round(n).toLocaleString("en-US");
const md = [
  `### Chat: ${fmt(USERS)} users in rooms of ${ROOM_SIZE}, persistence on (sqlite, synchronous=${process.env.SQLITE_SYNCHRONOUS ?? "full"})`,
  "",
  "| phase | offered msg/s | achieved msg/s | deliveries/s | p50 ms | p99 ms | max ms | acked / sent | delivered / expected | server CPU | load-gen CPU |",
  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
  ...results.map(
    (r) =>
      `| ${r.name} | ${fmt(r.offered)} | ${fmt(r.achievedMsgsPerSec)} | ${fmt(r.deliveriesPerSec)} | ${r.p50.toFixed(2)} | ${r.p99.toFixed(2)} | ${r.max.toFixed(1)} | ${fmt(r.acked)} / ${fmt(r.sent)} | ${fmt(r.delivered)} / ${fmt(r.expected)} | ${r.serverCpuPct!.toFixed(0)}% | ${r.loadgenCpuPct.toFixed(0)}% |`,
  ),
  "",
  `Highest sustained stored-message rate with p99 <= ${P99_LIMIT_MS} ms: **${best ? fmt(best.achievedMsgsPerSec) : "none"} msg/s** (${best ? fmt(best.deliveriesPerSec) : 0} deliveries/s).`,
  `Messages stored: ${fmt(stored)}; acknowledged: ${fmt(acked)} (every acknowledged message is in the database: ${stored >= acked ? "yes" : "NO"}).`,
].join("\n");
mkdirSync(join(ROOT, "bench/results"), { recursive: true });
writeFileSync(join(ROOT, "bench/results/chat-latest.json"), JSON.stringify({ results, stored, acked }, null, 2));
writeFileSync(join(ROOT, "bench/results/chat-latest.md"), md + "\n");
process.stdout.write(md + "\n");
process.exit(0);
