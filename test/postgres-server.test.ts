import { afterAll, beforeAll, expect } from "bun:test";
import { ConfigError, loadConfig } from "../src/config.ts";
import { openConfiguredStore } from "../src/backends.ts";
import { Client, post, startServer, type Frame, type TestServer } from "./helpers.ts";
import { postgresTests, startPostgres, type Postgres } from "./support/postgres.ts";

// A sinal started with DATABASE_URL=postgres://... on a throwaway PostgreSQL: chat, room history
// and recovery across a restart, idempotent publishes, pending notifications, all through the
// PostgreSQL store.

const { test, available } = postgresTests();
let pg: Postgres | undefined;
let server: TestServer | undefined;
let key: string;

beforeAll(async () => {
  if (!available) return;
  pg = await startPostgres("sinal_server");
  server = await startServer({ DATABASE_URL: pg.url, LOG_LEVEL: "info" });
  key = await server.apiKey("acme");
}, 90_000);

afterAll(async () => {
  await server?.stop();
  await pg?.stop();
});

async function replyTo(c: Client, frame: Record<string, unknown>, id: number): Promise<Frame> {
  c.send({ ...frame, id });
  for (;;) {
    const f = await c.next();
    if (f.type === "reply" && f.id === id) return f;
  }
}

test("chat on PostgreSQL: a message is stored once per client_msg_id, listed, and the room recovers across a restart with its epoch", async () => {
  const alice = await Client.open(server!, { user: "alice", subChannels: ["room:*"] });
  const joined = await replyTo(alice, { type: "subscribe", channel: "room:pg1" }, 1);
  const sent = await replyTo(alice, { type: "message", room: "pg1", content: "hello", client_msg_id: "c1" }, 2);
  expect(sent).toMatchObject({ ok: true, message: { content: "hello", sender: "alice" } });
  const again = await replyTo(alice, { type: "message", room: "pg1", content: "hello", client_msg_id: "c1" }, 3);
  expect(again.message.id).toBe(sent.message.id);
  const listed = await (await fetch(`${server!.http}/v1/rooms/pg1/messages`, { headers: { authorization: `Bearer ${key}` } })).json();
  expect(listed).toMatchObject({ messages: [{ id: sent.message.id, content: "hello" }] });
  alice.close();
  await post(server!, "/v1/rooms/pg1/messages", { sender: "bob", content: "while you were away" }, key);
  server = await server!.restart();
  key = await server.apiKey("acme");
  const back = await Client.open(server, { user: "alice", subChannels: ["room:*"] });
  const reply = await replyTo(back, { type: "subscribe", channel: "room:pg1", since: { epoch: joined.epoch, offset: 1 } }, 1);
  expect(reply).toMatchObject({ recovered: true, epoch: joined.epoch, offset: 2 });
  let missed: Frame;
  do missed = await back.next();
  while (missed.type !== "pub" || missed.offset === undefined);
  expect(missed).toMatchObject({ event: "new_message", offset: 2, data: { content: "while you were away" } });
  back.close();
}, 30_000);

test("an idempotency key on a room publishes once on PostgreSQL, its answer stored with the publication", async () => {
  const item = { channel: "room:pg2", event: "e", data: { n: 1 }, idempotency_key: "k-pg" };
  const answer = async (body: unknown) => (await (await post(server!, "/v1/publish", body, key)).json()) as { offset: number; epoch: string };
  const first = await answer(item);
  const second = await answer(item);
  expect(second).toEqual(first);
  const next = await answer({ ...item, idempotency_key: "k-pg-2" });
  expect(next.offset).toBe(first.offset + 1);
});

test("a notification for a user who is away is pushed at the next connect, from PostgreSQL", async () => {
  const res = await post(server!, "/v1/notifications", { user: "carol", category: "c", title: "t", message: "m", data: { a: 1 } }, key);
  expect(res.status).toBe(200);
  const carol = await Client.open(server!, { user: "carol" });
  expect(await carol.next()).toMatchObject({ type: "pub", channel: "user:carol", event: "notification", data: { title: "t", data: { a: 1 } } });
  carol.close();
});

test("a PostgreSQL that cannot be reached stops the start naming DATABASE_URL, without the password", async () => {
  const config = loadConfig({ JWT_SECRET: "x".repeat(32), DATABASE_URL: "postgres://sinal:s3cret@127.0.0.1:1/nowhere" });
  const refused = await openConfiguredStore(config.database).then(
    () => null,
    (err: unknown) => err,
  );
  expect(refused).toBeInstanceOf(ConfigError);
  expect((refused as Error).message).toContain("DATABASE_URL: cannot open the PostgreSQL database postgres://sinal:***@127.0.0.1:1/nowhere");
  expect((refused as Error).message).not.toContain("s3cret");
});
