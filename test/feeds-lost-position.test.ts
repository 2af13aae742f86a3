import { afterEach, expect, test } from "bun:test";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Client, openServerStore, removeServerDir, startServer, type TestServer } from "./helpers.ts";
import { feedEnv, metric, ROULETTES, waitFor, waitReady } from "./support/feeds.ts";
import { ScriptedMongo } from "./support/scripted-mongo.ts";

// A lost change-stream position (history lost, a fatal change-stream error, an invalidate, a
// non-resumable error) starts a new epoch with a fresh snapshot, and the feed carries on.
// Faults the emulator cannot produce, so: against a scripted MongoDB wire server.

let mongo: ScriptedMongo | null = null;
let server: TestServer | null = null;
const dirs: string[] = [];

afterEach(async () => {
  await server?.stop();
  await mongo?.stop();
  server = mongo = null;
  for (const dir of dirs.splice(0)) await removeServerDir(dir);
});

async function start(env: Record<string, string> = {}): Promise<{ mongo: ScriptedMongo; server: TestServer }> {
  mongo = await ScriptedMongo.start("runcash", "roulettes");
  mongo.docs = [{ _id: "r1", tenant: "acme", name: "Lightning", numbers: [1] }];
  server = await startServer(feedEnv(mongo.uri(), [ROULETTES], { MONGODB_RETRY_MAX_MS: "200", ...env }));
  await waitReady(server);
  return { mongo, server };
}

async function subscriber(server: TestServer): Promise<{ client: Client; epoch: string }> {
  const client = await Client.open(server, { tenant: "acme", user: "u1", subChannels: ["roulette:*"] });
  const reply = await client.request({ type: "subscribe", channel: "roulette:r1" });
  expect(reply).toMatchObject({ ok: true, offset: 0, snapshot: { _id: "r1", name: "Lightning", numbers: [1] } });
  return { client, epoch: reply.epoch };
}

/** Scripts the fault, waits for the feed to reset and stream again, and checks what a client sees. */
async function expectNewEpoch(server: TestServer, mongo: ScriptedMongo, client: Client, oldEpoch: string, reason: string) {
  // The state after the lost changes: what the fresh snapshot must show.
  mongo.docs = [{ _id: "r1", tenant: "acme", name: "Lightning", numbers: [1, 2, 3, 4] }];
  const streamsBefore = mongo.changeStreams.length;
  await waitFor(`a ${reason} reset`, async () => (await metric(server, "sinal_feed_epoch_resets_total", { feed: "roulettes", reason })) === 1);
  await waitFor("a new change stream", () => mongo.changeStreams.length > streamsBefore);
  await waitReady(server);
  // The new stream starts from now: it does not try the lost position again.
  expect(mongo.changeStreams.at(-1)!.resumeAfter).toBeUndefined();

  const again = await client.request({ type: "subscribe", channel: "roulette:r1", since: { epoch: oldEpoch, offset: 1 } });
  expect(again).toMatchObject({ ok: true, recovered: false, offset: 0, snapshot: { _id: "r1", numbers: [2, 3, 4] } });
  expect(again.epoch).not.toBe(oldEpoch);

  // And it carries on, in the new epoch.
  mongo.answer({ batch: [mongo.change("T9", "update", { _id: "r1", tenant: "acme", name: "Lightning", numbers: [1, 2, 3, 4, 5] })] });
  expect(await client.next()).toMatchObject({ type: "pub", event: "roulette_update", data: { numbers: [3, 4, 5] }, offset: 1, epoch: again.epoch });
  // The saved position is the new stream's.
  await waitFor("the new token saved", async () => (await server.store.feeds.get("roulettes"))?.token.includes("T9"));
}

