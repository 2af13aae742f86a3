import { Database } from "bun:sqlite";
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import pkg from "../package.json" with { type: "json" };
import { Client, post, SECRET, startServer, type TestServer } from "./helpers.ts";

const ROOT = resolve(import.meta.dir, "..");
const BUN = join(ROOT, "node_modules/.bin/bun");
const MAIN = join(ROOT, "src/main.ts");

let dir: string;
let dbPath: string;
const cleanups: (() => unknown)[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "sinal-cli-"));
  dbPath = join(dir, "sinal.db");
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  rmSync(dir, { recursive: true, force: true });
});

/** The environment of a CLI run: only what is given (nothing leaks in from the test runner's env). */
function cliEnv(env: Record<string, string | undefined> = {}): Record<string, string> {
  const base: Record<string, string | undefined> = { PATH: process.env.PATH, JWT_SECRET: SECRET, DATABASE_URL: `sqlite:${dbPath}`, ...env };
  return Object.fromEntries(Object.entries(base).filter((e): e is [string, string] => e[1] !== undefined));
}

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion; `undefined` in env removes a variable. */
async function run(cmd: string[], env: Record<string, string | undefined> = {}, cwd = ROOT): Promise<Run> {
  const proc = Bun.spawn(cmd, { cwd, env: cliEnv(env), stdout: "pipe", stderr: "pipe", timeout: 30_000 });
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return { code, stdout, stderr };
}

const sinal = (args: string[], env: Record<string, string | undefined> = {}) => run([BUN, MAIN, ...args], env);

const lastLine = (text: string) => text.trimEnd().split("\n").at(-1)!;

/** `--version` output: the package version and the commit it was built from (this checkout's HEAD). */
const COMMIT = Bun.spawnSync(["git", "rev-parse", "--short=12", "HEAD"], { cwd: ROOT }).stdout.toString().trim();
const VERSION_LINE = `sinal ${pkg.version} (commit ${COMMIT})\n`;

/** A `serve` process whose JSON log lines on stdout are parsed as they arrive. */
class Served {
  readonly lines: Record<string, any>[] = [];
  readonly stderr: Promise<string>;
  private ended = false;
  private waiters: (() => void)[] = [];

  constructor(readonly proc: Bun.Subprocess<"ignore", "pipe", "pipe">) {
    this.stderr = new Response(proc.stderr).text();
    void this.read();
  }

