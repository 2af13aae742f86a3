import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { ConfigError, loadConfig } from "../src/config.ts";
import { Client, post, startServer, type Frame, type TestServer } from "./helpers.ts";
import { RawClient } from "./support/raw-client.ts";

// Channel namespaces an operator defines (SINAL_NAMESPACES), over real sockets: a CRM's own
// `campaign` and `whatsapp` channels, a latest-value `ticker`, a changed built-in, and the refusals.

const NAMESPACES = JSON.stringify([
  { name: "campaign", history: "50,1h" },
  { name: "whatsapp", history: "100,1h", client_publish: true, join_leave: true },
  { name: "ticker", history: "5,1m", latest_value: true },
  { name: "dept", client_publish: false },
]);

let server: TestServer;
let key: string;
beforeAll(async () => {
  // Small queue bounds and a quick sweep, so the slow-reader test falls behind in a few MB.
  server = await startServer({ SINAL_NAMESPACES: NAMESPACES, SLOW_CONSUMER_BYTES: String(256 * 1024), CONFLATE_AFTER_BYTES: String(16 * 1024), SWEEP_INTERVAL_MS: "20" });
  key = await server.apiKey("acme");
});
afterAll(() => server.stop());

async function replyTo(c: Client, frame: Record<string, unknown>, id: number): Promise<Frame> {
  c.send({ ...frame, id });
  for (;;) {
    const f = await c.next();
    if (f.type === "reply" && f.id === id) return f;
  }
}

describe("configured namespaces", () => {
  test("a campaign channel works end to end: REST publish, live delivery, history and recovery", async () => {
    const c = await Client.open(server, { user: "mkt", subChannels: ["campaign:*", "campaign"] });
    const reply = await replyTo(c, { type: "subscribe", channel: "campaign:spring" }, 1);
    expect(reply).toMatchObject({ ok: true, channel: "campaign:spring", offset: 0, recovered: false });
    const res = await post(server, "/v1/publish", { channel: "campaign:spring", event: "lead", data: { n: 1 } }, key);
    expect(res.status).toBe(200);
    expect(await c.next()).toMatchObject({ type: "pub", channel: "campaign:spring", event: "lead", data: { n: 1 }, offset: 1 });
    c.close();
    await post(server, "/v1/publish", { channel: "campaign:spring", event: "lead", data: { n: 2 } }, key);
    const again = await Client.open(server, { user: "mkt", subChannels: ["campaign:*", "campaign"] });
    expect(await replyTo(again, { type: "subscribe", channel: "campaign:spring", since: { epoch: reply.epoch, offset: 1 } }, 1)).toMatchObject({ recovered: true, offset: 2 });
    expect(await again.next()).toMatchObject({ event: "lead", data: { n: 2 }, offset: 2 });
    // The bare namespace name is a channel too.
    expect(await replyTo(again, { type: "subscribe", channel: "campaign" }, 2)).toMatchObject({ ok: true, channel: "campaign" });
    again.close();
  });

  test("clients publish only where the namespace allows it, with a grant, and their publications say who sent them", async () => {
    const grants = { subChannels: ["whatsapp:*", "campaign:*", "dept:*"], pubChannels: ["whatsapp:*", "campaign:*", "dept:*"] };
    const agent = await Client.open(server, { user: "agent", name: "Ana", ...grants });
    const watcher = await Client.open(server, { user: "boss", ...grants });
    expect(await replyTo(watcher, { type: "subscribe", channel: "whatsapp:5511" }, 1)).toMatchObject({ ok: true });
    expect(await replyTo(agent, { type: "subscribe", channel: "whatsapp:5511" }, 1)).toMatchObject({ ok: true });
    // join_leave: the watcher sees the agent join (ephemeral, no offset), after its own join.
    expect(await watcher.next()).toMatchObject({ event: "user_joined", data: { user: "boss" } });
    const joined = await watcher.next();
    expect(joined).toMatchObject({ event: "user_joined", channel: "whatsapp:5511", data: { channel: "whatsapp:5511", user: "agent" } });
    expect(joined.offset).toBeUndefined();
    expect(await replyTo(agent, { type: "publish", channel: "whatsapp:5511", event: "text", data: { body: "hi" } }, 2)).toMatchObject({ ok: true, offset: 1 });
    expect(await watcher.next()).toMatchObject({ event: "text", data: { body: "hi" }, from: { user: "agent", name: "Ana" }, offset: 1 });
    // campaign has no client_publish; dept's was switched off by the operator.
    for (const channel of ["campaign:spring", "dept:sales"]) {
      const refused = await replyTo(agent, { type: "publish", channel, event: "text", data: 1 }, 3);
      expect(refused).toMatchObject({ ok: false, error: { code: "forbidden" } });
      expect(refused.error.message).toContain("client_publish");
    }
    agent.close();
    watcher.close();
  });

  test("a latest-value namespace conflates for a client that stops reading, as feeds are, instead of closing it", async () => {
    const raw = await RawClient.open(server, await server.token({ user: "slow-ticker", subChannels: ["ticker:*"] }));
    raw.send({ type: "subscribe", channel: "ticker:btc", id: 1 });
    await raw.until(() => raw.frames.some((f) => f.id === 1));
    raw.stopReading();
    const filler = "x".repeat(4000);
    // ~8 MB of updates of one document: far past SLOW_CONSUMER_BYTES (1 MiB) were they kept.
    for (let from = 1; from <= 2000; from += 100) {
      const items = Array.from({ length: 100 }, (_, i) => ({ channel: "ticker:btc", event: "price", data: { id: "btc", n: from + i, filler } }));
      expect((await post(server, "/v1/publish", items, key)).status).toBe(200);
    }
    raw.readAgain();
    await raw.until(() => raw.frames.at(-1)?.data?.n === 2000);
    expect(raw.closeCode).toBeNull();
    const updates = raw.frames.filter((f) => f.event === "price");
    expect(updates.length).toBeLessThan(2000);
    expect(updates.at(-1)!.conflated).toBeGreaterThan(0);
    raw.destroy();
  });

  test("a name that is neither built in nor configured is unknown_channel, for clients and backends", async () => {
    const c = await Client.open(server, { user: "x", subChannels: ["*"] });
    expect(await replyTo(c, { type: "subscribe", channel: "foo:1" }, 1)).toMatchObject({ ok: false, error: { code: "unknown_channel" } });
    c.close();
    const res = await post(server, "/v1/publish", { channel: "foo:1", event: "e", data: 1 }, key);
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ error: { code: "unknown_channel" } });
  });

  test("built-ins keep their id rules: global takes no id, room needs one", async () => {
    const c = await Client.open(server, { user: "y", subChannels: ["*"] });
    expect(await replyTo(c, { type: "subscribe", channel: "global:1" }, 1)).toMatchObject({ ok: false, error: { code: "unknown_channel" } });
    expect(await replyTo(c, { type: "subscribe", channel: "room" }, 2)).toMatchObject({ ok: false, error: { code: "unknown_channel" } });
    c.close();
  });
});

