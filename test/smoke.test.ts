import { afterAll, beforeAll, expect, test } from "bun:test";
import { Client, post, startServer, type TestServer } from "./helpers.ts";

let server: TestServer;
beforeAll(async () => (server = await startServer()));
afterAll(() => server.stop());

test("a subscriber receives a REST publication with offset and epoch", async () => {
  const client = await Client.open(server, { subChannels: ["dept:*"] });
  const sub = await client.request({ type: "subscribe", channel: "dept:42" });
  expect(sub).toMatchObject({ ok: true, channel: "dept:42", offset: 0, recovered: false });
  const key = await server.apiKey("acme");
  const res = await post(server, "/v1/publish", { channel: "dept:42", event: "new_message", data: { text: "hi" } }, key);
  expect(res.status).toBe(200);
  expect(await res.json()).toEqual({ offset: 1, epoch: sub.epoch });
  const pub = await client.next();
  expect(pub).toMatchObject({ type: "pub", channel: "dept:42", event: "new_message", data: { text: "hi" }, offset: 1, epoch: sub.epoch });
  expect(typeof pub.ts).toBe("number");
  client.close();
});

test("logs are JSON and never carry a token or an API key", async () => {
  const token = await server.token({ user: "logged" });
  const { client } = await Client.connect(`${server.ws}?token=${token}`);
  const key = await server.apiKey("acme");
  await post(server, "/v1/publish", { channel: "dept:1", event: "e", data: 1 }, key);
  await post(server, "/v1/publish", { channel: "dept:1", event: "e", data: 1 }, "sk_0123456789abcdef_wrong-secret-wrong-secret");
  client.close();
  await client.closed;
  const text = server.logs.map((l) => JSON.stringify(l)).join("\n");
  expect(server.logs.some((l) => l.msg === "connected" && l.user === "logged")).toBe(true);
  expect(text).not.toContain(token);
  expect(text).not.toContain(key.slice("sk_0123456789abcdef_".length));
  expect(text).not.toContain("wrong-secret");
});
