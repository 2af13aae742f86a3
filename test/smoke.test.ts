import { afterAll, beforeAll, expect, test } from "bun:test";
import { Client, post, startServer, type TestServer } from "./helpers.ts";

let server: TestServer;
beforeAll(async () => (server = await startServer()));
afterAll(() => server.stop());

test("a subscriber receives a REST publication with offset and epoch", async () => {
  const client = await Client.open(server, { subChannels: ["room:*"] });
  const sub = await client.request({ type: "subscribe", channel: "room:42" });
  expect(sub).toMatchObject({ ok: true, channel: "room:42", offset: 0, recovered: false });
  const key = await server.apiKey("acme");
  const res = await post(server, "/v1/publish", { channel: "room:42", event: "new_message", data: { text: "hi" } }, key);
  expect(res.status).toBe(200);
  expect(await res.json()).toEqual({ offset: 1, epoch: sub.epoch });
  const pub = await client.next();
  expect(pub).toMatchObject({ type: "pub", channel: "room:42", event: "new_message", data: { text: "hi" }, offset: 1, epoch: sub.epoch });
  expect(typeof pub.ts).toBe("number");
  client.close();
});
