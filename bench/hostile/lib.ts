/**
 * What the hostile-client benches of issue 10 share: the checkout under attack (`--root`), a
 * server started from it with its own default limits, RSS sampling with a cap, filling a room,
 * and the clean-up of every child process. Everything runs on 127.0.0.1.
 */
import { execFileSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { mintToken } from "../../src/auth/tokens.ts";
import { JsonClient } from "../lib/jsonws.ts";
import { ROOT, startSinal, statusKb } from "../lib/proc.ts";

/** The tenant of every API key and token here, unless a bench names another. */
export const TENANT = "acme";
const MIB = 1024;

/** Child processes to kill on exit, and temporary directories to remove. */
export const children = new Set<ChildProcess>();
const dirs = new Set<string>();

/**
 * `--root <dir>` (the checkout to attack; default this repository) and the bench's numeric
 * options, `--name value`, with their defaults.
 */
export function cli<K extends string>(defaults: Record<K, number>): { root: string; opts: Record<K, number> } {
  const names = Object.keys(defaults) as K[];
  const { values } = parseArgs({
    options: { root: { type: "string" }, ...Object.fromEntries(names.map((n) => [n, { type: "string" as const }])) },
    strict: true,
  });
  const opts = { ...defaults };
  for (const n of names) {
    const raw = (values as Record<string, string | undefined>)[n];
    if (raw === undefined) continue;
    const v = Number(raw);
    if (!Number.isFinite(v)) throw new Error(`--${n}: expected a number, got "${raw}"`);
    opts[n] = v;
  }
  return { root: resolve((values as { root?: string }).root ?? ROOT), opts };
}

/**
 * Kills every child and removes the temporary directories on exit, Ctrl-C or failure; exits
 * with code 2 once `maxSec` has passed whatever happens.
 */
export function guard(maxSec: number): void {
  const cleanup = () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  };
  process.on("exit", cleanup);
  for (const signal of ["SIGINT", "SIGTERM"] as const) process.on(signal, () => process.exit(130));
  setTimeout(() => {
    process.stderr.write(`deadline of ${maxSec} s passed; stopping\n`);
    process.exit(2);
  }, maxSec * 1000).unref();
}

/** `git log -1 --format=%h` of the checkout, marked when its src/ has uncommitted changes. */
export function commitOf(root: string): string {
  try {
    const sha = execFileSync("git", ["-C", root, "log", "-1", "--format=%h"], { encoding: "utf8" }).trim();
    const dirty = execFileSync("git", ["-C", root, "status", "--porcelain", "--", "src"], { encoding: "utf8" }).trim() !== "";
    return dirty ? `${sha}+src-modified` : sha;
  } catch {
    return "unknown";
  }
}

export interface Target {
  root: string;
  commit: string;
  child: ChildProcess;
  pid: number;
  port: number;
  base: string;
  secret: string;
  /** The API key of TENANT. */
  apiKey: string;
  /** More API keys by tenant, from `extraTenants`. */
  keys: Record<string, string>;
  out: string[];
}

/**
 * sinal from `root` (`bun src/main.ts serve`, pinned to core 0) on a fresh sqlite file, with the
 * server's own default limits plus `env`; one API key for TENANT and one for each of `extraTenants`.
 */
export async function startTarget(root: string, env: Record<string, string> = {}, extraTenants: string[] = []): Promise<Target> {
  const dir = mkdtempSync(join(tmpdir(), "sinal-hostile-"));
  dirs.add(dir);
  const secret = randomBytes(32).toString("base64url");
  const keys: Record<string, string> = {};
  for (const t of [TENANT, ...extraTenants]) keys[t] = `sk_${randomBytes(18).toString("hex")}`;
  const server = await startSinal(
    children,
    {
      JWT_SECRET: secret,
      DATABASE_URL: `sqlite:${join(dir, "x.db")}`,
      SINAL_API_KEYS: Object.entries(keys).map(([t, k]) => `${t}:${k}`).join(","),
      ...env,
    },
    [],
    { root, benchLimits: false },
  );
  return {
    root,
    commit: commitOf(root),
    child: server.child,
    pid: server.child.pid!,
    port: server.port,
    base: `http://127.0.0.1:${server.port}`,
    secret,
    apiKey: keys[TENANT]!,
    keys,
    out: server.out,
  };
}

