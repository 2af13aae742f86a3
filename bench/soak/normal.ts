/**
 * The well-behaved side of the soak (started by bench/soak/run.ts, not by hand): `clients` users,
 * each with its own token and socket, in rooms of `roomSize` (`room:s<k>`), and one service that
 * publishes `tick`s to the rooms over REST (`POST /v1/publish`, one item a request, round robin
 * over the rooms) at `rate` per second. Open loop: a request goes out on schedule whether or not
 * the previous ones were answered, up to `maxInFlight` (a service's connection pool; past it the
 * tick is counted as skipped, so a stalled server shows as skips, not as hidden latency).
 *
 * Latency = frame received - request sent, both `performance.now()` of this process (the send
 * time travels in `data.t`). Lines on stdout (JSON): `ready` once every client is subscribed,
 * `second` every second after `go` (stdin), `done` after `stop` (stdin) and a 2 s drain.
 * Sockets the server closes are counted, not reopened.
 */
import { createInterface } from "node:readline";
import { JsonClient } from "../lib/jsonws.ts";
import { userToken } from "../hostile/lib.ts";

interface Config {
  port: number;
  secret: string;
  apiKey: string;
  clients: number;
  roomSize: number;
  rate: number;
  maxInFlight: number;
}
const cfg = JSON.parse(process.argv[2]!) as Config;
const out = (line: object) => process.stdout.write(`${JSON.stringify(line)}\n`);
const rooms = Math.ceil(cfg.clients / cfg.roomSize);

const all: number[] = [];
let second: number[] = [];
let received = 0;
const closes: Record<string, number> = {};
let open = 0;

const clients: JsonClient[] = [];
for (let i = 0; i < cfg.clients; i += 50) {
  const batch = await Promise.all(
    Array.from({ length: Math.min(50, cfg.clients - i) }, async (_, j) => {
      const n = i + j;
      const c = await JsonClient.connect(cfg.port, userToken(cfg.secret, `n${n}`));
      const reply = await c.request({ type: "subscribe", channel: `room:s${Math.floor(n / cfg.roomSize)}` });
      if (!reply.ok) throw new Error(`normal client ${n}: subscribe refused ${JSON.stringify(reply)}`);
      c.onFrame = (f) => {
        if (f.type !== "pub" || f.event !== "tick") return;
        const ms = performance.now() - (f.data.t as number);
        all.push(ms);
        second.push(ms);
        received++;
      };
      return c;
    }),
  );
  clients.push(...batch);
}
open = clients.length;
for (const c of clients) {
  void c.closed.then((reason) => {
    open--;
    const key = reason.replace(/^close frame (\d+).*/, "close $1");
    closes[key] = (closes[key] ?? 0) + 1;
  });
}

let seq = 0;
let ok = 0;
let skipped = 0;
let inFlight = 0;
const errors: Record<string, number> = {};
const rest: number[] = [];
let restSecond: number[] = [];
const url = `http://127.0.0.1:${cfg.port}/v1/publish`;
const headers = { authorization: `Bearer ${cfg.apiKey}`, "content-type": "application/json" };

function publishOne(): void {
  const s = seq++;
  if (inFlight >= cfg.maxInFlight) {
    skipped++;
    return;
  }
  inFlight++;
  const t = performance.now();
  const body = `{"channel":"room:s${s % rooms}","event":"tick","data":{"t":${t},"s":${s}}}`;
  fetch(url, { method: "POST", headers, body, signal: AbortSignal.timeout(10_000) })
    .then(async (res) => {
      await res.arrayBuffer();
      if (res.ok) ok++;
      else errors[String(res.status)] = (errors[String(res.status)] ?? 0) + 1;
    })
    .catch((err: Error) => {
      errors[err.name] = (errors[err.name] ?? 0) + 1;
    })
    .finally(() => {
      inFlight--;
      const ms = performance.now() - t;
      rest.push(ms);
      restSecond.push(ms);
    });
}

function pct(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const v = Float64Array.from(values).sort();
  return v[Math.min(v.length - 1, Math.floor((p / 100) * v.length))]!;
}
function maxOf(values: number[]): number {
  let m = Number.NaN;
  for (const v of values) if (!(v <= m)) m = v;
  return m;
}
const r2 = (n: number) => (Number.isFinite(n) ? Math.round(n * 100) / 100 : null);

let started = 0;
let ticker: Timer | null = null;
let reporter: Timer | null = null;
function go(): void {
  started = performance.now();
  ticker = setInterval(() => {
    const due = Math.floor(((performance.now() - started) / 1000) * cfg.rate);
    while (seq < due) publishOne();
  }, 2);
  let sec = 0;
  reporter = setInterval(() => {
    sec++;
    out({ event: "second", sec, deliveries: second.length, p50: r2(pct(second, 50)), p99: r2(pct(second, 99)), max: r2(maxOf(second)), rest_p99: r2(pct(restSecond, 99)), ok, skipped, errors: Object.values(errors).reduce((a, b) => a + b, 0), open });
    second = [];
    restSecond = [];
  }, 1000);
}

async function stop(): Promise<void> {
  if (ticker) clearInterval(ticker);
  const seconds = (performance.now() - started) / 1000;
  for (let i = 0; i < 40 && inFlight > 0; i++) await Bun.sleep(50);
  await Bun.sleep(2000); // deliveries still on their way
  if (reporter) clearInterval(reporter);
  out({
    event: "done",
    seconds: r2(seconds),
    offered: seq,
    published: ok,
    skipped,
    errors,
    expected: ok * cfg.roomSize,
    received,
    open,
    closes,
    latency: { samples: all.length, p50: r2(pct(all, 50)), p90: r2(pct(all, 90)), p99: r2(pct(all, 99)), p999: r2(pct(all, 99.9)), max: r2(maxOf(all)) },
    rest: { samples: rest.length, p50: r2(pct(rest, 50)), p99: r2(pct(rest, 99)), max: r2(maxOf(rest)) },
  });
  for (const c of clients) c.raw.terminate();
  process.exit(0);
}

out({ event: "ready", clients: clients.length, rooms });
for await (const line of createInterface({ input: process.stdin })) {
  if (line === "go") go();
  else if (line === "stop") await stop();
}
