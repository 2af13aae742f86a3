import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Client, handshake, post, startServer, type TestServer } from "./helpers.ts";
import { RawRequest, requestHead, within } from "./support/raw-http.ts";

/** Hostile-client findings of issue 10 at the edge: JSON depth, data size, slow and huge bodies, Origin, auth scheme, ids. */

/** `levels` arrays inside each other: `[[[]]]` for 3. */
const nested = (levels: number) => "[".repeat(levels) + "]".repeat(levels);
/** A 100,000-level value (~195 KiB), as in the audit. */
const DEEP = nested(100_000);

const errorLines = (server: TestServer) => server.logs.filter((line) => (line.level as number) >= 50);

function send(server: TestServer, method: string, path: string, body: string, credential: string, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${server.http}${path}`, {
    method,
    headers: { "content-type": "application/json", authorization: `Bearer ${credential}`, ...headers },
    body,
  });
}

async function answer(res: Response): Promise<{ status: number; body: any }> {
  return { status: res.status, body: await res.json() };
}

describe("JSON nested deeper than MAX_JSON_DEPTH", () => {
  let server: TestServer;
  let key: string;
  beforeAll(async () => {
    server = await startServer();
    key = await server.apiKey("acme");
  });
  afterAll(() => server.stop());

  const deepBodies: [string, string, string][] = [
    ["POST", "/v1/publish", `{"channel":"dept:1","event":"tick","data":${DEEP}}`],
    ["POST", "/v1/publish", `[{"channel":"dept:1","event":"tick","data":${DEEP}}]`],
    ["POST", "/emit-event", `{"event":"roulette_update","data":{"roulette_id":7,"history":${DEEP}}}`],
    ["POST", "/v1/sync", `{"module":"customer","action":"update","record":{"id":1,"tags":${DEEP}}}`],
    ["POST", "/v1/notifications", `{"user":"u1","category":"billing","title":"t","message":"m","data":${DEEP}}`],
    ["POST", "/v1/notifications", `{"channel":"dept:1","category":"billing","title":"t","message":"m","data":${DEEP}}`],
    ["PUT", "/v1/rooms/deep", `{"meta":{"tags":${DEEP}}}`],
  ];

  for (const [method, path, body] of deepBodies) {
    test(`${method} ${path} ${body.slice(0, 12)}... 100,000 levels deep answers 400 bad_request and logs no error`, async () => {
      const res = await send(server, method, path, body, key);
      expect(await answer(res)).toEqual({
        status: 400,
        body: { error: { code: "bad_request", message: "body nests arrays and objects deeper than 64 levels" } },
      });
      expect(errorLines(server)).toEqual([]);
    });
  }

  test("a body exactly MAX_JSON_DEPTH deep is accepted, one level more is not", async () => {
    // The body object is level 1, so its data may nest 63 levels.
    const atLimit = await send(server, "POST", "/v1/publish", `{"channel":"dept:2","event":"tick","data":${nested(63)}}`, key);
    expect(atLimit.status).toBe(200);
    const past = await send(server, "POST", "/v1/publish", `{"channel":"dept:2","event":"tick","data":${nested(64)}}`, key);
    expect((await answer(past)).body.error.code).toBe("bad_request");
  });

  test("a WebSocket frame nested deeper than MAX_JSON_DEPTH gets bad_request and the connection keeps working", async () => {
    const client = await Client.open(server, { pubChannels: ["dept:*"] });
    client.send(`{"type":"publish","id":1,"channel":"dept:3","event":"tick","data":${nested(64)}}`);
    expect(await client.next()).toEqual({
      type: "error",
      error: { code: "bad_request", message: "frame nests arrays and objects deeper than 64 levels" },
    });
    client.send(`{"type":"publish","id":2,"channel":"dept:3","event":"tick","data":${nested(63)}}`);
    expect(await client.next()).toMatchObject({ type: "reply", id: 2, ok: true, offset: 1 });
    expect(errorLines(server)).toEqual([]);
    client.close();
  });
});

describe("notification data and room meta past MAX_FRAME_BYTES", () => {
  let server: TestServer;
  let key: string;
  const big = "x".repeat(2000);
  beforeAll(async () => {
    server = await startServer({ MAX_FRAME_BYTES: "1024" });
    key = await server.apiKey("acme");
  });
  afterAll(() => server.stop());

  test("a notification to a user with data past the limit answers 413 naming data; nothing is stored or sent", async () => {
    const user = await Client.open(server, { user: "ana" });
    const res = await post(server, "/v1/notifications", { user: "ana", category: "billing", title: "big", message: "m", data: { blob: big } }, key);
    expect(await answer(res)).toEqual({ status: 413, body: { error: { code: "payload_too_large", message: "data: 2011 bytes of JSON; at most 1024" } } });
    const small = await post(server, "/v1/notifications", { user: "ana", category: "billing", title: "small", message: "m" }, key);
    expect(small.status).toBe(200);
    // The first frame the user gets is the small one: the big one was never published.
    expect(await user.next()).toMatchObject({ type: "pub", event: "notification", data: { title: "small" } });
    const list = await fetch(`${server.http}/v1/me/notifications`, { headers: { authorization: `Bearer ${await server.token({ user: "ana" })}` } });
    expect(((await list.json()) as any).notifications.map((n: any) => n.title)).toEqual(["small"]);
    user.close();
  });

  test("a notification to a channel with data past the limit answers 413 naming data and publishes nothing", async () => {
    const watcher = await Client.open(server, { user: "w", subChannels: ["dept:*"] });
    expect(await watcher.request({ type: "subscribe", channel: "dept:9" })).toMatchObject({ ok: true, offset: 0 });
    const res = await post(server, "/v1/notifications", { channel: "dept:9", category: "billing", title: "big", message: "m", data: big }, key);
    expect(await answer(res)).toEqual({ status: 413, body: { error: { code: "payload_too_large", message: "data: 2002 bytes of JSON; at most 1024" } } });
    expect((await post(server, "/v1/notifications", { channel: "dept:9", category: "billing", title: "small", message: "m" }, key)).status).toBe(200);
    expect(await watcher.next()).toMatchObject({ type: "pub", channel: "dept:9", offset: 1, data: { title: "small" } });
    watcher.close();
  });

  test("room meta past the limit answers 413 naming meta and the room is not created", async () => {
    const res = await send(server, "PUT", "/v1/rooms/bigmeta", JSON.stringify({ status: "open", meta: { blob: big } }), key);
    expect(await answer(res)).toEqual({ status: 413, body: { error: { code: "payload_too_large", message: "meta: 2011 bytes of JSON; at most 1024" } } });
    const room = await fetch(`${server.http}/v1/rooms/bigmeta`, { headers: { authorization: `Bearer ${key}` } });
    expect(room.status).toBe(404);
  });
});

describe("slow REST bodies (BODY_TIMEOUT_MS) and requests in flight per credential", () => {
  let server: TestServer;
  beforeAll(async () => (server = await startServer({ BODY_TIMEOUT_MS: "500", REST_MAX_CONCURRENT_PER_CLIENT: "2" })));
  afterAll(() => server.stop());

  const preferencesHead = (token: string, length: number) =>
    requestHead("PUT", "/v1/me/preferences", { Authorization: `Bearer ${token}`, "Content-Type": "application/json", "Content-Length": length });

  test("a body trickled a byte at a time ends with 408 request_timeout at the deadline, and the server closes the connection", async () => {
    const token = await server.token({ user: "loris" });
    const started = performance.now();
    const request = new RawRequest(server.port, preferencesHead(token, 1000));
    request.trickle(`{"muted_categories":[${'"a",'.repeat(250)}`, 50);
    const reply = await within(request.answer, 3000, "the answer to a trickled body");
    const elapsed = performance.now() - started;
    expect(reply.status).toBe(408);
    expect(reply.headers.connection).toBe("close");
    expect(JSON.parse(reply.body)).toEqual({ error: { code: "request_timeout", message: "request body did not arrive within 500 ms" } });
    expect(elapsed).toBeGreaterThanOrEqual(490);
    await within(request.ended, 1000, "the end of the stream after the 408");
  });

  test("a chunked body trickled past the deadline ends the same way", async () => {
    const token = await server.token({ user: "loris2" });
    const head = requestHead("PUT", "/v1/me/preferences", { Authorization: `Bearer ${token}`, "Transfer-Encoding": "chunked" });
    const request = new RawRequest(server.port, head);
    request.trickle("1\r\n{\r\n1\r\n \r\n1\r\n \r\n1\r\n \r\n1\r\n \r\n1\r\n \r\n1\r\n \r\n1\r\n \r\n1\r\n \r\n", 50);
    const reply = await within(request.answer, 3000, "the answer to a trickled chunked body");
    expect(reply.status).toBe(408);
    expect(JSON.parse(reply.body).error.code).toBe("request_timeout");
    await within(request.ended, 1000, "the end of the stream after the 408");
  });

  test("a request answered before its body arrived (401) has its connection closed, not held to drain the body", async () => {
    const request = new RawRequest(server.port, requestHead("POST", "/v1/publish", { "Content-Type": "application/json", "Content-Length": 1000 }));
    request.write('{"channel":');
    const reply = await within(request.answer, 3000, "the 401");
    expect(reply.status).toBe(401);
    expect(reply.headers.connection).toBe("close");
    await within(request.ended, 1000, "the end of the stream after the 401");
  });

  test("past REST_MAX_CONCURRENT_PER_CLIENT in flight the credential's next request gets 429 rate_limited at once; others are unaffected", async () => {
    const token = await server.token({ user: "busy" });
    const body = '{"muted_categories":["a"]}';
    const started = performance.now();
    // Three requests of one credential, each holding its body back: two fit, one is refused.
    const held = [0, 1, 2].map(() => new RawRequest(server.port, preferencesHead(token, body.length)));
    for (const request of held) request.write(body.slice(0, 5));
    const first = await within(Promise.race(held.map((r, i) => r.answer.then((a) => ({ a, i })))), 3000, "the first answer");
    expect(performance.now() - started).toBeLessThan(400); // at once, not at the 500 ms body deadline
    expect(first.a.status).toBe(429);
    expect(JSON.parse(first.a.body)).toEqual({
      error: { code: "rate_limited", message: "this credential already has 2 requests in flight; wait for one to finish" },
    });
    // Another credential is not affected meanwhile.
    const other = await fetch(`${server.http}/v1/me/preferences`, { headers: { authorization: `Bearer ${await server.token({ user: "calm" })}` } });
    expect(other.status).toBe(200);
    // The two in flight finish; their slots are free again.
    const admitted = held.filter((_, i) => i !== first.i);
    for (const request of admitted) request.write(body.slice(5));
    for (const request of admitted) expect((await within(request.answer, 3000, "an admitted request")).status).toBe(200);
    const again = await fetch(`${server.http}/v1/me/preferences`, { headers: { authorization: `Bearer ${token}` } });
    expect(again.status).toBe(200);
    for (const request of held) request.destroy();
  });
});

test("a chunked body past MAX_BODY_BYTES gets the JSON 413 and the connection is closed", async () => {
  const server = await startServer();
  try {
    const key = await server.apiKey("acme");
    const request = new RawRequest(server.port, requestHead("POST", "/v1/publish", { Authorization: `Bearer ${key}`, "Transfer-Encoding": "chunked" }));
    // Past Bun's former 16 MiB `maxRequestBodySize` (2x MAX_BODY_BYTES), which answered a bare 413.
    void request.sendChunked(17 * 1024 * 1024);
    const reply = await within(request.answer, 10_000, "the answer to a 17 MiB chunked body");
    expect({ status: reply.status, connection: reply.headers.connection, body: JSON.parse(reply.body || "null") }).toEqual({
      status: 413,
      connection: "close",
      body: { error: { code: "payload_too_large", message: "request body is larger than 8388608 bytes" } },
    });
    await within(request.ended, 2000, "the end of the stream after the 413");
    expect(errorLines(server)).toEqual([]);
  } finally {
    await server.stop();
  }
});

describe("a foreign Origin on the REST API", () => {
  let server: TestServer;
  let key: string;
  beforeAll(async () => {
    server = await startServer({ ALLOWED_ORIGINS: "https://app.example.com" });
    key = await server.apiKey("acme");
  });
  afterAll(() => server.stop());

  test("is refused with 403 forbidden and the request is not executed", async () => {
    const watcher = await Client.open(server, { subChannels: ["dept:*"] });
    await watcher.request({ type: "subscribe", channel: "dept:o" });
    const foreign = await post(server, "/v1/publish", { channel: "dept:o", event: "evil", data: 1 }, key, { origin: "https://evil.example" });
    expect(await answer(foreign)).toEqual({ status: 403, body: { error: { code: "forbidden", message: "origin https://evil.example is not allowed" } } });
    const emit = await post(server, "/emit-event", { event: "roulette_update", data: { roulette_id: 1 } }, key, { origin: "https://evil.example" });
    expect(emit.status).toBe(403);
    const listed = await post(server, "/v1/publish", { channel: "dept:o", event: "fine", data: 2 }, key, { origin: "https://app.example.com" });
    expect(listed.status).toBe(200);
    expect(listed.headers.get("access-control-allow-origin")).toBe("https://app.example.com");
    // The first publication the watcher sees is the allowed one, at offset 1: the foreign one never ran.
    expect(await watcher.next()).toMatchObject({ type: "pub", event: "fine", offset: 1 });
    watcher.close();
  });

  test("requests without Origin pass, and a preflight from a listed origin still works", async () => {
    expect((await post(server, "/v1/publish", { channel: "dept:n", event: "tick", data: 1 }, key)).status).toBe(200);
    const preflight = await fetch(`${server.http}/v1/publish`, {
      method: "OPTIONS",
      headers: { origin: "https://app.example.com", "access-control-request-method": "POST", "access-control-request-headers": "authorization" },
    });
    expect(preflight.status).toBeLessThan(300);
    expect(preflight.headers.get("access-control-allow-origin")).toBe("https://app.example.com");
  });

  test("the page, /health, /ready and /metrics still answer a foreign Origin", async () => {
    for (const path of ["/", "/health", "/ready", "/metrics"]) {
      const res = await fetch(`${server.http}${path}`, { headers: { origin: "https://evil.example" } });
      expect({ path, status: res.status }).toEqual({ path, status: 200 });
    }
  });

  test("with ALLOWED_ORIGINS unset, the same origin passes and another is refused", async () => {
    const sameOnly = await startServer();
    try {
      const acme = await sameOnly.apiKey("acme");
      const same = await post(sameOnly, "/v1/publish", { channel: "dept:s", event: "tick", data: 1 }, acme, { origin: sameOnly.http });
      expect(same.status).toBe(200);
      const other = await post(sameOnly, "/v1/publish", { channel: "dept:s", event: "tick", data: 1 }, acme, { origin: "http://localhost:1" });
      expect(other.status).toBe(403);
    } finally {
      await sameOnly.stop();
    }
  });
});

describe("smaller findings", () => {
  let server: TestServer;
  beforeAll(async () => (server = await startServer()));
  afterAll(() => server.stop());

  test("the WebSocket upgrade accepts the bearer scheme in any case", async () => {
    const token = await server.token({ user: "lower" });
    for (const scheme of ["bearer", "BEARER", "Bearer"]) {
      const res = await handshake(server.ws, { Authorization: `${scheme} ${token}` });
      expect({ scheme, status: res.status }).toEqual({ scheme, status: 101 });
    }
    const { client, welcome } = await Client.connect(server.ws, { headers: { authorization: `bearer ${token}` } });
    expect(welcome).toMatchObject({ type: "welcome", user: "lower" });
    client.close();
    expect((await handshake(server.ws, { Authorization: `Basic ${token}` })).status).toBe(401);
  });

  test("a numeric frame id that is not a safe integer is refused with bad_request, never answered with a changed id", async () => {
    const client = await Client.open(server);
    client.send('{"type":"ping","id":9007199254740993}');
    expect(await client.next()).toEqual({
      type: "error",
      error: { code: "bad_request", message: "id must be a safe integer (|id| < 2^53) or a string of at most 128 characters" },
    });
    client.send('{"type":"ping","id":1.5}');
    expect(await client.next()).toMatchObject({ type: "error", error: { code: "bad_request" } });
    client.send('{"type":"ping","id":9007199254740991}');
    expect(await client.next()).toEqual({ type: "reply", id: 9007199254740991, ok: true });
    client.send('{"type":"ping","id":-9007199254740991}');
    expect(await client.next()).toEqual({ type: "reply", id: -9007199254740991, ok: true });
    client.close();
  });
});
