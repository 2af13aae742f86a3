/**
 * Diagnostic, not part of `npm run bench`: runs a server under test in this process and, on
 * SIGUSR2, prints (stderr, one JSON line) its RSS before and after a full garbage collection and
 * the JS heap's largest object counts, to tell live per-connection objects from garbage and
 * native memory. Used to explain the idle-memory figures in BENCHMARKS.md:
 *
 *   PORT=... taskset -c 0 bun bench/tools/memory-probe.ts sinal   (env as for `sinal serve`)
 *   PORT=... taskset -c 0 bun bench/tools/memory-probe.ts bun
 *   kill -USR2 <pid>
 */
import { heapStats } from "bun:jsc";

const which = process.argv[2];
const rssKb = () => Math.round(process.memoryUsage().rss / 1024);

process.on("SIGUSR2", () => {
  const before = rssKb();
  Bun.gc(true);
  const h = heapStats();
  const top = Object.entries(h.objectTypeCounts)
    .sort((a, b) => b[1] - a[1])
    .slice(0, Number(process.env.PROBE_TOP ?? 25));
  process.stderr.write(
    `${JSON.stringify({
      rss_kb_before_gc: before,
      rss_kb_after_gc: rssKb(),
      heap_size_kb: Math.round(h.heapSize / 1024),
      heap_capacity_kb: Math.round(h.heapCapacity / 1024),
      extra_memory_kb: Math.round(h.extraMemorySize / 1024),
      object_count: h.objectCount,
      top_types: Object.fromEntries(top),
    })}\n`,
  );
});

if (which === "sinal") {
  const { loadConfig } = await import("../../src/config.ts");
  const { createLogger } = await import("../../src/log.ts");
  const { serveCommand } = await import("../../src/cli/serve.ts");
  const config = loadConfig();
  await serveCommand(config, createLogger(config.logLevel));
} else if (which === "bun") {
  await import("../servers/bun-bare.ts");
} else {
  process.stderr.write("usage: bun bench/tools/memory-probe.ts sinal|bun\n");
  process.exit(2);
}