/** A plain user token: subscribe to every room, publish nowhere (plus `extra` grants). */
export function userToken(secret: string, user: string, extra: { tenant?: string; pubChannels?: string[]; subChannels?: string[] } = {}): string {
  return mintToken(secret, {
    tenant: extra.tenant ?? TENANT,
    user,
    ttlSec: 3600,
    subChannels: extra.subChannels ?? ["room:*"],
    ...(extra.pubChannels ? { pubChannels: extra.pubChannels } : {}),
  });
}

export const mib = (kb: number) => (Number.isFinite(kb) ? (kb / MIB).toFixed(0) : "n/a");

/** The server's VmRSS in kB, or NaN once it is gone. */
export function rssKb(pid: number): number {
  try {
    return statusKb(pid, "VmRSS");
  } catch {
    return Number.NaN;
  }
}

/**
 * Samples the server's VmRSS every `everyMs` (times relative to `t0`, ms). Past `capKb` it kills
 * the server with SIGKILL so the machine survives, and records when.
 */
export class RssSampler {
  readonly samples: { ms: number; kb: number }[] = [];
  peakKb = 0;
  peakMs = 0;
  capped: { ms: number; kb: number } | null = null;
  private readonly timer: Timer;

  constructor(
    private readonly target: Target,
    readonly t0: number,
    everyMs = 250,
    private readonly capKb = 2 * 1024 * MIB,
  ) {
    this.sample();
    this.timer = setInterval(() => this.sample(), everyMs);
  }

