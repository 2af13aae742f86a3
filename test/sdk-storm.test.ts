import { afterAll, beforeAll, expect, test } from "bun:test";
import { SinalClient, type Subscription } from "../clients/js/src/index.ts";
import { post, startServer, type TestServer } from "./helpers.ts";
import { run } from "./support/sdk-inbox.ts";
import { SdkProxy } from "./support/sdk-proxy.ts";

// A reconnect storm: 1,000 SDK clients behind one TCP proxy lose their connections at once while
// publications go on over REST, and all come back when the proxy does. Measured on a 2-core
// machine with server, proxy and clients in this one process: 0.55-0.7 s from the proxy's return
// to the last `recovered` (0.9 s with a second storm running beside it); most of it is the
// clients' backoff (up to 1 s, jittered). The bound leaves 5x room for a loaded machine.

const CLIENTS = 1000;
const BOUND_MS = 5_000;
const CHANNEL = "room:storm";

let server: TestServer;
let key: string;
let proxy: SdkProxy;
const clients: SinalClient[] = [];

beforeAll(async () => {
  // One user with many tabs: the room sees one user_joined/user_left, not a thousand.
  server = await startServer({ MAX_CONNECTIONS_PER_USER: String(CLIENTS * 2), LOG_LEVEL: "warn" });
  key = await server.apiKey("acme");
  proxy = new SdkProxy(server.port).start();
});
afterAll(async () => {
  for (const c of clients) c.close();
  proxy.stop();
  await server.stop();
});

/** What one client's subscription saw: offsets in delivery order, recoveries, gaps. */
class Seen {
  start = -1;
  readonly offsets: number[] = [];
  recovered = 0;
  gaps = 0;
  recoveredAt = 0;
  private waiting: { offset: number; resolve: () => void } | null = null;
  readonly firstRecovery: Promise<void>;

  constructor(sub: Subscription) {
    let recoveredNow = () => {};
    this.firstRecovery = new Promise((resolve) => (recoveredNow = resolve));
    sub.on("publication", (p) => {
      if (p.offset === undefined) return;
      this.offsets.push(p.offset);
      if (this.waiting !== null && p.offset >= this.waiting.offset) this.waiting.resolve();
    });
    sub.on("recovered", () => {
      this.recovered++;
      this.recoveredAt = performance.now();
      recoveredNow();
    });
    sub.on("gap", () => this.gaps++);
  }

  /** Resolves once a publication at `offset` or later was delivered. */
  reached(offset: number): Promise<void> {
    if ((this.offsets.at(-1) ?? -1) >= offset) return Promise.resolve();
    return new Promise((resolve) => (this.waiting = { offset, resolve }));
  }
}

async function publish(n: number): Promise<number> {
  const res = await post(server, "/v1/publish", { channel: CHANNEL, event: "tick", data: { n } }, key);
  expect(res.status).toBe(200);
  return ((await res.json()) as { offset: number }).offset;
}

/** `promise`, or a rejection naming `what` after `ms`. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: Timer | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`not within ${ms} ms: ${what}`)), ms)));
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

test(`1,000 clients cut off at once all come back recovered, with no gap and no duplicate, within ${BOUND_MS / 1000} s of the network's return`, async () => {
  const token = await server.token({ user: "storm", subChannels: ["room:*"] });
  const seen: Seen[] = [];
  const subs: Subscription[] = [];
  for (let i = 0; i < CLIENTS; i++) {
    const client = new SinalClient({ url: `ws://127.0.0.1:${proxy.port}/ws`, token, backoff: { minMs: 100, maxMs: 1000, jitter: 0.5 } });
    clients.push(client);
    const sub = client.subscribe(CHANNEL);
    seen.push(new Seen(sub));
    subs.push(sub);
    void client.connect();
  }
  const replies = await within(Promise.all(subs.map((sub) => sub.ready)), 15_000, "every client subscribed");
  replies.forEach((r, i) => (seen[i]!.start = r.offset));
  expect(proxy.connections).toBe(CLIENTS);
  const first = await publish(0);
  await within(Promise.all(seen.map((s) => s.reached(first))), 10_000, "every client got the first publication");

  const noticed = Promise.all(clients.map((c) => new Promise((resolve) => c.once("close", resolve))));
  expect(proxy.down()).toBe(CLIENTS);
  await within(noticed, 5_000, "every client noticed the cut");
  for (let n = 1; n <= 50; n++) await publish(n);

  proxy.up();
  const upAt = performance.now();
  let allRecovered = false;
  const recoveries = Promise.all(seen.map((s) => s.firstRecovery)).then(() => (allRecovered = true));
  // Publications go on, one every 20 ms, while the clients return.
  let n = 50;
  while (!allRecovered && performance.now() - upAt < BOUND_MS) {
    await publish(++n);
    await Promise.race([recoveries, Bun.sleep(20)]);
  }
  const lastRecoveredMs = Math.max(...seen.map((s) => s.recoveredAt)) - upAt;
  console.log(`storm: ${CLIENTS} clients recovered ${Math.round(lastRecoveredMs)} ms after the proxy's return; ${n} publications`);
  expect(seen.filter((s) => s.recovered === 0)).toHaveLength(0);
  expect(lastRecoveredMs).toBeLessThan(BOUND_MS);

  const last = await publish(++n);
  await within(Promise.all(seen.map((s) => s.reached(last))), 10_000, "every client got the last publication");
  for (const s of seen) {
    expect(s.gaps).toBe(0);
    expect(s.recovered).toBe(1);
    expect(s.offsets).toEqual(run(s.start + 1, last - s.start));
  }
}, 30_000);
