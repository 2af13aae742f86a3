/**
 * Hostile client, finding 2 of issue 10: one API key publishing to ever new channel names.
 *
 *   bun bench/hostile/channels.ts [--root <checkout>] [--channels 500000] [--seconds 7]
 *       [--batch 1000] [--concurrency 8] [--after-seconds 10] [--cap-mib 2048]
 *
 * `--concurrency` requests at a time POST `/v1/publish` with batches of `--batch` items, each to a
 * channel `dept:<run>-<n>` never used before (~60-byte items, `data: {"n": <n>}`), as fast as the
 * server answers, until `--channels` channels were sent or `--seconds` passed. The concurrency
 * stays under REST_MAX_CONCURRENT_PER_CLIENT (32), so a server with that limit measures its
 * channel bound, not its request limit. VmRSS is read before, sampled every 250 ms, read right
 * after the last answer and `--after-seconds` later; `/v1/stats` gives the node's channel count.
 *
 * Prints one summary line; bench/results/hostile-channels-latest.json has every sample.
 */
import { randomBytes } from "node:crypto";
import { loadavg } from "../lib/proc.ts";
import { cli, commitOf, guard, mib, publish, report, RssSampler, startTarget } from "./lib.ts";

const { root, opts } = cli({ channels: 500_000, seconds: 7, batch: 1000, concurrency: 8, "after-seconds": 10, "cap-mib": 2048 });
guard(60 + opts.seconds * 3 + opts["after-seconds"]);
const log = (s: string) => process.stderr.write(`[channels] ${s}\n`);

log(`starting sinal from ${root} (${commitOf(root)})`);
const target = await startTarget(root);
const load = loadavg();
await Bun.sleep(1000);
const t0 = performance.now();
const sampler = new RssSampler(target, t0, 250, opts["cap-mib"] * 1024);
const beforeKb = sampler.samples[0]!.kb;

const run = randomBytes(4).toString("hex");
let next = 0;
let accepted = 0;
const statuses: Record<string, number> = {};
const deadline = t0 + opts.seconds * 1000;
const body = (from: number, n: number) => {
  const items: string[] = [];
  for (let i = from; i < from + n; i++) items.push(`{"channel":"dept:${run}-${i.toString(36)}","event":"e","data":{"n":${i}}}`);
  return `[${items.join(",")}]`;
};
const worker = async () => {
  while (next < opts.channels && performance.now() < deadline && sampler.capped === null) {
    const n = Math.min(opts.batch, opts.channels - next);
    const from = next;
    next += n;
    const res = await publish(target, body(from, n));
    const key = res.code ? `${res.status} ${res.code}` : String(res.status);
    statuses[key] = (statuses[key] ?? 0) + 1;
    if (res.status === 200) accepted += n;
  }
};
let lastLog = performance.now();
const progress = setInterval(() => {
  if (performance.now() - lastLog < 1000) return;
  lastLog = performance.now();
  log(`t=${((lastLog - t0) / 1000).toFixed(1)} s: ${accepted} channels accepted, RSS ${mib(sampler.samples.at(-1)!.kb)} MiB`);
}, 250);
await Promise.all(Array.from({ length: opts.concurrency }, worker));
clearInterval(progress);
const attackSec = (performance.now() - t0) / 1000;
const afterKb = sampler.sample();
log(`${accepted} channels in ${attackSec.toFixed(1)} s; RSS ${mib(afterKb)} MiB; waiting ${opts["after-seconds"]} s`);
await Bun.sleep(opts["after-seconds"] * 1000);
sampler.stop();
const laterKb = sampler.sample();
let nodeChannels: number | null = null;
if (sampler.capped === null) {
  try {
    const res = await fetch(`${target.base}/v1/stats`, { headers: { authorization: `Bearer ${target.apiKey}` }, signal: AbortSignal.timeout(5000) });
    nodeChannels = ((await res.json()) as { node?: { channels?: number } }).node?.channels ?? null;
  } catch {}
}
const alive = sampler.capped === null && (await fetch(`${target.base}/health`, { signal: AbortSignal.timeout(2000) }).then((r) => r.ok, () => false));

const perChannel = accepted > 0 ? ((afterKb - beforeKb) * 1024) / accepted : Number.NaN;
const line =
  `hostile channels | ${target.commit} | ${accepted.toLocaleString("en-US")} new channels accepted in ${attackSec.toFixed(1)} s ` +
  `(${Math.round(accepted / attackSec).toLocaleString("en-US")}/s; answers ${Object.entries(statuses).map(([k, v]) => `${k}: ${v}`).join(", ")}) | ` +
  `RSS before ${mib(beforeKb)} MiB, peak ${mib(sampler.peakKb)} MiB, right after ${mib(afterKb)} MiB (+${mib(afterKb - beforeKb)} MiB, ${Number.isFinite(perChannel) ? perChannel.toFixed(0) : "n/a"} B per channel), ` +
  `${opts["after-seconds"]} s later ${mib(laterKb)} MiB | /v1/stats node.channels ${nodeChannels ?? "n/a"} | ` +
  `${sampler.capped ? `server killed at the cap at ${(sampler.capped.ms / 1000).toFixed(1)} s` : `server ${alive ? "alive" : "DOWN"}`}`;
report("hostile-channels", line, {
  commit: target.commit,
  root,
  opts,
  loadavg_before: load,
  accepted,
  seconds: attackSec,
  statuses,
  rss_kb: { before: beforeKb, peak: sampler.peakKb, after: afterKb, later: laterKb },
  node_channels: nodeChannels,
  capped: sampler.capped,
  alive,
  samples: sampler.samples,
});
process.exit(0);
