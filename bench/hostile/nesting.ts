/**
 * Hostile client, finding 3 of issue 10: a REST body nested millions of levels deep.
 *
 *   bun bench/hostile/nesting.ts [--root <checkout>] [--depth 3000000] [--times 3]
 *       [--after-seconds 10] [--cap-mib 2048]
 *
 * POSTs `/v1/publish` `--times` times, one after the other, with the API key of the tenant and
 * `{"channel":"dept:deep","event":"e","data":[[[...]]]}`, `--depth` arrays deep (2 bytes a level:
 * ~6 MB at the default depth, under MAX_BODY_BYTES). Reports each answer's status, error code and
 * time, and VmRSS before, sampled every 250 ms (peak), after the last answer and `--after-seconds`
 * later.
 *
 * Prints one summary line; bench/results/hostile-nesting-latest.json has every sample.
 */
import { loadavg } from "../lib/proc.ts";
import { cli, commitOf, guard, mib, publish, report, RssSampler, startTarget } from "./lib.ts";

const { root, opts } = cli({ depth: 3_000_000, times: 3, "after-seconds": 10, "cap-mib": 2048 });
guard(60 + opts.times * 60 + opts["after-seconds"]);
const log = (s: string) => process.stderr.write(`[nesting] ${s}\n`);

log(`starting sinal from ${root} (${commitOf(root)})`);
const target = await startTarget(root);
const load = loadavg();
const body = `{"channel":"dept:deep","event":"e","data":${"[".repeat(opts.depth)}${"]".repeat(opts.depth)}}`;
await Bun.sleep(1000);
const t0 = performance.now();
const sampler = new RssSampler(target, t0, 250, opts["cap-mib"] * 1024);
const beforeKb = sampler.samples[0]!.kb;

const answers: { status: number; code?: string; ms: number; rss_after_kb: number }[] = [];
for (let i = 0; i < opts.times && sampler.capped === null; i++) {
  const res = await publish(target, body, target.apiKey, 60_000);
  answers.push({ ...res, rss_after_kb: sampler.sample() });
  log(`request ${i + 1}: ${res.status} ${res.code ?? ""} in ${res.ms.toFixed(0)} ms; RSS ${mib(answers.at(-1)!.rss_after_kb)} MiB`);
}
const afterKb = sampler.sample();
await Bun.sleep(opts["after-seconds"] * 1000);
sampler.stop();
const laterKb = sampler.sample();
const alive = sampler.capped === null && (await fetch(`${target.base}/health`, { signal: AbortSignal.timeout(2000) }).then((r) => r.ok, () => false));

const line =
  `hostile nesting | ${target.commit} | ${answers.length} x POST /v1/publish, ${opts.depth.toLocaleString("en-US")} levels (${(body.length / 1e6).toFixed(1)} MB) | ` +
  `answers ${answers.map((a) => `${a.status}${a.code ? ` ${a.code}` : ""} (${(a.ms / 1000).toFixed(2)} s)`).join(", ")} | ` +
  `RSS before ${mib(beforeKb)} MiB, peak ${mib(sampler.peakKb)} MiB, after ${mib(afterKb)} MiB, ${opts["after-seconds"]} s later ${mib(laterKb)} MiB | ` +
  `${sampler.capped ? `server killed at the cap at ${(sampler.capped.ms / 1000).toFixed(1)} s` : `server ${alive ? "alive" : "DOWN"}`}`;
report("hostile-nesting", line, {
  commit: target.commit,
  root,
  opts,
  loadavg_before: load,
  body_bytes: body.length,
  answers,
  rss_kb: { before: beforeKb, peak: sampler.peakKb, after: afterKb, later: laterKb },
  capped: sampler.capped,
  alive,
  // what the server logged (LOG_LEVEL=warn): the cause of a 500
  server_log: target.out.join("").slice(0, 4000),
  samples: sampler.samples,
});
process.exit(0);
