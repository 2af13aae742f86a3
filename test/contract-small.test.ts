import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Client, post, startServer, type TestServer } from "./helpers.ts";

/** Small parts of the contract: validation messages of unions, CORS headers, the scope of GET /v1/stats. */

let server: TestServer;
let acmeKey: string;

beforeAll(async () => {
  server = await startServer();
  acmeKey = await server.apiKey("acme");
});
afterAll(() => server.stop());

function request(method: string, path: string, credential: string, body?: unknown): Promise<Response> {
  return fetch(`${server.http}${path}`, {
    method,
    headers: { authorization: `Bearer ${credential}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

describe("a value outside a union is answered with what the union accepts", () => {
  test("REST: a room status outside open and closed lists both", async () => {
    const res = await request("PUT", "/v1/rooms/union-1", acmeKey, { status: "archived" });
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({ error: { code: "bad_request", message: 'status: expected one of "open", "closed"' } });
  });

  test("REST: a body matching neither shape of a union names the shapes, or the field that missed", async () => {
    const token = await server.token({ user: "reader" });
    const neither = await request("POST", "/v1/me/notifications/read", token, { everything: true });
    expect(await neither.json()).toEqual({ error: { code: "bad_request", message: 'body: expected an object with "ids" or an object with "all"' } });
    const closest = await request("POST", "/v1/me/notifications/read", token, { all: false });
    expect(await closest.json()).toEqual({ error: { code: "bad_request", message: "all: Expected true" } });
  });

  test("WebSocket: a presence status outside the three lists them, and the connection keeps working", async () => {
    const client = await Client.open(server, { user: "union-ws" });
    try {
      expect(await client.request({ type: "presence", status: "gone" })).toMatchObject({
        ok: false,
        error: { code: "bad_request", message: 'status: expected one of "online", "away", "busy"' },
      });
      expect(await client.request({ type: "ping" })).toMatchObject({ ok: true });
    } finally {
      client.close();
    }
  });
});

describe("CORS answers carry no credentials header and expose no request header", () => {
  let cors: TestServer;
  beforeAll(async () => (cors = await startServer({ ALLOWED_ORIGINS: "https://app.example.com" })));
  afterAll(() => cors.stop());

  const accessControl = (res: Response) => Object.fromEntries([...res.headers].filter(([name]) => name.startsWith("access-control-")));

  test("a preflight allows the origin, the methods and exactly authorization and content-type", async () => {
    const res = await fetch(`${cors.http}/v1/publish`, {
      method: "OPTIONS",
      headers: { origin: "https://app.example.com", "access-control-request-method": "POST", "access-control-request-headers": "authorization, content-type, x-custom" },
    });
    expect(res.status).toBe(204);
    expect(accessControl(res)).toEqual({
      "access-control-allow-origin": "https://app.example.com",
      "access-control-allow-methods": "GET, POST, PUT, DELETE, OPTIONS",
      "access-control-allow-headers": "authorization, content-type",
      "access-control-max-age": "5",
    });
  });

  test("an answer to an allowed origin names the origin and nothing about credentials or exposed headers", async () => {
    const key = await cors.apiKey("acme");
    const res = await fetch(`${cors.http}/v1/publish`, {
      method: "POST",
      headers: { origin: "https://app.example.com", authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify({ channel: "global", event: "tick", data: 1 }),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("access-control-allow-origin")).toBe("https://app.example.com");
    expect(res.headers.has("access-control-allow-credentials")).toBe(false);
    expect(res.headers.has("access-control-expose-headers")).toBe(false);
  });
});

describe("GET /v1/stats shows the caller's tenant; the node's totals only to an admin token", () => {
  let stats: TestServer;
  const clients: Client[] = [];
  beforeAll(async () => {
    stats = await startServer();
    // acme: one connection, one publication delivered; globex: two connections, nothing published.
    const acme = await Client.open(stats, { tenant: "acme", user: "a1", subChannels: ["*"] });
    const globex = [await Client.open(stats, { tenant: "globex", user: "g1" }), await Client.open(stats, { tenant: "globex", user: "g2" })];
    clients.push(acme, ...globex);
    expect(await acme.request({ type: "subscribe", channel: "global" })).toMatchObject({ ok: true });
    expect((await post(stats, "/v1/publish", { channel: "global", event: "tick", data: 1 }, await stats.apiKey("acme"))).status).toBe(200);
    expect(await acme.next()).toMatchObject({ type: "pub", channel: "global" });
  });
  afterAll(async () => {
    for (const client of clients) client.close();
    await stats.stop();
  });

  const acmeCounts = { id: "acme", node: expect.any(String), connections: 1, subscriptions: 1, publications: 1, deliveries: 1, dropped_sends: 0 };

  test("an API key gets its tenant's counts and no node totals", async () => {
    const res = await fetch(`${stats.http}/v1/stats`, { headers: { authorization: `Bearer ${await stats.apiKey("acme")}` } });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ tenant: acmeCounts });
  });

  test("an admin token gets its tenant's counts and the node's totals", async () => {
    const res = await fetch(`${stats.http}/v1/stats`, { headers: { authorization: `Bearer ${await stats.token({ tenant: "acme", user: "ops", roles: ["admin"] })}` } });
    const body = (await res.json()) as { node: Record<string, number>; tenant: unknown };
    expect(body.tenant).toEqual(acmeCounts);
    expect(body.node).toMatchObject({ connections: 3, publications: 1, deliveries: 1 });
  });

  test("another tenant's credential never sees acme's counts", async () => {
    const res = await fetch(`${stats.http}/v1/stats`, { headers: { authorization: `Bearer ${await stats.apiKey("globex")}` } });
    expect(await res.json()).toEqual({ tenant: { id: "globex", node: expect.any(String), connections: 2, subscriptions: 0, publications: 0, deliveries: 0, dropped_sends: 0 } });
  });

  test("a user token without the admin role is refused", async () => {
    const res = await fetch(`${stats.http}/v1/stats`, { headers: { authorization: `Bearer ${await stats.token({ tenant: "acme", user: "a1" })}` } });
    expect(res.status).toBe(403);
  });
});
