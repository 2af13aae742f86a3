import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Client, post, startServer, type TestServer } from "./helpers.ts";

const ROOT = resolve(import.meta.dir, "..");
const BUN = join(ROOT, "node_modules/.bin/bun");

let server: TestServer;
let dir: string;

beforeAll(async () => {
  server = await startServer();
  dir = mkdtempSync(join(tmpdir(), "sinal-assets-"));
});
afterAll(async () => {
  await server.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe("the page and the SDK, served with no credential", () => {
  test("/client.js is the JS SDK as one ES module, with an ETag that answers 304", async () => {
    const res = await fetch(`${server.http}/client.js`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/javascript; charset=utf-8");
    expect(res.headers.get("cache-control")).toBe("no-cache");
    const body = await res.text();
    expect(body).toContain("class SinalClient");
    expect(body).toMatch(/export\s*\{[^}]*SinalClient/);
    expect(body).not.toMatch(/^\s*import\s/m); // one file: nothing left to fetch

    const etag = res.headers.get("etag")!;
    expect(etag).toMatch(/^"[0-9a-z]+"$/);
    const again = await fetch(`${server.http}/client.js`, { headers: { "if-none-match": etag } });
    expect(again.status).toBe(304);
    expect(await again.text()).toBe("");
    expect((await fetch(`${server.http}/client.js`, { headers: { "if-none-match": '"other"' } })).status).toBe(200);
  });

  test("the served SDK connects, subscribes and receives a publication", async () => {
    const file = join(dir, "client.mjs");
    await Bun.write(file, await (await fetch(`${server.http}/client.js`)).text());
    const { SinalClient } = await import(file);
    const client = new SinalClient({ url: server.ws, token: await server.token({ user: "sdk", subChannels: ["*"] }) });
    const sub = client.subscribe("roulette:sdk-1");
    const first = new Promise<any>((resolve) => sub.on("publication", resolve));
    await client.connect();
    await sub.ready;
    expect((await post(server, "/v1/publish", { channel: "roulette:sdk-1", event: "roulette_update", data: { number: 5 } }, await server.apiKey("acme"))).status).toBe(200);
    expect(await first).toMatchObject({ channel: "roulette:sdk-1", event: "roulette_update", data: { number: 5 }, offset: 1 });
    client.close();
  });

  test("/ is the page: HTML that loads its module and styles from this server only", async () => {
    const res = await fetch(`${server.http}/`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/html; charset=utf-8");
    expect(res.headers.get("etag")).toMatch(/^"[0-9a-z]+"$/);
    const csp = res.headers.get("content-security-policy")!;
    expect(csp).toContain("default-src 'self'");
    expect(csp).toContain("frame-ancestors 'none'");
    expect(res.headers.get("referrer-policy")).toBe("no-referrer");
    const html = await res.text();
    expect(html).toStartWith("<!doctype html>");
    expect(html).toContain('<script type="module" src="/web/app.js"></script>');
    expect(html).toContain('href="/web/style.css"');
    expect(html).not.toMatch(/(src|href)="https?:/); // no CDN: this machine and its users may be offline

    const app = await fetch(`${server.http}/web/app.js`);
    expect(app.headers.get("content-type")).toBe("text/javascript; charset=utf-8");
    expect(await app.text()).toContain('from "/client.js"');
    const css = await fetch(`${server.http}/web/style.css`);
    expect(css.headers.get("content-type")).toBe("text/css; charset=utf-8");
    expect(await css.text()).toContain(".board");
    expect((await fetch(`${server.http}/web/nope.js`)).status).toBe(404);
  });
});

describe("compiled binary in dev mode", () => {
  test("serves the same page and SDK with no source beside it, prints a ready link, the demo roulettes move, and its token command signs for it", async () => {
    const binary = join(dir, "bin", "sinal");
    // Built from the temp dir: bun build --compile leaves its scratch files in the working directory.
    const build = Bun.spawnSync([BUN, "build", join(ROOT, "src/main.ts"), "--compile", "--outfile", binary], { cwd: dir, stdout: "pipe", stderr: "pipe" });
    expect(build.exitCode).toBe(0);

    const workdir = join(dir, "elsewhere");
    await Bun.write(join(workdir, ".keep"), "");
    const proc = Bun.spawn([binary, "serve"], {
      cwd: workdir,
      env: { PATH: process.env.PATH ?? "", PORT: "0", HOST: "127.0.0.1", DATABASE_URL: `sqlite:${join(workdir, "s.db")}` },
      stdout: "ignore",
      stderr: "pipe",
    });
    try {
      const banner = await readUntil(proc.stderr, /live demo page[^\n]*?(http:\/\/\S+)\n/);
      const link = new URL(banner[1]!);
      expect(link.hostname).toBe("127.0.0.1");
      const token = new URLSearchParams(link.hash.slice(1)).get("token")!;
      const origin = link.origin;

      for (const path of ["/", "/client.js", "/web/app.js"]) {
        const [compiled, source] = await Promise.all([fetch(`${origin}${path}`), fetch(`${server.http}${path}`)]);
        expect(compiled.status).toBe(200);
        expect(compiled.headers.get("etag")).toBe(source.headers.get("etag"));
      }

      // The demo token is an admin of tenant demo: it may read the stats.
      const stats = await fetch(`${origin}/v1/dashboard`, { headers: { authorization: `Bearer ${token}` } });
      expect(stats.status).toBe(200);
      expect(((await stats.json()) as any).tenant).toBe("demo");

      // The demo feed spins roulette:demo-1 every ~2 s without any scraper.
      const { client, welcome } = await Client.connect(`ws://${link.host}/ws?token=${token}`);
      expect(welcome).toMatchObject({ tenant: "demo", user: "demo" });
      expect(await client.request({ type: "subscribe", channel: "roulette:demo-1" })).toMatchObject({ ok: true });
      const spin = await client.next(5000);
      expect(spin).toMatchObject({ channel: "roulette:demo-1", event: "roulette_update", data: { roulette_id: "demo-1" } });
      expect(spin.data.number).toBeGreaterThanOrEqual(0);
      expect(spin.data.number).toBeLessThanOrEqual(36);
      client.close();

      // `sinal token` of the binary, without JWT_SECRET, signs with the dev secret its server keeps.
      const minted = Bun.spawnSync([binary, "token", "--tenant", "demo", "--user", "demo3"], {
        cwd: workdir,
        env: { PATH: process.env.PATH ?? "", DATABASE_URL: `sqlite:${join(workdir, "s.db")}` },
        stdout: "pipe",
        stderr: "pipe",
      });
      expect(minted.exitCode).toBe(0);
      expect(minted.stderr.toString()).toContain(`dev-mode secret in ${join(workdir, "dev-secret")}`);
      const third = await Client.connect(`ws://${link.host}/ws?token=${minted.stdout.toString().trim()}`);
      expect(third.welcome).toMatchObject({ tenant: "demo", user: "demo3" });
      third.client.close();
    } finally {
      proc.kill("SIGTERM");
    }
    expect(await proc.exited).toBe(0);
  }, 30_000);
});

/** Reads a child's stream until `pattern` matches what was read so far. */
async function readUntil(stream: ReadableStream<Uint8Array>, pattern: RegExp, ms = 10_000): Promise<RegExpMatchArray> {
  const reader = stream.getReader();
  const decoder = new TextDecoder();
  let text = "";
  const deadline = setTimeout(() => reader.cancel(), ms);
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`stream ended before ${pattern}: ${text}`);
      text += decoder.decode(value, { stream: true });
      const match = text.match(pattern);
      if (match) return match;
    }
  } finally {
    clearTimeout(deadline);
    reader.releaseLock();
  }
}
