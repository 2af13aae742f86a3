import { afterAll, beforeAll, expect, test } from "bun:test";
import { Client, post, startServer, type TestServer } from "./helpers.ts";

let server: TestServer;
beforeAll(async () => (server = await startServer({ RATE_LIMIT_PER_SEC: "10000", RATE_LIMIT_BURST: "10000" })));
afterAll(() => server.stop());

test("offsets have no gaps and no repeats under concurrent REST and WebSocket publishers", async () => {
  const subscriber = await Client.open(server, { user: "sub", subChannels: ["dept:*"] });
  await subscriber.request({ type: "subscribe", channel: "dept:busy" });
  const key = await server.apiKey("acme");
  const wsPublishers = await Promise.all([1, 2, 3].map((i) => Client.open(server, { user: `p${i}`, pubChannels: ["dept:*"] })));

  const restCalls = Array.from({ length: 8 }, (_, i) =>
    post(server, "/v1/publish", Array.from({ length: 25 }, (_, j) => ({ channel: "dept:busy", event: "e", data: { from: `rest${i}`, j } })), key).then((r) => r.json()),
  );
  for (const [i, p] of wsPublishers.entries()) {
    for (let j = 0; j < 30; j++) p.send({ type: "publish", channel: "dept:busy", event: "e", data: { from: `ws${i}`, j } });
  }
  const restAnswers = (await Promise.all(restCalls)).flat() as { offset: number }[];
  const total = 8 * 25 + 3 * 30;

  const offsets: number[] = [];
  while (offsets.length < total) offsets.push((await subscriber.next()).offset);
  expect(offsets).toEqual(Array.from({ length: total }, (_, i) => i + 1));
  const restOffsets = restAnswers.map((a) => a.offset);
  expect(new Set(restOffsets).size).toBe(200);
  expect(restOffsets.every((o) => o >= 1 && o <= total)).toBe(true);
  subscriber.close();
  for (const p of wsPublishers) p.close();
});
