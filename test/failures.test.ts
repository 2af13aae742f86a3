import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { createApp, type Sinal } from "../src/app.ts";
import { createApiKey } from "../src/auth/api-keys.ts";
import { mintToken } from "../src/auth/tokens.ts";
import { loadConfig } from "../src/config.ts";
import { createLogger } from "../src/log.ts";
import type { Store } from "../src/store/store.ts";
import { Client, openServerStore, removeServerDir, SECRET, serverDatabaseUrl } from "./helpers.ts";

// A store that fails (a full disk, an I/O error) under a real server: room commits and reads of
// pending notifications throw. What a client asked for is answered with the error; work nobody
// awaits (pushing pending notifications at connect) is logged with a code and counted; the
// process keeps serving everyone.

let failing = false;
let sinal: Sinal;
let store: Store;
let dir: string;
let url: string;
let http: string;
const logs: Record<string, unknown>[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "sinal-failures-"));
  // The store of this run (sqlite, or PostgreSQL with SINAL_STORE=postgres), wrapped to fail.
  const real = await openServerStore(dir);
  const log = real.channelLog;
  // The room history's commits fail while `failing` is set, inside the store, as a full disk would.
  const channelLog: typeof log = {
    position: (t) => log.position(t),
    readFrom: (...a) => log.readFrom(...a),
    reset: (t, e) => log.reset(t, e),
    trim: (b, t) => log.trim(b, t),
    commit: (entries, keep) => (failing ? Promise.reject(new Error("SQLITE_FULL: database or disk is full")) : log.commit(entries, keep)),
  };
  const notes = real.notifications;
  const notifications = Object.assign(Object.create(Object.getPrototypeOf(notes)), notes, {
    pending: (tenant: string, user: string, limit: number) => (failing ? Promise.reject(new Error("SQLITE_IOERR: disk I/O error")) : notes.pending(tenant, user, limit)),
  }) as typeof notes;
  store = Object.assign(Object.create(Object.getPrototypeOf(real)), real, { channelLog, notifications }) as Store;
  const config = loadConfig({ JWT_SECRET: SECRET, HOST: "127.0.0.1", PORT: "0", LOG_LEVEL: "info", DATABASE_URL: await serverDatabaseUrl(dir) });
  const sink = new Writable({
    write(chunk, _enc, done) {
      for (const line of String(chunk).split("\n")) if (line) logs.push(JSON.parse(line));
      done();
    },
  });
  sinal = createApp({ config, store, logger: createLogger("info", sink) });
  sinal.app.listen({ port: 0, hostname: "127.0.0.1", reusePort: false });
  url = `ws://127.0.0.1:${sinal.app.server!.port}/ws`;
  http = `http://127.0.0.1:${sinal.app.server!.port}`;
});
afterAll(async () => {
  await sinal.stop();
  await store.close();
  await removeServerDir(dir);
});

/** Sends a frame and returns its reply, passing over the publications that come first. */
async function ask(c: Client, frame: Record<string, unknown>, id: number): Promise<Record<string, any>> {
  c.send({ ...frame, id });
  for (;;) {
    const f = await c.next();
    if (f.type === "reply" && f.id === id) return f;
  }
}

async function open(user: string): Promise<Client> {
  const token = mintToken(SECRET, { tenant: "acme", user, ttlSec: 600, subChannels: ["room:*", "dept:*"], pubChannels: ["dept:*"] });
  const { client } = await Client.connect(`${url}?token=${token}`);
  return client;
}

test("while the store fails, requests get the error, background work is logged and counted, and the process keeps serving", async () => {
  const key = (await createApiKey(store, "acme")).key;
  // A notification for carol while she is away: stored, pending.
  const sent = await fetch(`${http}/v1/notifications`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify({ user: "carol", category: "c", title: "t", message: "m" }),
  });
  expect(sent.status).toBe(200);
  failing = true;
  const alice = await open("alice");
  expect(await ask(alice, { type: "subscribe", channel: "room:r1" }, 1)).toMatchObject({ ok: true });
  // A message's commit fails: answered with the error; the connection stays.
  expect(await ask(alice, { type: "message", room: "r1", content: "hello" }, 2)).toMatchObject({ ok: false, error: { code: "internal" } });
  // Carol connects: pushing her pending notification fails in the background.
  const carol = await open("carol");
  await waitFor(() => logs.some((l) => l.code === "pending_notifications_failed" && l.level === 50));
  // Whatever failed, others are served.
  const bob = await open("bob");
  expect(await ask(bob, { type: "subscribe", channel: "dept:d1" }, 1)).toMatchObject({ ok: true });
  expect(await ask(bob, { type: "publish", channel: "dept:d1", event: "e", data: 1 }, 2)).toMatchObject({ ok: true, offset: 1 });
  const metrics = await (await fetch(`${http}/metrics`)).text();
  // Every connect asks the store for pending notifications: alice's, carol's and bob's all failed.
  expect(metrics).toMatch(/sinal_background_failures_total\{source="pending_notifications"\} 3/);
  // Once the store works again, so do rooms, and carol's notification reaches her at her next connect.
  failing = false;
  expect(await ask(alice, { type: "message", room: "r1", content: "back" }, 3)).toMatchObject({ ok: true, message: { content: "back" } });
  carol.close();
  await carol.closed;
  const again = await open("carol");
  expect(await again.next()).toMatchObject({ type: "pub", channel: "user:carol", event: "notification", data: { title: "t" } });
  for (const c of [alice, bob, again]) c.close();
});

async function waitFor(condition: () => boolean, ms = 2000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms`);
    await Bun.sleep(10);
  }
}