  sample(): number {
    const kb = rssKb(this.target.pid);
    if (!Number.isFinite(kb)) return kb;
    const ms = Math.round(performance.now() - this.t0);
    this.samples.push({ ms, kb });
    if (kb > this.peakKb) {
      this.peakKb = kb;
      this.peakMs = ms;
    }
    if (kb > this.capKb && this.capped === null) {
      this.capped = { ms, kb };
      process.stderr.write(`server RSS ${mib(kb)} MiB passed the cap of ${mib(this.capKb)} MiB at ${(ms / 1000).toFixed(1)} s: killed\n`);
      this.target.child.kill("SIGKILL");
    }
    return kb;
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

/**
 * Sums of Prometheus metrics' series from one read of /metrics (0 for a metric the server does
 * not export), or null when the server does not answer within `timeoutMs`.
 */
export async function metrics(base: string, names: readonly string[], timeoutMs = 1000): Promise<Record<string, number> | null> {
  let text: string;
  try {
    text = await (await fetch(`${base}/metrics`, { signal: AbortSignal.timeout(timeoutMs) })).text();
  } catch {
    return null;
  }
  const sums: Record<string, number> = {};
  for (const name of names) {
    sums[name] = 0;
    for (const m of text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+-]+)$`, "gm"))) sums[name] += Number(m[1]);
  }
  return sums;
}

/** One metric's sum (see `metrics`), or NaN when the server does not answer. */
export async function metric(base: string, name: string, timeoutMs = 1000): Promise<number> {
  return (await metrics(base, [name], timeoutMs))?.[name] ?? Number.NaN;
}

const TCP_STATES: Record<string, string> = { "01": "ESTABLISHED", "04": "FIN_WAIT1", "05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0B": "CLOSING" };

/** One of our loopback connections as the kernel sees it (/proc/net/tcp). */
export interface TcpEntry {
  /** ESTABLISHED, or CLOSE_WAIT once the server closed its side, ... */
  state: string;
  /** Bytes received and not read yet. */
  rxQueue: number;
}

/** Our connections to 127.0.0.1:`remotePort`, by local port. */
export function tcpTable(remotePort: number): Map<number, TcpEntry> {
  const remote = `0100007F:${remotePort.toString(16).toUpperCase().padStart(4, "0")}`;
  const table = new Map<number, TcpEntry>();
  for (const line of readFileSync("/proc/net/tcp", "utf8").split("\n")) {
    const f = line.trim().split(/\s+/);
    if (f[2] !== remote || !f[1]!.startsWith("0100007F:")) continue;
    table.set(parseInt(f[1]!.slice(9), 16), { state: TCP_STATES[f[3]!] ?? f[3]!, rxQueue: parseInt(f[4]!.split(":")[1]!, 16) });
  }
  return table;
}

/** One connection's entry (null once the socket is gone). */
export function tcpState(localPort: number, remotePort: number): TcpEntry | null {
  return tcpTable(remotePort).get(localPort) ?? null;
}

/** Frames a connection may send at once under the default rate limit (RATE_LIMIT_BURST). */
const BURST = 100;

/**
 * Fills `room:<room>` with `messages` chat messages of `bytes` characters, sent by the token's
 * user over `sockets` sockets in bursts of at most BURST frames (acknowledged before the next
 * burst), so the default rate limit is respected. A reading socket of the same user subscribes
 * first and stays open: it gives the epoch, sees the last offset, and keeps the user in the room
 * (another socket of the user closing publishes no `user_left`, which would push the oldest
 * message out of a replay of the last `messages` publications).
 */
export async function fillRoom(
  port: number,
  token: string,
  room: string,
  messages: number,
  bytes: number,
  sockets: number,
): Promise<{ reader: JsonClient; epoch: string; lastOffset: number; acked: number; refused: number; seconds: number }> {
  const channel = `room:${room}`;
  const reader = await JsonClient.connect(port, token);
  let lastOffset = 0;
  reader.onFrame = (f) => {
    if (f.type === "pub" && f.channel === channel && f.offset > lastOffset) lastOffset = f.offset;
  };
  const subscribed = await reader.request({ type: "subscribe", channel });
  if (!subscribed.ok) throw new Error(`subscribe refused: ${JSON.stringify(subscribed)}`);
  const content = "x".repeat(bytes);
  const start = performance.now();
  let acked = 0;
  let refused = 0;
  const fillers = await Promise.all(Array.from({ length: sockets }, () => JsonClient.connect(port, token)));
  await Promise.all(
    fillers.map(async (c, i) => {
      let left = Math.floor(messages / sockets) + (i < messages % sockets ? 1 : 0);
      while (left > 0) {
        const n = Math.min(left, BURST);
        const replies = await Promise.all(Array.from({ length: n }, () => c.request({ type: "message", room, content }, 30_000)));
        const ok = replies.filter((r) => r.ok).length;
        acked += ok;
        refused += n - ok;
        left -= ok;
        if (ok < n) await Bun.sleep(2000); // rate limited after all: let the bucket refill
      }
    }),
  );
  const seconds = (performance.now() - start) / 1000;
  for (const c of fillers) c.raw.close();
  // The reader's own user_joined came first, so the last message has offset messages + 1 on a fresh room.
  for (let i = 0; i < 100 && lastOffset < (subscribed.offset as number) + messages + 1; i++) await Bun.sleep(50);
  return { reader, epoch: subscribed.epoch as string, lastOffset, acked, refused, seconds };
}

/** POST /v1/publish with a body as given (a string is sent as is); the status and the error code if any. */
export async function publish(target: Target, body: string, key = target.apiKey, timeoutMs = 30_000): Promise<{ status: number; code?: string; ms: number }> {
  const t = performance.now();
  try {
    const res = await fetch(`${target.base}/v1/publish`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body,
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await res.text();
    let code: string | undefined;
    if (!res.ok) code = (/"code":"([a-z_]+)"/.exec(text) ?? [])[1];
    return { status: res.status, code, ms: performance.now() - t };
  } catch (err) {
    return { status: 0, code: (err as Error).name, ms: performance.now() - t };
  }
}

/** Writes bench/results/<name>-latest.json and prints the one summary line on stdout. */
export function report(name: string, line: string, json: object): void {
  const dir = join(ROOT, "bench/results");
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `${name}-latest.json`), JSON.stringify(json, null, 2));
  process.stdout.write(`${line}\n`);
}