test("history lost (ChangeStreamHistoryLost on a getMore): new epoch, fresh snapshot, carries on", async () => {
  const { mongo, server } = await start();
  const { client, epoch } = await subscriber(server);
  mongo.answer({ batch: [mongo.change("T1", "update", { _id: "r1", tenant: "acme", name: "Lightning", numbers: [1, 2] })] });
  expect(await client.next()).toMatchObject({ data: { numbers: [1, 2] }, offset: 1, epoch });
  await waitFor("token T1 saved", async () => (await server.store.feeds.get("roulettes"))?.token.includes("T1"));

  mongo.answer({ error: { code: 286, codeName: "ChangeStreamHistoryLost" } });
  await expectNewEpoch(server, mongo, client, epoch, "history_lost");
  expect(mongo.changeStreams[0]!.fullDocument).toBe("updateLookup");
  client.close();
});

test("a fatal change-stream error (ChangeStreamFatalError on a getMore): new epoch, fresh snapshot, carries on", async () => {
  const { mongo, server } = await start();
  const { client, epoch } = await subscriber(server);
  mongo.answer({ batch: [mongo.change("T1", "update", { _id: "r1", tenant: "acme", name: "Lightning", numbers: [1, 2] })] });
  expect(await client.next()).toMatchObject({ offset: 1, epoch });
  mongo.answer({ error: { code: 280, codeName: "ChangeStreamFatalError", errmsg: "cannot resume stream; the resume token was not found" } });
  await expectNewEpoch(server, mongo, client, epoch, "history_lost");
  client.close();
});

test("an invalidate event (collection dropped): new epoch, fresh snapshot, carries on", async () => {
  const { mongo, server } = await start();
  const { client, epoch } = await subscriber(server);
  mongo.answer({ batch: [mongo.change("T1", "update", { _id: "r1", tenant: "acme", name: "Lightning", numbers: [1, 2] })] });
  expect(await client.next()).toMatchObject({ offset: 1, epoch });
  mongo.answer({ batch: [mongo.change("T2", "drop", null), mongo.change("T3", "invalidate", null)] });
  await expectNewEpoch(server, mongo, client, epoch, "invalidate");
  client.close();
});

test("a non-resumable server error (Unauthorized on a getMore): new epoch, fresh snapshot, carries on", async () => {
  const { mongo, server } = await start();
  const { client, epoch } = await subscriber(server);
  mongo.answer({ batch: [mongo.change("T1", "update", { _id: "r1", tenant: "acme", name: "Lightning", numbers: [1, 2] })] });
  expect(await client.next()).toMatchObject({ offset: 1, epoch });
  mongo.answer({ error: { code: 13, codeName: "Unauthorized" } });
  await expectNewEpoch(server, mongo, client, epoch, "error");
  client.close();
});

test("a saved resume token the server no longer has (at start-up): starts from now with the snapshot", async () => {
  const dir = mkdtempSync(join(tmpdir(), "sinal-lost-"));
  dirs.push(dir);
  // The token is saved in the store the server then starts on (its dir's).
  const store = await openServerStore(dir);
  await store.feeds.save({ feed: "roulettes", source: "runcash.roulettes", token: JSON.stringify({ _data: "OLD" }), updatedAt: Date.now(), fence: 0 });
  await store.close();

  mongo = await ScriptedMongo.start("runcash", "roulettes");
  mongo.docs = [{ _id: "r1", tenant: "acme", name: "Lightning", numbers: [7] }];
  mongo.aggregateErrors.push({ error: { code: 280, codeName: "ChangeStreamFatalError", errmsg: "resume token was not found" } });
  server = await startServer(feedEnv(mongo.uri(), [ROULETTES], { MONGODB_RETRY_MAX_MS: "200" }), dir);
  await waitReady(server);
  expect(mongo.changeStreams[0]!.resumeAfter).toEqual({ _data: "OLD" });
  expect(mongo.changeStreams.at(-1)!.resumeAfter).toBeUndefined();
  expect(await metric(server, "sinal_feed_epoch_resets_total", { feed: "roulettes", reason: "history_lost" })).toBe(1);
  const client = await Client.open(server, { tenant: "acme", user: "u1", subChannels: ["roulette:*"] });
  expect(await client.request({ type: "subscribe", channel: "roulette:r1" })).toMatchObject({ ok: true, snapshot: { numbers: [7] } });
  client.close();
});
