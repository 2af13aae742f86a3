import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { createApp, type Sinal } from "../src/app.ts";
import { mintToken } from "../src/auth/tokens.ts";
import { loadConfig } from "../src/config.ts";
import { createLogger } from "../src/log.ts";
import { openSqliteStore } from "../src/store/sqlite-store.ts";
import type { Store } from "../src/store/store.ts";
import { Client, SECRET } from "./helpers.ts";

// A store whose commits fail (a full disk, an I/O error) under a real server: work nobody awaits
// (joins, leaves) fails, is logged with a code and counted, and the process keeps serving.

let failing = true;
let sinal: Sinal;
let store: Store;
let dir: string;
let url: string;
let http: string;
const logs: Record<string, unknown>[] = [];

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "sinal-failures-"));
  const real = openSqliteStore(join(dir, "sinal.db"));
  const log = real.channelLog;
  // The room history's commits fail while `failing` is set, inside the store, as a full disk would.
  const channelLog: typeof log = {
    position: (t) => log.position(t),
    readFrom: (...a) => log.readFrom(...a),
    reset: (t, e) => log.reset(t, e),
    trim: (b, t) => log.trim(b, t),
    commit: (entries, keep, assign) => (failing ? Promise.reject(new Error("SQLITE_FULL: database or disk is full")) : log.commit(entries, keep, assign)),
  };
  store = Object.assign(Object.create(Object.getPrototypeOf(real)), real, { channelLog }) as Store;
  const config = loadConfig({ JWT_SECRET: SECRET, HOST: "127.0.0.1", PORT: "0", LOG_LEVEL: "info", DATABASE_URL: `sqlite:${join(dir, "sinal.db")}` });
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
  rmSync(dir, { recursive: true, force: true });
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

test("joins and leaves whose room commit fails are logged and counted; the process keeps serving everyone", async () => {
  const alice = await open("alice");
  // user_joined is published in the background: its commit fails.
  expect(await ask(alice, { type: "subscribe", channel: "room:r1" }, 1)).toMatchObject({ ok: true });
  // A message is answered with the failure; the connection stays.
  const sent = await ask(alice, { type: "message", room: "r1", content: "hello" }, 2);
  expect(sent).toMatchObject({ ok: false, error: { code: "internal" } });
  alice.close();
  await alice.closed;
  // user_left fails as well. Whatever failed, another client is served.
  const bob = await open("bob");
  expect(await ask(bob, { type: "subscribe", channel: "dept:d1" }, 1)).toMatchObject({ ok: true });
  expect(await ask(bob, { type: "publish", channel: "dept:d1", event: "e", data: 1 }, 2)).toMatchObject({ ok: true, offset: 1 });
  const metrics = await (await fetch(`${http}/metrics`)).text();
  expect(metrics).toMatch(/sinal_background_failures_total\{source="room_join"\} [1-9]/);
  expect(metrics).toMatch(/sinal_background_failures_total\{source="room_leave"\} [1-9]/);
  expect(logs.some((l) => l.code === "room_join_failed" && l.level === 50)).toBe(true);
  // Once the store works again, so do rooms.
  failing = false;
  expect(await ask(bob, { type: "subscribe", channel: "room:r2" }, 3)).toMatchObject({ ok: true });
  const message = await ask(bob, { type: "message", room: "r2", content: "back" }, 4);
  expect(message).toMatchObject({ ok: true, message: { content: "back" } });
  bob.close();
});
