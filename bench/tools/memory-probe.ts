/**
 * Diagnostic, not part of `npm run bench`: runs a server under test in this process and, on
 * SIGUSR2, prints (stderr, one JSON line) its RSS before and after a full garbage collection and
 * the JS heap's largest object counts, to tell live per-connection objects from garbage and
 * native memory. Used to explain the idle-memory figures in BENCHMARKS.md:
 *
 *   PORT=... taskset -c 0 bun bench/tools/memory-probe.ts sinal   (env as for `sinal serve`)
 *   PORT=... taskset -c 0 bun bench/tools/memory-probe.ts bun
 *   PORT=... VARIANT=jwt,topic taskset -c 0 bun bench/tools/memory-probe.ts minimal
 *   kill -USR2 <pid>
 *
 * `minimal` is a bare Bun.serve that speaks just enough of sinal's protocol for the load
 * generator's sinal target (a welcome frame), plus the pieces of sinal's per-connection work named
 * in VARIANT: `jwt` (verify the ?token= HS256 JWT with jose, keep its claims on ws.data) and
 * `topic` (subscribe the socket to its own `<tenant>/user:<sub>` topic). bench/tools/memory-breakdown.sh runs them all.
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
} else if (which === "minimal") {
  const { jwtVerify } = await import("jose");
  const variant = new Set((process.env.VARIANT ?? "").split(",").filter(Boolean));
  const key = new TextEncoder().encode(process.env.JWT_SECRET ?? "");
  let n = 0;
  type Data = { user: string; tenant: string; claims?: unknown };
  const server = Bun.serve<Data, never>({
    hostname: "127.0.0.1",
    port: Number(process.env.PORT ?? 0),
    async fetch(req, server) {
      let data: Data = { user: `anon${n++}`, tenant: "bench" };
      if (variant.has("jwt")) {
        const token = new URL(req.url).searchParams.get("token") ?? "";
        try {
          const { payload } = await jwtVerify(token, key, { algorithms: ["HS256"] });
          data = { user: String(payload.sub), tenant: String(payload.tid), claims: payload };
        } catch {
          return new Response("unauthorized", { status: 401 });
        }
      }
      if (server.upgrade(req, { data })) return undefined;
      return new Response("expected a WebSocket upgrade", { status: 400 });
    },
    websocket: {
      open(ws) {
        if (variant.has("topic")) ws.subscribe(`${ws.data.tenant}/user:${ws.data.user}`);
        ws.send(JSON.stringify({ type: "welcome", client: String(n), user: ws.data.user, tenant: ws.data.tenant }));
      },
      message() {},
    },
  });
  process.stdout.write(`${JSON.stringify({ msg: "listening", port: server.port, variant: [...variant] })}\n`);
} else {
  process.stderr.write("usage: bun bench/tools/memory-probe.ts sinal|bun|minimal\n");
  process.exit(2);
}
