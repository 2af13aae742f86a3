import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { Client, handshake, post, startServer, type Frame, type TestServer } from "./helpers.ts";

/** How long "nothing arrives" is watched for; the positive checks after it are event-based. */
const QUIET_MS = 150;

let server: TestServer;
let acmeKey: string;
let globexKey: string;
const clients: Client[] = [];

beforeAll(async () => {
  server = await startServer();
  acmeKey = await server.apiKey("acme");
  globexKey = await server.apiKey("globex");
});
afterAll(() => server.stop());
afterEach(() => {
  for (const client of clients.splice(0)) client.close();
});

/** A client of `tenant` subscribed to `channel`; returns it with the channel's epoch. */
async function subscriber(on: TestServer, channel: string, tenant = "acme", user = "u1"): Promise<{ client: Client; epoch: string }> {
  const client = await Client.open(on, { tenant, user, subChannels: ["*"] });
  clients.push(client);
  const reply = await client.request({ type: "subscribe", channel });
  expect(reply).toMatchObject({ ok: true, channel });
  return { client, epoch: reply.epoch };
}

/** Asserts the next frame is the publication of `event` on `channel` at `offset`, and returns it. */
async function expectPub(client: Client, channel: string, event: string, offset: number, data?: unknown): Promise<Frame> {
  const frame = await client.next();
  expect(frame).toMatchObject({ type: "pub", channel, event, offset });
  if (data !== undefined) expect(frame.data).toEqual(data);
  return frame;
}

