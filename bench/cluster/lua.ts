/**
 * The Redis side of a publication alone (bench/cluster/run.ts, part 2): the append script of
 * src/history/redis-history.ts (defined on the connection by RedisHistory itself, so the script is
 * the one sinal runs) called straight through ioredis, with the arguments RedisHistory.append
 * passes, `inflight` calls outstanding at a time over `channels` topics. Modes:
 *   script          EVALSHA of the append script only, publishing nothing;
 *   script+publish  that plus a separate PUBLISH of the broker's envelope (two round trips, what a
 *                   node sent per publication before the script published itself);
 *   script-publish  the script PUBLISHing the envelope itself, what a node sends per publication;
 *   append          RedisHistory.append as a node calls it (its JS: frame template, keys, envelope, reply);
 * One JSON line on stdout per mode: calls per second over `seconds`.
 *
 *   bun bench/cluster/lua.ts '{"url":"redis://127.0.0.1:6379","modes":["script"],...}'
 */
import Redis from "ioredis";
import { RedisHistory } from "../../src/history/redis-history.ts";
import { randomEpoch, type DeliveredPositions, type Position } from "../../src/history/history.ts";
import { RedisKeys } from "../../src/redis/keys.ts";

interface LuaConfig {
  url: string;
  modes: ("script" | "script+publish" | "script-publish" | "append")[];
  inflight: number;
  channels: number;
  payloadBytes: number;
  warmupSec: number;
  seconds: number;
}

const cfg = JSON.parse(process.argv[2] ?? "{}") as LuaConfig;
// As src/redis/redis-client.ts connects the commands connection.
const redis = new Redis(cfg.url, { enableAutoPipelining: true, enableOfflineQueue: true, maxRetriesPerRequest: 0 });
const keys = new RedisKeys("luabench");
const positions: DeliveredPositions = {
  get: () => undefined,
  ready: async () => undefined,
  seed: (_t, p) => p,
  reset: (_t, p) => p,
};
// The broker's envelope (RedisBroker.envelope) for a node id of a node's length.
const nodeId = crypto.randomUUID();
const peers = { envelope: (topic: string) => ({ channel: keys.topicChannel(topic), head: `${nodeId}\n\n` }) };
// maxTopicsPerTenant, metaTtlMs and the key TTL as src/app.ts sets them by default.
const history = new RedisHistory(redis, keys, positions, { maxTopicsPerTenant: 20_000, metaTtlMs: 7 * 86_400_000, idempotencyTtlMs: 86_400_000, peers });
type Append = (...args: (string | number)[]) => Promise<[number, string, number]>;
const scripts = redis as unknown as { sinalAppend: Append };

const padding = "x".repeat(cfg.payloadBytes);
const retention = { size: 20, ttlMs: 120_000 }; // roulette's "20,2m", the channels part 2 publishes to
const topicOf = (i: number) => `bench/roulette:c${i % cfg.channels}`;
const build = (topic: string) => (p: Position) =>
  `{"type":"pub","channel":"${topic.slice(6)}","event":"tick","data":{"p":"${padding}"},"from":{"user":"publisher0","client":"c0"},"offset":${p.offset},"epoch":"${p.epoch}","ts":${Date.now()}}`;
const head = build("bench/roulette:c0")({ epoch: "\u0001", offset: 0 }).split('0,"epoch"')[0]!;
const tail = `,"ts":${Date.now()}}`;

function callScript(topic: string, publish: boolean, script: Append = scripts.sinalAppend.bind(redis)): Promise<[number, string, number]> {
  const tenant = "bench";
  const envelope = publish ? peers.envelope(topic) : { channel: "", head: "" };
  return script(
    keys.tenant(tenant, "meta", topic),
    keys.tenant(tenant, "stream", topic),
    keys.tenant(tenant, "topics"),
    keys.tenant(tenant, "nokey"),
    head,
    tail,
    retention.size,
    retention.ttlMs,
    7 * 86_400_000,
    randomEpoch(),
    Date.now(),
    topic,
    20_000,
    0,
    envelope.channel,
    envelope.head,
  );
}

async function one(mode: LuaConfig["modes"][number], i: number): Promise<void> {
  const topic = topicOf(i);
  if (mode === "append") {
    // The script sent it to the other nodes (`sent`): nothing left to publish here.
    await history.append(topic, build(topic), retention, () => undefined);
    return;
  }
  const [offset, epoch] = await callScript(topic, mode === "script-publish");
  if (mode === "script+publish") redis.publish(keys.topicChannel(topic), `${nodeId}\n\n${epoch}\n${offset}\n${head}${offset}${tail}`).catch(() => undefined);
}

async function run(mode: LuaConfig["modes"][number], seconds: number): Promise<number> {
  let done = 0;
  let next = 0;
  const until = performance.now() + seconds * 1000;
  const worker = async () => {
    while (performance.now() < until) {
      await one(mode, next++);
      done++;
    }
  };
  await Promise.all(Array.from({ length: cfg.inflight }, worker));
  return done;
}

for (const mode of cfg.modes) {
  await run(mode, cfg.warmupSec);
  process.stdout.write(`${JSON.stringify({ event: "measuring", mode })}\n`);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const done = await run(mode, cfg.seconds);
  const elapsed = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  process.stdout.write(
    `${JSON.stringify({ event: "result", mode, inflight: cfg.inflight, channels: cfg.channels, calls: done, calls_per_sec: Math.round(done / elapsed), client_cpu_pct: Math.round(((cpu.user + cpu.system) / 1e6 / elapsed) * 1000) / 10 })}\n`,
  );
}
redis.disconnect();
process.exit(0);