  private async read(): Promise<void> {
    const decoder = new TextDecoder();
    let buffered = "";
    for await (const chunk of this.proc.stdout) {
      buffered += decoder.decode(chunk, { stream: true });
      let newline: number;
      while ((newline = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        if (line.trim() !== "") this.lines.push(JSON.parse(line));
      }
      this.wake();
    }
    this.ended = true;
    this.wake();
  }

  private wake(): void {
    for (const waiter of this.waiters.splice(0)) waiter();
  }

  /** The first log line matching `predicate`, waiting for it up to `ms`. */
  async line(predicate: (line: Record<string, any>) => boolean, ms = 10_000): Promise<Record<string, any>> {
    const deadline = Date.now() + ms;
    for (;;) {
      const found = this.lines.find(predicate);
      if (found) return found;
      if (this.ended) throw new Error(`stdout ended without that line; stderr: ${await this.stderr}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no matching log line within ${ms} ms; got ${JSON.stringify(this.lines)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }
}

/** Starts `sinal serve` on a free port and waits for its "listening" line. */
async function serve(env: Record<string, string | undefined> = {}): Promise<{ served: Served; port: number; http: string; ws: string }> {
  const proc = Bun.spawn([BUN, MAIN, "serve"], {
    cwd: ROOT,
    env: cliEnv({ PORT: "0", HOST: "127.0.0.1", ...env }),
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  cleanups.push(async () => {
    if (proc.exitCode === null) proc.kill("SIGKILL");
    await proc.exited;
  });
  const served = new Served(proc);
  const listening = await served.line((l) => l.msg === "listening");
  const port = listening.port as number;
  return { served, port, http: `http://127.0.0.1:${port}`, ws: `ws://127.0.0.1:${port}/ws` };
}

/** startServer on this test's sqlite file, stopped after the test. */
async function serverOnSameFile(): Promise<TestServer> {
  const server = await startServer({ DATABASE_URL: `sqlite:${dbPath}` });
  cleanups.push(() => server.stop());
  return server;
}

describe("help and version", () => {
  test("--help prints the commands and exits 0", async () => {
    const { code, stdout, stderr } = await sinal(["--help"]);
    expect({ code, stderr }).toEqual({ code: 0, stderr: "" });
    for (const command of ["serve", "migrate", "keys create --tenant", "token --tenant"]) expect(stdout).toContain(command);
  });

  test("--version prints the package version and the git commit, and exits 0", async () => {
    expect(await sinal(["--version"])).toEqual({ code: 0, stdout: VERSION_LINE, stderr: "" });
  });

  test("--help needs no configuration, even a bad one", async () => {
    const { code } = await sinal(["--help"], { PORT: "abc", JWT_SECRET: "short" });
    expect(code).toBe(0);
  });

  for (const command of ["serve", "migrate", "keys", "token", "health"]) {
    test(`${command} --help prints that command's usage and exits 0, with no configuration read`, async () => {
      const { code, stdout, stderr } = await sinal([command, "--help"], { PORT: "abc" });
      expect({ code, stderr }).toEqual({ code: 0, stderr: "" });
      expect(stdout).toStartWith(`Usage: sinal ${command}`);
    });
  }

  test("token --help lists every option the command takes", async () => {
    const { stdout } = await sinal(["token", "--help"]);
    for (const option of ["--tenant", "--user", "--ttl", "--name", "--sub-channels", "--pub-channels", "--roles", "--channel"]) expect(stdout).toContain(option);
  });

  test("-h after a subcommand's options is help too", async () => {
    const { code, stdout } = await sinal(["keys", "create", "--tenant", "acme", "-h"]);
    expect(code).toBe(0);
    expect(stdout).toStartWith("Usage: sinal keys create");
  });

  test("a command without options refuses an argument instead of ignoring it", async () => {
    const { code, stdout, stderr } = await sinal(["serve", "--port", "4000"]);
    expect(code).toBe(1);
    expect(stderr).toBe('sinal: arguments: sinal serve takes no arguments, got "--port"; see sinal serve --help\n');
    expect(stdout).toBe("");
  });

  test("an unknown command exits 1 pointing to --help", async () => {
    const { code, stderr } = await sinal(["frobnicate"]);
    expect(code).toBe(1);
    expect(stderr).toContain("--help");
  });

  test("an unknown option exits 1 naming it", async () => {
    const { code, stderr } = await sinal(["keys", "create", "--tenant", "acme", "--colour", "blue"]);
    expect(code).toBe(1);
    expect(stderr).toContain("--colour");
  });
});

describe("migrate", () => {
  test("creates the schema in the configured file and exits 0", async () => {
    const { code, stdout } = await sinal(["migrate"]);
    expect(code).toBe(0);
    expect(stdout).toContain("up to date");
    const db = new Database(dbPath, { readonly: true });
    const tables = db.query<{ name: string }, []>("SELECT name FROM sqlite_master WHERE type = 'table'").all().map((r) => r.name);
    db.close();
    expect(tables).toEqual(expect.arrayContaining(["api_keys", "idempotency"]));
  });

  test("running it twice is harmless", async () => {
    expect((await sinal(["migrate"])).code).toBe(0);
    expect((await sinal(["migrate"])).code).toBe(0);
  });
});

describe("keys", () => {
  test("keys create prints the key alone on its last line, and that key publishes through a server on the same file", async () => {
    const created = await sinal(["keys", "create", "--tenant", "acme"]);
    expect(created.code).toBe(0);
    const key = lastLine(created.stdout);
    expect(key).toMatch(/^sk_[0-9a-f]{16}_[A-Za-z0-9_-]{20,}$/);

    const server = await serverOnSameFile();
    const client = await Client.open(server, { tenant: "acme", subChannels: ["dept:*"] });
    cleanups.push(() => client.close());
    const sub = await client.request({ type: "subscribe", channel: "dept:1" });
    const res = await post(server, "/v1/publish", { channel: "dept:1", event: "tick", data: "via cli key" }, key);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ offset: 1, epoch: sub.epoch });
    expect(await client.next()).toMatchObject({ type: "pub", channel: "dept:1", data: "via cli key", offset: 1 });
  });

  test("keys list shows the ids of a tenant's keys and never their secrets", async () => {
    const key = lastLine((await sinal(["keys", "create", "--tenant", "acme"])).stdout);
    const id = key.split("_")[1]!;
    const { code, stdout } = await sinal(["keys", "list", "--tenant", "acme"]);
    expect(code).toBe(0);
    expect(stdout).toContain(id);
    expect(stdout).toContain("active");
    expect(stdout).not.toContain(key.slice(`sk_${id}_`.length));
    expect((await sinal(["keys", "list", "--tenant", "globex"])).stdout).toBe("");
  });

  test("keys revoke --id makes the key answer 401 on a running server", async () => {
    const key = lastLine((await sinal(["keys", "create", "--tenant", "acme"])).stdout);
    const id = /^sk_([0-9a-f]{16})_/.exec(key)![1]!;
    const server = await serverOnSameFile();
    const item = { channel: "dept:1", event: "tick", data: 1 };
    expect((await post(server, "/v1/publish", item, key)).status).toBe(200);

    const revoked = await sinal(["keys", "revoke", "--id", id]);
    expect(revoked.code).toBe(0);
    expect(revoked.stdout).toContain(id);
    const res = await post(server, "/v1/publish", item, key);
    expect(res.status).toBe(401);
    expect(await res.json()).toEqual({ error: { code: "unauthorized", message: "unknown or revoked API key" } });
    expect((await sinal(["keys", "list", "--tenant", "acme"])).stdout).toContain("revoked");
  });

  test("keys revoke of an unknown id exits 1 naming it", async () => {
    const { code, stderr } = await sinal(["keys", "revoke", "--id", "0123456789abcdef"]);
    expect(code).toBe(1);
    expect(stderr).toContain("0123456789abcdef");
  });

  test("keys create refuses an invalid tenant id with exit 1", async () => {
    const { code, stderr, stdout } = await sinal(["keys", "create", "--tenant", "Not A Tenant"]);
    expect(code).toBe(1);
    expect(stderr).toContain("--tenant");
    expect(stdout).toBe("");
  });
});

describe("token", () => {
  test("prints a JWT that connects and may subscribe to the granted channels", async () => {
    const { code, stdout } = await sinal(["token", "--tenant", "acme", "--user", "u1", "--sub-channels", "dept:*"]);
    expect(code).toBe(0);
    const token = lastLine(stdout);
    expect(token.split(".")).toHaveLength(3);

    const server = await serverOnSameFile();
    const { client, welcome } = await Client.connect(`${server.ws}?token=${token}`);
    cleanups.push(() => client.close());
    expect(welcome).toMatchObject({ type: "welcome", user: "u1", tenant: "acme" });
    expect(await client.request({ type: "subscribe", channel: "dept:1" })).toMatchObject({ ok: true, channel: "dept:1" });
    expect(await client.request({ type: "subscribe", channel: "sync:sales" })).toMatchObject({ ok: false, error: { code: "forbidden" } });
  });

  test("--ttl sets the expiry", async () => {
    const token = lastLine((await sinal(["token", "--tenant", "acme", "--user", "u1", "--ttl", "15m"])).stdout);
    const claims = JSON.parse(Buffer.from(token.split(".")[1]!, "base64url").toString());
    expect(claims).toMatchObject({ sub: "u1", tid: "acme" });
    expect(claims.exp - claims.iat).toBe(900);
  });

  test("--channel prints a channel token that lets its user subscribe to that channel without a grant", async () => {
    const { code, stdout } = await sinal(["token", "--tenant", "acme", "--user", "u1", "--channel", "room:conv-7", "--ttl", "5m"]);
    expect(code).toBe(0);
    const token = lastLine(stdout);
    expect(JSON.parse(Buffer.from(token.split(".")[1]!, "base64url").toString())).toEqual({ sub: "u1", tid: "acme", channel: "room:conv-7", exp: expect.any(Number), iat: expect.any(Number) });
    const server = await serverOnSameFile();
    const client = await Client.open(server, { user: "u1" });
    cleanups.push(() => client.close());
    expect(await client.request({ type: "subscribe", channel: "room:conv-7", token })).toMatchObject({ ok: true, channel: "room:conv-7" });
  });

  test("--channel refuses a channel that does not exist and grants beside it", async () => {
    const unknown = await sinal(["token", "--tenant", "acme", "--user", "u1", "--channel", "campaign:1"]);
    expect({ code: unknown.code, stderr: unknown.stderr }).toEqual({ code: 1, stderr: 'sinal: --channel: unknown channel "campaign:1"\n' });
    const withGrants = await sinal(["token", "--tenant", "acme", "--user", "u1", "--channel", "room:1", "--sub-channels", "room:*"]);
    expect(withGrants.stderr).toBe("sinal: --channel: a channel token carries only sub, tid, channel and exp: drop --sub-channels\n");
  });

  test("--roles admin gives a token the REST API accepts", async () => {
    const token = lastLine((await sinal(["token", "--tenant", "acme", "--user", "ops", "--roles", "admin"])).stdout);
    const server = await serverOnSameFile();
    expect((await post(server, "/v1/publish", { channel: "global", event: "tick", data: 1 }, token)).status).toBe(200);
  });

  test("without JWT_SECRET and before any dev-mode start, refuses naming JWT_SECRET and the dev secret's file", async () => {
    const { code, stdout, stderr } = await sinal(["token", "--tenant", "acme", "--user", "u1"], { JWT_SECRET: undefined });
    expect({ code, stdout }).toEqual({ code: 1, stdout: "" });
    expect(stderr).toStartWith(`sinal: JWT_SECRET: not set, and there is no dev secret at ${join(dir, "dev-secret")} yet`);
  });

  test("without JWT_SECRET and with DATABASE_URL=sqlite::memory:, refuses: such a server keeps its secret in its process", async () => {
    const { code, stderr } = await sinal(["token", "--tenant", "acme", "--user", "u1"], { JWT_SECRET: undefined, DATABASE_URL: "sqlite::memory:" });
    expect(code).toBe(1);
    expect(stderr).toStartWith("sinal: JWT_SECRET: not set, and DATABASE_URL=sqlite::memory: keeps no dev secret");
  });

  test("refuses a bad --ttl, naming it", async () => {
    const { code, stderr } = await sinal(["token", "--tenant", "acme", "--user", "u1", "--ttl", "soon"]);
    expect(code).toBe(1);
    expect(stderr).toContain("--ttl");
  });
});

describe("bad configuration exits 1 naming the variable", () => {
  const cases: [string, Record<string, string>][] = [
    ["PORT", { PORT: "abc" }],
    ["JWT_SECRET", { JWT_SECRET: "too-short" }],
    ["DATABASE_URL", { DATABASE_URL: "mysql://x" }],
    ["REDIS_URL", { REDIS_URL: "redis://127.0.0.1:6379" }],
    ["HOST", { HOST: "256.1.1.1" }],
  ];
  for (const [variable, env] of cases) {
    test(`${variable}=${Object.values(env)[0]}`, async () => {
      const { code, stdout, stderr } = await sinal(["serve"], { PORT: "0", HOST: "127.0.0.1", ...env });
      expect(code).toBe(1);
      expect(stderr).toStartWith(`sinal: ${variable}:`);
      expect(stdout).not.toContain("listening");
    });
  }
});

describe("a failure to listen or to open the database exits 1 naming the variable and its value", () => {
  test("HOST that is no address of this machine names HOST, PORT and the value", async () => {
    // 192.0.2.0/24 is reserved for documentation: never an address of this machine.
    const { code, stdout, stderr } = await sinal(["serve"], { HOST: "192.0.2.1", PORT: "0" });
    expect(code).toBe(1);
    expect(stderr).toStartWith("sinal: HOST: cannot listen on HOST=192.0.2.1 PORT=0 (EADDRNOTAVAIL)");
    expect(stdout).not.toContain("listening");
  });

  test("DATABASE_URL naming a directory names DATABASE_URL and the path", async () => {
    const { code, stderr } = await sinal(["serve"], { HOST: "127.0.0.1", PORT: "0", DATABASE_URL: `sqlite:${dir}` });
    expect(code).toBe(1);
    expect(stderr).toBe(`sinal: DATABASE_URL: cannot open the sqlite database ${dir}: it is a directory; name a file in it, e.g. sqlite:${dir}/sinal.db\n`);
  });

  test("DATABASE_URL below a regular file names DATABASE_URL and the path, for migrate and keys too", async () => {
    await Bun.write(join(dir, "plain"), "not a directory");
    const path = join(dir, "plain", "sinal.db");
    for (const args of [["serve"], ["migrate"], ["keys", "list", "--tenant", "acme"]]) {
      const { code, stderr } = await sinal(args, { HOST: "127.0.0.1", PORT: "0", DATABASE_URL: `sqlite:${path}` });
      expect(code).toBe(1);
      expect(stderr).toStartWith(`sinal: DATABASE_URL: cannot open the sqlite database ${path}: `);
    }
  });
});

describe("serve", () => {
  test("logs a JSON listening line, closes clients with 1001 on SIGTERM and exits 0 within 10 s", async () => {
    const { served, port, http, ws } = await serve();
    const listening = await served.line((l) => l.msg === "listening");
    expect(listening).toMatchObject({ level: 30, port, name: "sinal" });
    expect(port).toBeGreaterThan(0);
    expect((await fetch(`${http}/health`)).status).toBe(200);

    const token = await (await import("../src/auth/tokens.ts")).mintToken(SECRET, { tenant: "acme", user: "u1", ttlSec: 60 });
    const { client, welcome } = await Client.connect(`${ws}?token=${token}`);
    expect(welcome).toMatchObject({ type: "welcome", user: "u1", tenant: "acme" });

    const signalled = Date.now();
    served.proc.kill("SIGTERM");
    expect((await client.closed).code).toBe(1001);
    expect(await served.proc.exited).toBe(0);
    expect(Date.now() - signalled).toBeLessThan(10_000);
    await served.line((l) => l.msg === "stopped");
  }, 20_000);

  test("a second instance on a port in use exits 1 with a clear EADDRINUSE message", async () => {
    const { port } = await serve();
    const second = await sinal(["serve"], { PORT: String(port), HOST: "127.0.0.1", DATABASE_URL: `sqlite:${join(dir, "other.db")}` });
    expect(second.code).toBe(1);
    expect(second.stderr).toStartWith(`sinal: PORT: 127.0.0.1:${port} is already in use (EADDRINUSE)`);
    expect(second.stdout).not.toContain("listening");
  }, 20_000);

  test("dev mode prints a demo token and demo API key that work", async () => {
    const { served, http, ws } = await serve({ JWT_SECRET: undefined });
    const announced = await served.line((l) => typeof l.demo_token === "string");
    expect(announced).toMatchObject({ dev_mode: true, demo_tenant: "demo" });
    const { demo_token: token, demo_api_key: apiKey } = announced as { demo_token: string; demo_api_key: string };

    const { client, welcome } = await Client.connect(`${ws}?token=${token}`);
    cleanups.push(() => client.close());
    expect(welcome).toMatchObject({ type: "welcome", user: "demo", tenant: "demo" });
    const sub = await client.request({ type: "subscribe", channel: "dept:1" });
    expect(sub).toMatchObject({ ok: true });

    const res = await fetch(`${http}/v1/publish`, {
      method: "POST",
      headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json" },
      body: JSON.stringify({ channel: "dept:1", event: "tick", data: "demo" }),
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ offset: 1, epoch: sub.epoch });
    expect(await client.next()).toMatchObject({ type: "pub", channel: "dept:1", data: "demo", offset: 1 });

    served.proc.kill("SIGTERM");
    expect(await served.proc.exited).toBe(0);
    expect(await served.stderr).toContain("DEV MODE");
  }, 20_000);

  test("dev mode keeps its secret in dev-secret beside the sqlite file (0600) and names it in the warning", async () => {
    const { served } = await serve({ JWT_SECRET: undefined });
    const file = join(dir, "dev-secret");
    const announced = await served.line((l) => l.dev_mode === true);
    expect(announced).toMatchObject({ level: 40, dev_secret_file: file });
    expect(announced.msg).toContain(`the dev secret in ${file} (made now;`);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(readFileSync(file, "utf8").trim()).toMatch(/^[A-Za-z0-9_-]{43}$/);
    served.proc.kill("SIGTERM");
    expect(await served.proc.exited).toBe(0);
    expect(await served.stderr).toContain(`tokens are signed with the dev secret in ${file}`);
  }, 20_000);

  test("dev mode: a token from before a restart still connects after it, and so does the demo API key", async () => {
    const first = await serve({ JWT_SECRET: undefined });
    const before = (await first.served.line((l) => l.dev_mode === true)) as { demo_token: string; demo_api_key: string };
    first.served.proc.kill("SIGTERM");
    expect(await first.served.proc.exited).toBe(0);

    const second = await serve({ JWT_SECRET: undefined });
    const after = await second.served.line((l) => l.dev_mode === true);
    expect(after.msg).toContain("(kept from an earlier start;");
    expect(after.demo_api_key).toBe(before.demo_api_key);
    const { client, welcome } = await Client.connect(`${second.ws}?token=${before.demo_token}`);
    cleanups.push(() => client.close());
    expect(welcome).toMatchObject({ type: "welcome", user: "demo", tenant: "demo" });
    const stats = await fetch(`${second.http}/v1/stats`, { headers: { authorization: `Bearer ${before.demo_api_key}` } });
    expect(stats.status).toBe(200);
  }, 20_000);

  test("dev mode: sinal token without JWT_SECRET mints a second user the running server accepts, and says which secret it used", async () => {
    const { served, ws } = await serve({ JWT_SECRET: undefined });
    await served.line((l) => l.dev_mode === true);
    const minted = await sinal(["token", "--tenant", "demo", "--user", "bob", "--sub-channels", "*"], { JWT_SECRET: undefined });
    expect(minted.code).toBe(0);
    expect(minted.stderr).toBe(`sinal: no JWT_SECRET: signing with the dev-mode secret in ${join(dir, "dev-secret")}; only a dev-mode server on this DATABASE_URL accepts the token\n`);
    const { client, welcome } = await Client.connect(`${ws}?token=${lastLine(minted.stdout)}`);
    cleanups.push(() => client.close());
    expect(welcome).toMatchObject({ type: "welcome", user: "bob", tenant: "demo" });
  }, 20_000);

  test("dev mode prints a second ready link, for user demo2 on the same page", async () => {
    const { served, ws } = await serve({ JWT_SECRET: undefined });
    const announced = (await served.line((l) => l.dev_mode === true)) as { demo_page: string; demo2_page: string; demo2_token: string };
    const [first, second] = [new URL(announced.demo_page), new URL(announced.demo2_page)];
    expect(second.origin + second.pathname).toBe(first.origin + first.pathname);
    expect(second.hash).toBe(`#token=${announced.demo2_token}`);
    const { client, welcome } = await Client.connect(`${ws}?token=${announced.demo2_token}`);
    cleanups.push(() => client.close());
    expect(welcome).toMatchObject({ type: "welcome", user: "demo2", tenant: "demo" });
    served.proc.kill("SIGTERM");
    await served.proc.exited;
    expect(await served.stderr).toContain(`second user demo2 (open in another tab):          ${announced.demo2_page}`);
  }, 20_000);

  test("dev mode with DATABASE_URL=sqlite::memory: writes no secret file and says the secret dies with the process", async () => {
    const { served } = await serve({ JWT_SECRET: undefined, DATABASE_URL: "sqlite::memory:" });
    const announced = await served.line((l) => l.dev_mode === true);
    expect(announced.dev_secret_file).toBeNull();
    expect(announced.msg).toContain("a random secret that dies with this process");
    expect(readdirSync(dir)).toEqual([]);
  }, 20_000);
});

describe("compiled binary", () => {
  test("runs from a directory without drizzle/ or node_modules: migrate (embedded migrations), --version, --help, token, keys, config errors", async () => {
    const binary = join(dir, "bin", "sinal");
    // Built from the temp dir: bun build --compile leaves its scratch files in the working directory.
    const build = await run([BUN, "build", MAIN, "--compile", "--outfile", binary], {}, dir);
    expect(build.code).toBe(0);

    const workdir = join(dir, "elsewhere");
    await Bun.write(join(workdir, ".keep"), "");
    expect(existsSync(join(workdir, "drizzle"))).toBe(false);
    const migrated = await run([binary, "migrate"], { DATABASE_URL: undefined }, workdir);
    expect(migrated.code).toBe(0);
    // The default DATABASE_URL is relative to the working directory.
    const db = new Database(join(workdir, "data", "sinal.db"), { readonly: true });
    const tables = db.query<{ name: string }, []>("SELECT name FROM sqlite_master WHERE type = 'table'").all().map((r) => r.name);
    db.close();
    expect(tables).toEqual(expect.arrayContaining(["__drizzle_migrations", "api_keys", "idempotency"]));

    expect(await run([binary, "--version"], {}, workdir)).toEqual({ code: 0, stdout: VERSION_LINE, stderr: "" });
    // The other subcommands answer as they do from source.
    expect(await run([binary, "--help"], {}, workdir)).toEqual(await sinal(["--help"]));
    expect(await run([binary, "token", "--help"], {}, workdir)).toEqual(await sinal(["token", "--help"]));
    const token = await run([binary, "token", "--tenant", "acme", "--user", "u1", "--ttl", "5m"], {}, workdir);
    expect(token.code).toBe(0);
    const claims = (await import("jose")).decodeJwt(lastLine(token.stdout));
    expect(claims).toMatchObject({ sub: "u1", tid: "acme" });
    const key = await run([binary, "keys", "create", "--tenant", "acme"], { DATABASE_URL: undefined }, workdir);
    expect(key.code).toBe(0);
    expect(lastLine(key.stdout)).toMatch(/^sk_/);
    const refused = await run([binary, "serve"], { PORT: "99999" }, workdir);
    expect(refused).toMatchObject({ code: 1, stdout: "" });
    expect(refused.stderr).toStartWith("sinal: PORT:");
  }, 60_000);
});