function get(on: TestServer, path: string, credential?: string, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${on.http}${path}`, { headers: { ...(credential ? { authorization: `Bearer ${credential}` } : {}), ...headers } });
}

/** The status and JSON body of an answer, for one `toEqual`. */
async function answer(res: Response): Promise<{ status: number; body: unknown }> {
  return { status: res.status, body: await res.json() };
}

const apiError = (code: string, message: unknown = expect.any(String)) => ({ error: { code, message } });

describe("POST /v1/publish", () => {
  test("publishes one item and answers {offset, epoch}; a subscriber receives the pub frame", async () => {
    const { client, epoch } = await subscriber(server, "dept:single");
    const res = await post(server, "/v1/publish", { channel: "dept:single", event: "new_message", data: { text: "hi" } }, acmeKey);
    expect(res.headers.get("content-type")).toStartWith("application/json");
    expect(await answer(res)).toEqual({ status: 200, body: { offset: 1, epoch } });
    const pub = await expectPub(client, "dept:single", "new_message", 1, { text: "hi" });
    expect(pub.epoch).toBe(epoch);
    expect(Object.keys(pub).sort()).toEqual(["channel", "data", "epoch", "event", "offset", "ts", "type"]);
  });

  test("a batch answers one result per item, in order, with consecutive offsets", async () => {
    const { client, epoch } = await subscriber(server, "dept:batch");
    const items = [1, 2, 3, 4, 5].map((n) => ({ channel: "dept:batch", event: "tick", data: { n } }));
    const res = await post(server, "/v1/publish", items, acmeKey);
    expect(await answer(res)).toEqual({ status: 200, body: [1, 2, 3, 4, 5].map((offset) => ({ offset, epoch })) });
    for (const n of [1, 2, 3, 4, 5]) await expectPub(client, "dept:batch", "tick", n, { n });
  });

  test("a batch of one answers with an array of one", async () => {
    const { epoch } = await subscriber(server, "dept:batch1");
    const res = await post(server, "/v1/publish", [{ channel: "dept:batch1", event: "tick", data: 1 }], acmeKey);
    expect(await answer(res)).toEqual({ status: 200, body: [{ offset: 1, epoch }] });
  });

  test("a batch spanning channels gives each channel its own offsets", async () => {
    const a = await subscriber(server, "dept:span-a");
    const b = await subscriber(server, "dept:span-b", "acme", "u2");
    const items = ["dept:span-a", "dept:span-b", "dept:span-a"].map((channel) => ({ channel, event: "tick", data: null }));
    const res = await post(server, "/v1/publish", items, acmeKey);
    expect(await answer(res)).toEqual({
      status: 200,
      body: [
        { offset: 1, epoch: a.epoch },
        { offset: 1, epoch: b.epoch },
        { offset: 2, epoch: a.epoch },
      ],
    });
    await expectPub(a.client, "dept:span-a", "tick", 1, null);
    await expectPub(a.client, "dept:span-a", "tick", 2, null);
    await expectPub(b.client, "dept:span-b", "tick", 1, null);
  });

  test("refuses a batch of 1001 items with 400 and publishes none of them", async () => {
    const { client } = await subscriber(server, "dept:big");
    const items = Array.from({ length: 1001 }, (_, n) => ({ channel: "dept:big", event: "tick", data: { n } }));
    const res = await post(server, "/v1/publish", items, acmeKey);
    expect(await answer(res)).toEqual({ status: 400, body: apiError("bad_request", "a batch holds at most 1000 publications") });
    expect(await client.silentFor(QUIET_MS)).toBe(true);
    // The channel's offsets were not consumed either: the next publication is offset 1.
    await post(server, "/v1/publish", { channel: "dept:big", event: "after", data: 0 }, acmeKey);
    await expectPub(client, "dept:big", "after", 1);
  });

  test("accepts a batch of exactly 1000 items", async () => {
    const items = Array.from({ length: 1000 }, (_, n) => ({ channel: "dept:thousand", event: "tick", data: n }));
    const res = await post(server, "/v1/publish", items, acmeKey);
    expect(res.status).toBe(200);
    const body = (await res.json()) as { offset: number }[];
    expect(body.map((r) => r.offset)).toEqual(Array.from({ length: 1000 }, (_, n) => n + 1));
  });

  test("refuses an empty batch with 400", async () => {
    expect(await answer(await post(server, "/v1/publish", [], acmeKey))).toEqual({ status: 400, body: apiError("bad_request") });
  });

  test("one bad item refuses the whole batch with 400 naming its index, and nothing is published", async () => {
    const { client } = await subscriber(server, "dept:partial");
    const items = [
      { channel: "dept:partial", event: "tick", data: 0 },
      { channel: "dept:partial", event: "tick", data: 1 },
      { channel: "dept:partial", event: 42, data: 2 },
      { channel: "dept:partial", event: "tick", data: 3 },
    ];
    const res = await post(server, "/v1/publish", items, acmeKey);
    const { status, body } = await answer(res);
    expect(status).toBe(400);
    expect(body).toEqual(apiError("bad_request", expect.stringContaining("[2]")));
    expect((body as any).error.message).toContain("event");
    expect(await client.silentFor(QUIET_MS)).toBe(true);
    await post(server, "/v1/publish", { channel: "dept:partial", event: "after", data: 0 }, acmeKey);
    await expectPub(client, "dept:partial", "after", 1);
  });

  test("an unknown channel kind inside a batch is refused with unknown_channel naming the item", async () => {
    const { client } = await subscriber(server, "dept:partial2");
    const items = [
      { channel: "dept:partial2", event: "tick", data: 0 },
      { channel: "lobby:1", event: "tick", data: 1 },
    ];
    const res = await post(server, "/v1/publish", items, acmeKey);
    expect(await answer(res)).toEqual({ status: 400, body: apiError("unknown_channel", expect.stringMatching(/^\[1\]\.channel: .*lobby:1/)) });
    expect(await client.silentFor(QUIET_MS)).toBe(true);
  });

  describe("idempotency_key", () => {
    test("a repeated key returns the first answer and publishes once", async () => {
      const { client, epoch } = await subscriber(server, "dept:idem");
      const item = { channel: "dept:idem", event: "tick", data: { n: 1 }, idempotency_key: "order-1" };
      const first = await answer(await post(server, "/v1/publish", item, acmeKey));
      expect(first).toEqual({ status: 200, body: { offset: 1, epoch } });
      const again = await answer(await post(server, "/v1/publish", { ...item, data: { n: 2 } }, acmeKey));
      expect(again).toEqual(first);

      await expectPub(client, "dept:idem", "tick", 1, { n: 1 });
      expect(await client.silentFor(QUIET_MS)).toBe(true);
      await post(server, "/v1/publish", { channel: "dept:idem", event: "after", data: 0 }, acmeKey);
      await expectPub(client, "dept:idem", "after", 2);
    });

    test("a key repeated inside one batch answers the first result for both items", async () => {
      const { client, epoch } = await subscriber(server, "dept:idem-batch");
      const items = [
        { channel: "dept:idem-batch", event: "tick", data: 1, idempotency_key: "b-1" },
        { channel: "dept:idem-batch", event: "tick", data: 2 },
        { channel: "dept:idem-batch", event: "tick", data: 3, idempotency_key: "b-1" },
      ];
      const res = await post(server, "/v1/publish", items, acmeKey);
      expect(await answer(res)).toEqual({
        status: 200,
        body: [
          { offset: 1, epoch },
          { offset: 2, epoch },
          { offset: 1, epoch },
        ],
      });
      await expectPub(client, "dept:idem-batch", "tick", 1, 1);
      await expectPub(client, "dept:idem-batch", "tick", 2, 2);
      expect(await client.silentFor(QUIET_MS)).toBe(true);
    });

    test("the same key in two tenants is independent", async () => {
      const acme = await subscriber(server, "dept:idem-t", "acme");
      const globex = await subscriber(server, "dept:idem-t", "globex");
      const item = { channel: "dept:idem-t", event: "tick", data: "x", idempotency_key: "shared-key" };
      expect(await answer(await post(server, "/v1/publish", item, acmeKey))).toEqual({ status: 200, body: { offset: 1, epoch: acme.epoch } });
      expect(await answer(await post(server, "/v1/publish", item, globexKey))).toEqual({ status: 200, body: { offset: 1, epoch: globex.epoch } });
      await expectPub(acme.client, "dept:idem-t", "tick", 1, "x");
      await expectPub(globex.client, "dept:idem-t", "tick", 1, "x");
      expect(await acme.client.silentFor(QUIET_MS)).toBe(true);
      expect(await globex.client.silentFor(0)).toBe(true);
    });

    test("concurrent identical requests publish once and all get the same answer", async () => {
      const { client, epoch } = await subscriber(server, "dept:idem-race");
      const item = { channel: "dept:idem-race", event: "tick", data: 1, idempotency_key: "race-1" };
      const answers = await Promise.all(Array.from({ length: 8 }, async () => answer(await post(server, "/v1/publish", item, acmeKey))));
      for (const a of answers) expect(a).toEqual({ status: 200, body: { offset: 1, epoch } });
      await expectPub(client, "dept:idem-race", "tick", 1, 1);
      expect(await client.silentFor(QUIET_MS)).toBe(true);
    });

    test("a refused request does not consume its key", async () => {
      const { client, epoch } = await subscriber(server, "dept:idem-bad");
      const bad = await post(server, "/v1/publish", { channel: "dept:idem-bad", event: "", data: 1, idempotency_key: "k-bad" }, acmeKey);
      expect(bad.status).toBe(400);
      const good = await post(server, "/v1/publish", { channel: "dept:idem-bad", event: "tick", data: 1, idempotency_key: "k-bad" }, acmeKey);
      expect(await answer(good)).toEqual({ status: 200, body: { offset: 1, epoch } });
      await expectPub(client, "dept:idem-bad", "tick", 1, 1);
    });
  });

  describe("refuses bad bodies", () => {
    test("malformed JSON with a JSON content type gets 400 bad_request", async () => {
      const res = await post(server, "/v1/publish", '{"channel": "dept:1", ', acmeKey);
      expect(await answer(res)).toEqual({ status: 400, body: apiError("bad_request", "body is not valid JSON") });
    });

    test("malformed JSON sent as text/plain gets 400 bad_request", async () => {
      const res = await post(server, "/v1/publish", "{nope", acmeKey, { "content-type": "text/plain" });
      expect(await answer(res)).toEqual({ status: 400, body: apiError("bad_request", "body is not valid JSON") });
    });

    test("an empty body gets 400 bad_request", async () => {
      const res = await post(server, "/v1/publish", "", acmeKey);
      expect(await answer(res)).toEqual({ status: 400, body: apiError("bad_request", "body is empty; expected JSON") });
    });

    test("malformed JSON without a credential gets 401, not 400", async () => {
      expect(await answer(await post(server, "/v1/publish", "{nope"))).toEqual({ status: 401, body: apiError("unauthorized") });
    });

    // curl -d sends form-urlencoded and scripts often send no content type at all.
    for (const contentType of ["text/plain", "application/x-www-form-urlencoded", "application/octet-stream", null]) {
      test(`valid JSON sent with content type ${contentType ?? "(none)"} is published`, async () => {
        const channel = `dept:ct-${contentType?.replace(/\W/g, "-") ?? "none"}`;
        const { client, epoch } = await subscriber(server, channel);
        const res = await fetch(`${server.http}/v1/publish`, {
          method: "POST",
          headers: { authorization: `Bearer ${acmeKey}`, ...(contentType ? { "content-type": contentType } : {}) },
          body: new TextEncoder().encode(JSON.stringify({ channel, event: "tick", data: { ok: true } })),
        });
        expect(await answer(res)).toEqual({ status: 200, body: { offset: 1, epoch } });
        await expectPub(client, channel, "tick", 1, { ok: true });
      });
    }

    const wrongShapes: [string, unknown, string][] = [
      ["a numeric channel", { channel: 42, event: "tick", data: 1 }, "channel"],
      ["a numeric event", { channel: "dept:1", event: 7, data: 1 }, "event"],
      ["an event with spaces", { channel: "dept:1", event: "new message", data: 1 }, "event"],
      ["a missing event", { channel: "dept:1", data: 1 }, "event"],
      ["a missing channel", { event: "tick", data: 1 }, "channel"],
      ["a missing data", { channel: "dept:1", event: "tick" }, "data"],
      ["a numeric idempotency_key", { channel: "dept:1", event: "tick", data: 1, idempotency_key: 5 }, "idempotency_key"],
      ["a string body", "just text", "body"],
      ["a number body", 12, "body"],
    ];
    for (const [what, body, field] of wrongShapes) {
      test(`${what} gets 400 bad_request naming ${field}`, async () => {
        const res = await post(server, "/v1/publish", typeof body === "string" ? JSON.stringify(body) : body, acmeKey);
        expect(await answer(res)).toEqual({ status: 400, body: apiError("bad_request", expect.stringContaining(field)) });
      });
    }

    test("a channel name that breaks the grammar gets 400 bad_request", async () => {
      const res = await post(server, "/v1/publish", { channel: "Room:1", event: "tick", data: 1 }, acmeKey);
      expect(await answer(res)).toEqual({ status: 400, body: apiError("bad_request", expect.stringContaining("Room:1")) });
    });

    test("an unknown channel kind gets 400 unknown_channel", async () => {
      const res = await post(server, "/v1/publish", { channel: "lobby:1", event: "tick", data: 1 }, acmeKey);
      expect(await answer(res)).toEqual({ status: 400, body: apiError("unknown_channel", expect.stringContaining("lobby:1")) });
    });

    test("data over MAX_FRAME_BYTES gets 413 payload_too_large and is not published", async () => {
      const { client } = await subscriber(server, "dept:huge");
      const res = await post(server, "/v1/publish", { channel: "dept:huge", event: "tick", data: "x".repeat(64 * 1024 + 1) }, acmeKey);
      expect(await answer(res)).toEqual({ status: 413, body: apiError("payload_too_large") });
      expect(await client.silentFor(QUIET_MS)).toBe(true);
    });

    test("data just under MAX_FRAME_BYTES is published", async () => {
      const { client } = await subscriber(server, "dept:large");
      const data = "x".repeat(60 * 1024);
      const res = await post(server, "/v1/publish", { channel: "dept:large", event: "tick", data }, acmeKey);
      expect(res.status).toBe(200);
      await expectPub(client, "dept:large", "tick", 1, data);
    });
  });

  describe("authentication", () => {
    const item = { channel: "dept:auth", event: "tick", data: 1 };

    test("refuses a request without Authorization with 401", async () => {
      expect(await answer(await post(server, "/v1/publish", item))).toEqual({ status: 401, body: apiError("unauthorized") });
    });

    test("accepts the bearer scheme in any case", async () => {
      const res = await post(server, "/v1/publish", item, undefined, { authorization: `bearer ${acmeKey}` });
      expect(res.status).toBe(200);
    });

    test("refuses a non-bearer Authorization with 401", async () => {
      const res = await post(server, "/v1/publish", item, undefined, { authorization: `Basic ${btoa("a:b")}` });
      expect(await answer(res)).toEqual({ status: 401, body: apiError("unauthorized") });
    });

    test("refuses an unknown API key with 401", async () => {
      const unknown = `sk_0123456789abcdef_${"A".repeat(43)}`;
      expect(await answer(await post(server, "/v1/publish", item, unknown))).toEqual({ status: 401, body: apiError("unauthorized", "unknown or revoked API key") });
    });

    test("refuses a known key id with a wrong secret with 401", async () => {
      const forged = acmeKey.slice(0, acmeKey.lastIndexOf("_") + 1) + "B".repeat(43);
      expect(await answer(await post(server, "/v1/publish", item, forged))).toEqual({ status: 401, body: apiError("unauthorized", "unknown or revoked API key") });
    });

    test("refuses a revoked API key with 401", async () => {
      const key = await server.apiKey("acme");
      expect((await post(server, "/v1/publish", item, key)).status).toBe(200);
      const id = /^sk_([0-9a-f]{16})_/.exec(key)![1]!;
      expect(await server.store.revokeApiKey(id, Date.now())).toBe(true);
      expect(await answer(await post(server, "/v1/publish", item, key))).toEqual({ status: 401, body: apiError("unauthorized", "unknown or revoked API key") });
    });

    test("another tenant's key publishes only into its own tenant", async () => {
      const acme = await subscriber(server, "dept:1", "acme");
      const globex = await subscriber(server, "dept:1", "globex");
      const res = await post(server, "/v1/publish", { channel: "dept:1", event: "tick", data: "from globex" }, globexKey);
      expect(await answer(res)).toEqual({ status: 200, body: { offset: 1, epoch: globex.epoch } });
      await expectPub(globex.client, "dept:1", "tick", 1, "from globex");
      expect(await acme.client.silentFor(QUIET_MS)).toBe(true);
    });

    test("an admin JWT publishes into its own tenant", async () => {
      const { client, epoch } = await subscriber(server, "dept:admin");
      const token = await server.token({ tenant: "acme", user: "ops", roles: ["admin"] });
      const res = await post(server, "/v1/publish", { channel: "dept:admin", event: "tick", data: 1 }, token);
      expect(await answer(res)).toEqual({ status: 200, body: { offset: 1, epoch } });
      await expectPub(client, "dept:admin", "tick", 1, 1);
    });

    test("refuses a JWT without the admin role with 403", async () => {
      const token = await server.token({ tenant: "acme", user: "u1", roles: ["agent"], pubChannels: ["*"] });
      expect(await answer(await post(server, "/v1/publish", item, token))).toEqual({ status: 403, body: apiError("forbidden") });
    });

    test("refuses an expired admin JWT with 401", async () => {
      const token = await server.token({ tenant: "acme", user: "ops", roles: ["admin"], ttlSec: -60 });
      expect(await answer(await post(server, "/v1/publish", item, token))).toEqual({ status: 401, body: apiError("unauthorized", "token expired") });
    });

    test("refuses an admin JWT signed with another secret with 401", async () => {
      const { mintToken } = await import("../src/auth/tokens.ts");
      const token = await mintToken("another-secret-that-is-long-enough-for-hs256", { tenant: "acme", user: "ops", ttlSec: 60, roles: ["admin"] });
      expect(await answer(await post(server, "/v1/publish", item, token))).toEqual({ status: 401, body: apiError("unauthorized") });
    });
  });
});

describe("SINAL_API_KEYS", () => {
  let envServer: TestServer;
  const envKey = "acme-env-key-0123456789";
  beforeAll(async () => (envServer = await startServer({ SINAL_API_KEYS: `acme:${envKey}, globex:globex-env-key-987654` })));
  afterAll(() => envServer.stop());

  test("a key from the environment publishes into its tenant", async () => {
    const { client, epoch } = await subscriber(envServer, "dept:env");
    const res = await post(envServer, "/v1/publish", { channel: "dept:env", event: "tick", data: 1 }, envKey);
    expect(await answer(res)).toEqual({ status: 200, body: { offset: 1, epoch } });
    await expectPub(client, "dept:env", "tick", 1, 1);
  });

  test("the second environment key belongs to its own tenant", async () => {
    const acme = await subscriber(envServer, "dept:env2", "acme");
    const globex = await subscriber(envServer, "dept:env2", "globex");
    const res = await post(envServer, "/v1/publish", { channel: "dept:env2", event: "tick", data: 2 }, "globex-env-key-987654");
    expect(res.status).toBe(200);
    await expectPub(globex.client, "dept:env2", "tick", 1, 2);
    expect(await acme.client.silentFor(QUIET_MS)).toBe(true);
  });

  test("stored keys keep working beside environment keys", async () => {
    const key = await envServer.apiKey("acme");
    expect((await post(envServer, "/v1/publish", { channel: "dept:env3", event: "tick", data: 1 }, key)).status).toBe(200);
  });

  test("a near miss of an environment key is refused with 401", async () => {
    const res = await post(envServer, "/v1/publish", { channel: "dept:env", event: "tick", data: 1 }, `${envKey}x`);
    expect(res.status).toBe(401);
  });
});

describe("POST /emit-event", () => {
  test("roulette_update routes to roulette:<data.roulette_id>", async () => {
    const { client, epoch } = await subscriber(server, "roulette:r7");
    const data = { roulette_id: "r7", numbers: [3, 17] };
    const res = await post(server, "/emit-event", { event: "roulette_update", data }, acmeKey);
    expect(await answer(res)).toEqual({ status: 200, body: { offset: 1, epoch } });
    await expectPub(client, "roulette:r7", "roulette_update", 1, data);
  });

  test("a numeric roulette_id routes too", async () => {
    const { client } = await subscriber(server, "roulette:42");
    const res = await post(server, "/emit-event", { event: "roulette_update", data: { roulette_id: 42 } }, acmeKey);
    expect(res.status).toBe(200);
    await expectPub(client, "roulette:42", "roulette_update", 1, { roulette_id: 42 });
  });

  test("strategy_update routes to strategy:<data.roulette_id>", async () => {
    const { client, epoch } = await subscriber(server, "strategy:r7");
    const data = { roulette_id: "r7", strategy: "martingale" };
    const res = await post(server, "/emit-event", { event: "strategy_update", data }, acmeKey);
    expect(await answer(res)).toEqual({ status: 200, body: { offset: 1, epoch } });
    await expectPub(client, "strategy:r7", "strategy_update", 1, data);
  });

  test("an explicit channel wins over the default", async () => {
    const routed = await subscriber(server, "roulette:r8");
    const explicit = await subscriber(server, "dept:lobby", "acme", "u2");
    const res = await post(server, "/emit-event", { event: "roulette_update", channel: "dept:lobby", data: { roulette_id: "r8" } }, acmeKey);
    expect(await answer(res)).toEqual({ status: 200, body: { offset: 1, epoch: explicit.epoch } });
    await expectPub(explicit.client, "dept:lobby", "roulette_update", 1, { roulette_id: "r8" });
    expect(await routed.client.silentFor(QUIET_MS)).toBe(true);
  });

  test("another event without a channel gets 400", async () => {
    const res = await post(server, "/emit-event", { event: "new_message", data: { roulette_id: "r7" } }, acmeKey);
    expect(await answer(res)).toEqual({ status: 400, body: apiError("bad_request", expect.stringContaining("channel")) });
  });

  test("roulette_update without data.roulette_id gets 400", async () => {
    const res = await post(server, "/emit-event", { event: "roulette_update", data: { numbers: [1] } }, acmeKey);
    expect(await answer(res)).toEqual({ status: 400, body: apiError("bad_request", expect.stringContaining("roulette_id")) });
  });

  test("roulette_update without data gets 400", async () => {
    const res = await post(server, "/emit-event", { event: "roulette_update" }, acmeKey);
    expect(await answer(res)).toEqual({ status: 400, body: apiError("bad_request") });
  });

  test("a roulette_id that is not a valid channel id gets 400", async () => {
    const res = await post(server, "/emit-event", { event: "roulette_update", data: { roulette_id: "a b" } }, acmeKey);
    expect(await answer(res)).toEqual({ status: 400, body: apiError("bad_request") });
  });

  test("an array body gets 400", async () => {
    const res = await post(server, "/emit-event", [{ event: "roulette_update", data: { roulette_id: "r7" } }], acmeKey);
    expect(await answer(res)).toEqual({ status: 400, body: apiError("bad_request") });
  });

  test("needs a credential: 401 without one", async () => {
    const res = await post(server, "/emit-event", { event: "roulette_update", data: { roulette_id: "r7" } });
    expect(await answer(res)).toEqual({ status: 401, body: apiError("unauthorized") });
  });
});

describe("operations endpoints", () => {
  test("GET /health answers 200", async () => {
    expect(await answer(await get(server, "/health"))).toEqual({ status: 200, body: { status: "ok" } });
  });

  test("GET /ready answers 200 ready while store and broker are up", async () => {
    expect(await answer(await get(server, "/ready"))).toEqual({ status: 200, body: { status: "ready" } });
  });

  test("an unknown route answers 404 not_found", async () => {
    expect(await answer(await get(server, "/v1/nope"))).toEqual({ status: 404, body: apiError("not_found") });
    expect(await answer(await post(server, "/v2/publish", {}, acmeKey))).toEqual({ status: 404, body: apiError("not_found") });
  });

  test("GET /v1/stats needs a key", async () => {
    expect(await answer(await get(server, "/v1/stats"))).toEqual({ status: 401, body: apiError("unauthorized") });
  });

  test("GET /v1/stats answers node and tenant counts to an admin token", async () => {
    const fresh = await startServer();
    try {
      const key = await fresh.apiKey("acme");
      const { client } = await subscriber(fresh, "dept:stats");
      await subscriber(fresh, "dept:stats", "globex");
      await post(fresh, "/v1/publish", { channel: "dept:stats", event: "tick", data: 1 }, key);
      await expectPub(client, "dept:stats", "tick", 1);
      const res = await get(fresh, "/v1/stats", await fresh.token({ user: "ops", roles: ["admin"] }));
      expect(res.status).toBe(200);
      const body = (await res.json()) as any;
      // Each node answers for itself, named by its id; /metrics carries the same id.
      expect(body.tenant.node).toBe(body.node.id);
      expect(await (await fetch(`${fresh.http}/metrics`)).text()).toContain(`sinal_node_info{node="${body.node.id}",mode="single"} 1`);
      expect(body).toEqual({
        node: {
          id: expect.any(String),
          connections: 2,
          // acme and globex each: user:u1 (automatic) and dept:stats
          channels: 4,
          subscriptions: 2,
          publications: 1,
          deliveries: 1,
          dropped_sends: 0,
          publications_per_sec: expect.any(Number),
          deliveries_per_sec: expect.any(Number),
        },
        tenant: {
          id: "acme",
          node: expect.any(String),
          connections: 1,
          subscriptions: 1,
          publications: 1,
          deliveries: 1,
          dropped_sends: 0,
        },
      });
    } finally {
      for (const client of clients.splice(0)) client.close();
      await fresh.stop();
    }
  });
});

describe("GET /metrics", () => {
  /** The sample lines of one metric, as `labels -> value`. */
  function samples(text: string, metric: string): Map<string, number> {
    const out = new Map<string, number>();
    for (const line of text.split("\n")) {
      const match = /^([a-z_]+)(\{[^}]*\})? (\S+)$/.exec(line);
      if (match && match[1] === metric) out.set(match[2] ?? "", Number(match[3]));
    }
    return out;
  }

  test("is Prometheus text with connections, publications, deliveries, drops, rejected frames and auth failures", async () => {
    const fresh = await startServer();
    try {
      const key = await fresh.apiKey("acme");
      const { client } = await subscriber(fresh, "dept:m");
      await post(fresh, "/v1/publish", { channel: "dept:m", event: "tick", data: 1 }, key);
      await expectPub(client, "dept:m", "tick", 1);
      client.send({ type: "bogus" });
      expect(await client.next()).toEqual({ type: "error", error: { code: "unknown_type", message: expect.any(String) } });
      expect((await handshake(fresh.ws)).status).toBe(401);

      const res = await get(fresh, "/metrics");
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toStartWith("text/plain");
      const text = await res.text();
      expect(text).toContain("# TYPE sinal_connections gauge");
      expect(samples(text, "sinal_connections")).toEqual(new Map([['{tenant="acme"}', 1]]));
      expect(samples(text, "sinal_publications_total")).toEqual(new Map([['{tenant="acme"}', 1]]));
      expect(samples(text, "sinal_deliveries_total")).toEqual(new Map([['{tenant="acme"}', 1]]));
      expect(samples(text, "sinal_dropped_sends_total")).toEqual(new Map([['{tenant="acme"}', 0]]));
      expect(samples(text, "sinal_rejected_frames_total").get('{code="unknown_type"}')).toBe(1);
      const authFailures = [...samples(text, "sinal_auth_failures_total").values()].reduce((a, b) => a + b, 0);
      expect(authFailures).toBe(1);
      expect(samples(text, "sinal_auth_failures_total").get('{reason="missing"}')).toBe(1);
    } finally {
      for (const client of clients.splice(0)) client.close();
      await fresh.stop();
    }
  });

  test("a refused REST call counts as an auth failure", async () => {
    const fresh = await startServer();
    try {
      await post(fresh, "/v1/publish", { channel: "dept:1", event: "tick", data: 1 }, "sk_nope");
      const text = await (await get(fresh, "/metrics")).text();
      expect([...samples(text, "sinal_auth_failures_total").values()]).toEqual([1]);
    } finally {
      await fresh.stop();
    }
  });

  test("with METRICS_TOP_TENANTS=2 only the two busiest tenants get a label; the rest sum under _other", async () => {
    const fresh = await startServer({ METRICS_TOP_TENANTS: "2" });
    try {
      const counts: [string, number][] = [
        ["acme", 4],
        ["globex", 3],
        ["initech", 2],
        ["umbrella", 1],
      ];
      for (const [tenant, n] of counts) {
        const key = await fresh.apiKey(tenant);
        const items = Array.from({ length: n }, () => ({ channel: "global", event: "tick", data: 1 }));
        expect((await post(fresh, "/v1/publish", items, key)).status).toBe(200);
      }
      const text = await (await get(fresh, "/metrics")).text();
      expect(samples(text, "sinal_publications_total")).toEqual(
        new Map([
          ['{tenant="acme"}', 4],
          ['{tenant="globex"}', 3],
          ['{tenant="_other"}', 3],
        ]),
      );
      for (const metric of ["sinal_deliveries_total", "sinal_dropped_sends_total", "sinal_connections"]) {
        expect([...samples(text, metric).keys()].sort()).toEqual(['{tenant="_other"}', '{tenant="acme"}', '{tenant="globex"}']);
      }
    } finally {
      await fresh.stop();
    }
  });
});

describe("CORS", () => {
  let corsServer: TestServer;
  beforeAll(async () => (corsServer = await startServer({ ALLOWED_ORIGINS: "https://app.example.com" })));
  afterAll(() => corsServer.stop());

  function preflight(origin: string): Promise<Response> {
    return fetch(`${corsServer.http}/v1/publish`, {
      method: "OPTIONS",
      headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": "authorization, content-type" },
    });
  }

  test("a preflight from an allowed origin gets Access-Control-Allow-Origin for it", async () => {
    const res = await preflight("https://app.example.com");
    expect(res.status).toBeLessThan(300);
    expect(res.headers.get("access-control-allow-origin")).toBe("https://app.example.com");
    expect(res.headers.get("access-control-allow-methods")).toContain("POST");
    expect(res.headers.get("access-control-allow-headers")?.toLowerCase()).toContain("authorization");
  });

  test("a preflight from another origin gets no Access-Control-Allow-Origin", async () => {
    const res = await preflight("https://evil.example");
    expect(res.headers.get("access-control-allow-origin")).toBeNull();
  });

  test("a cross-origin POST from an allowed origin carries the header on the answer", async () => {
    const key = await corsServer.apiKey("acme");
    const res = await post(corsServer, "/v1/publish", { channel: "global", event: "tick", data: 1 }, key, { origin: "https://app.example.com" });
    expect(res.status).toBe(200);
    expect(res.headers.get("access-control-allow-origin")).toBe("https://app.example.com");
  });

  test("a cross-origin POST from another origin carries no Access-Control-Allow-Origin", async () => {
    const key = await corsServer.apiKey("acme");
    const res = await post(corsServer, "/v1/publish", { channel: "global", event: "tick", data: 1 }, key, { origin: "https://evil.example" });
    expect(res.headers.get("access-control-allow-origin")).toBeNull();
  });
});

describe("MAX_BODY_BYTES", () => {
  test("a chunked body past the limit is refused with 413 and logs no server error", async () => {
    const small = await startServer({ MAX_BODY_BYTES: "2048" });
    try {
      const key = await small.apiKey("acme");
      const body = new TextEncoder().encode(JSON.stringify({ channel: "dept:1", event: "tick", data: "x".repeat(5000) }));
      const stream = new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(body.subarray(0, 1000));
          controller.enqueue(body.subarray(1000));
          controller.close();
        },
      });
      const res = await fetch(`${small.http}/v1/publish`, { method: "POST", body: stream, headers: { authorization: `Bearer ${key}` } });
      expect(res.status).toBe(413);
      expect(small.logs.filter((line) => (line.level as number) >= 50)).toEqual([]);
    } finally {
      await small.stop();
    }
  });

  test("a body past the limit, with or without Content-Length, gets the JSON 413 and publishes nothing", async () => {
    const small = await startServer({ MAX_BODY_BYTES: "2048" });
    try {
      const key = await small.apiKey("acme");
      const watcher = await Client.open(small, { subChannels: ["dept:*"] });
      await watcher.request({ type: "subscribe", channel: "dept:1" });
      const body = JSON.stringify({ channel: "dept:1", event: "tick", data: "x".repeat(2500) });
      const withLength = await post(small, "/v1/publish", body, key);
      expect(withLength.status).toBe(413);
      expect(await withLength.json()).toEqual({ error: { code: "payload_too_large", message: "request body is larger than 2048 bytes" } });
      const stream = new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(new TextEncoder().encode(body));
          controller.close();
        },
      });
      const chunked = await fetch(`${small.http}/v1/publish`, { method: "POST", body: stream, headers: { authorization: `Bearer ${key}` } });
      expect(chunked.status).toBe(413);
      expect(((await chunked.json()) as any).error.code).toBe("payload_too_large");
      expect(await watcher.silentFor(100)).toBe(true);
      watcher.close();
    } finally {
      await small.stop();
    }
  });
});

describe("idempotency across a whole batch", () => {
  test("POST /emit-event honours idempotency_key", async () => {
    const server = await startServer();
    try {
      const key = await server.apiKey("acme");
      const watcher = await Client.open(server, { subChannels: ["roulette:*"] });
      await watcher.request({ type: "subscribe", channel: "roulette:7" });
      const body = { event: "roulette_update", data: { roulette_id: 7, number: 3 }, idempotency_key: "spin-1" };
      const first = await (await post(server, "/emit-event", body, key)).json();
      const second = await (await post(server, "/emit-event", body, key)).json();
      expect(second).toEqual(first);
      expect(await watcher.next()).toMatchObject({ event: "roulette_update", offset: 1 });
      expect(await watcher.silentFor(100)).toBe(true);
      watcher.close();
    } finally {
      await server.stop();
    }
  });

  test("a keyed batch of 1000 answers like the unkeyed path, and its replay publishes nothing", async () => {
    const server = await startServer();
    try {
      const key = await server.apiKey("acme");
      const items = Array.from({ length: 1000 }, (_, i) => ({ channel: `dept:b${i % 10}`, event: "e", data: i, idempotency_key: `k${i}` }));
      const first = (await (await post(server, "/v1/publish", items, key)).json()) as { offset: number }[];
      expect(first.map((r) => r.offset)).toEqual(items.map((_, i) => Math.floor(i / 10) + 1));
      const watcher = await Client.open(server, { subChannels: ["dept:*"] });
      await watcher.request({ type: "subscribe", channel: "dept:b0" });
      const replay = await (await post(server, "/v1/publish", items, key)).json();
      expect(replay).toEqual(first);
      expect(await watcher.silentFor(100)).toBe(true);
      watcher.close();
    } finally {
      await server.stop();
    }
  });
});