describe("bad namespace configuration stops the start, naming the namespace and the key", () => {
  const base = { JWT_SECRET: "x".repeat(32) };
  const refused = (env: Record<string, string>): string => {
    try {
      loadConfig({ ...base, ...env });
    } catch (err) {
      if (err instanceof ConfigError) return err.message;
      throw err;
    }
    throw new Error("accepted");
  };

  test("an unknown option", () => {
    expect(refused({ SINAL_NAMESPACES: '[{"name":"campaign","histroy":"1,1h"}]' })).toBe(
      'SINAL_NAMESPACES: namespace "campaign": unknown option "histroy" (allowed: history, client_publish, latest_value, join_leave, presence, members_only)',
    );
  });

  test("a wrong value", () => {
    expect(refused({ SINAL_NAMESPACES: '[{"name":"campaign","history":"lots"}]' })).toContain('namespace "campaign": history: expected "<size>,<age>"');
    expect(refused({ SINAL_NAMESPACES: '[{"name":"campaign","client_publish":"yes"}]' })).toContain('namespace "campaign": client_publish must be true or false');
  });

  test("a bad name, bad JSON, or both variables", () => {
    expect(refused({ SINAL_NAMESPACES: '[{"name":"Campaign"}]' })).toContain("SINAL_NAMESPACES[0].name must match");
    expect(refused({ SINAL_NAMESPACES: "[{" })).toContain("SINAL_NAMESPACES: not valid JSON");
    expect(refused({ SINAL_NAMESPACES: "[]", SINAL_NAMESPACES_FILE: "/nonexistent" })).toContain("not both");
    expect(refused({ SINAL_NAMESPACES_FILE: "/nonexistent/ns.json" })).toContain("SINAL_NAMESPACES_FILE: cannot read /nonexistent/ns.json");
  });
});
