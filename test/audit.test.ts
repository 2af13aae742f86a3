import { afterAll, beforeAll, expect, test } from "bun:test";
import { Client, post, startServer, type TestServer } from "./helpers.ts";

let server: TestServer;
let key: string;
beforeAll(async () => {
  server = await startServer();
  key = await server.apiKey("acme");
});
afterAll(() => server.stop());

async function audit(credential: string, query = "") {
  await server.sinal.audit.flush();
  const res = await fetch(`${server.http}/v1/audit${query}`, { headers: { authorization: `Bearer ${credential}` } });
  return { status: res.status, body: (await res.json()) as any };
}

test("connects, denied subscriptions, disconnects with their code, REST publishes and notifications are audited", async () => {
  const c = await Client.open(server, { user: "aud" });
  expect(await c.request({ type: "subscribe", channel: "user:other" })).toMatchObject({ ok: false });
  c.socket.close(4000, "bye");
  await c.closed;
  await post(server, "/v1/publish", [{ channel: "dept:a", event: "e", data: 1 }, { channel: "dept:b", event: "e", data: 2 }], key);
  await post(server, "/v1/notifications", { users: ["aud", "x"], category: "ticket", title: "t", message: "m" }, key);
  const keyId = key.slice(3, 19);
  const { body } = await audit(key);
  const kinds = body.entries.map((e: any) => [e.kind, e.actor, e.detail]);
  expect(kinds).toEqual([
    ["notification", `key:${keyId}`, { category: "ticket", users: 2 }],
    ["rest_publish", `key:${keyId}`, { count: 2, channels: ["dept:a", "dept:b"] }],
    ["disconnect", "user:aud", { client: expect.any(String), code: 4000 }],
    ["subscribe_denied", "user:aud", { client: expect.any(String), channel: "user:other", code: "forbidden" }],
    ["connect", "user:aud", { client: expect.any(String) }],
  ]);
  expect(body.entries[0]).toEqual({ id: expect.any(Number), at: expect.any(Number), kind: "notification", actor: `key:${keyId}`, detail: expect.any(Object) });
  const onlyConnects = await audit(key, "?kind=connect&limit=5");
  expect(onlyConnects.body.entries.every((e: any) => e.kind === "connect")).toBe(true);
  const older = await audit(key, `?before=${body.entries[1].id}&limit=1`);
  expect(older.body.entries.map((e: any) => e.kind)).toEqual(["disconnect"]);
});

test("a tenant reads only its own audit log, and a user token cannot read it", async () => {
  const { body } = await audit(await server.apiKey("globex"));
  expect(body.entries).toEqual([]);
  expect((await audit(await server.token({ user: "aud" }))).status).toBe(403);
  expect((await audit(key, "?limit=0")).status).toBe(400);
});
