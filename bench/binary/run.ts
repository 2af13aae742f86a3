/**
 * The shipped executable (`bun bench/binary/run.ts`): size on disk, start-up time to the first
 * `/health` 200, and RSS at idle one second later, for `dist/sinal` (built here with `npm run
 * build`'s command) side by side with a reference built the same way in the same run: a bare
 * compiled Bun server answering /health (what any Bun executable costs). Each binary starts from
 * an empty directory with a cleared environment (sinal in dev mode on a fresh sqlite file).
 * Writes bench/results/binary-latest.json and prints a markdown table.
 */
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BUN, freePort, ROOT } from "../lib/proc.ts";
import { median } from "../lib/report.ts";

const RUNS = Number(process.env.BENCH_BINARY_RUNS ?? 7);
const FLAGS = ["--compile", "--bytecode", "--format=esm", "--minify", "--sourcemap"];

const work = mkdtempSync(join(tmpdir(), "sinal-binary-bench-"));
const reference = join(work, "reference.ts");
writeFileSync(reference, `Bun.serve({ port: Number(process.env.PORT), hostname: "127.0.0.1", fetch: () => new Response("ok") });\n`);

function build(entry: string, out: string): void {
  const result = Bun.spawnSync([BUN, "build", entry, ...FLAGS, "--outfile", out], { cwd: ROOT, stdout: "ignore", stderr: "pipe" });
  if (result.exitCode !== 0) throw new Error(`build of ${entry} failed: ${result.stderr}`);
}

function rssKb(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]);
}

async function startOnce(binary: string): Promise<{ startupMs: number; idleRssKb: number }> {
  const dir = mkdtempSync(join(work, "run-"));
  const port = await freePort();
  const started = performance.now();
  const proc = Bun.spawn([binary, "serve"], { cwd: dir, env: { PORT: String(port), HOST: "127.0.0.1", LOG_LEVEL: "warn" }, stdout: "ignore", stderr: "ignore" });
  try {
    for (;;) {
      const res = await fetch(`http://127.0.0.1:${port}/health`).catch(() => null);
      if (res?.status === 200) break;
      if (performance.now() - started > 10_000) throw new Error(`${binary}: no /health 200 within 10 s`);
      await Bun.sleep(1);
    }
    const startupMs = performance.now() - started;
    await Bun.sleep(1000);
    return { startupMs, idleRssKb: rssKb(proc.pid) };
  } finally {
    proc.kill("SIGTERM");
    await proc.exited;
    rmSync(dir, { recursive: true, force: true });
  }
}


const sinalBin = join(work, "sinal");
const refBin = join(work, "reference");
build("src/main.ts", sinalBin);
build(reference, refBin);
const results: Record<string, { sizeMb: number; startupMs: number[]; idleRssMb: number[] }> = {
  sinal: { sizeMb: statSync(sinalBin).size / 1e6, startupMs: [], idleRssMb: [] },
  "bare Bun server": { sizeMb: statSync(refBin).size / 1e6, startupMs: [], idleRssMb: [] },
};
// Alternating, so both see the same machine.
for (let i = 0; i < RUNS; i++) {
  for (const [name, bin] of [["sinal", sinalBin], ["bare Bun server", refBin]] as const) {
    const { startupMs, idleRssKb } = await startOnce(bin);
    results[name]!.startupMs.push(startupMs);
    results[name]!.idleRssMb.push(idleRssKb / 1024);
  }
}
rmSync(work, { recursive: true, force: true });

const s = results.sinal!;
const r = results["bare Bun server"]!;
const rows = [
  ["size on disk (MB)", s.sizeMb, r.sizeMb],
  [`start-up to first /health 200 (ms, median of ${RUNS})`, median(s.startupMs), median(r.startupMs)],
  [`RSS at idle, 1 s after start (MB, median of ${RUNS})`, median(s.idleRssMb), median(r.idleRssMb)],
] as const;
const table = [
  "| | sinal | bare Bun server | ratio |",
  "| --- | ---: | ---: | ---: |",
  ...rows.map(([what, a, b]) => `| ${what} | ${a.toFixed(1)} | ${b.toFixed(1)} | ${(a / b).toFixed(2)}x |`),
].join("\n");
mkdirSync(join(ROOT, "bench/results"), { recursive: true });
writeFileSync(join(ROOT, "bench/results/binary-latest.json"), JSON.stringify({ at: new Date().toISOString(), runs: RUNS, results }, null, 2));
process.stdout.write(`${table}\n\nstart-up ms, sinal: ${s.startupMs.map((x) => x.toFixed(0)).join(", ")}\n`);
