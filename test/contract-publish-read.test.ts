import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Client, post, startServer, type TestServer } from "./helpers.ts";

/** Issue 11: who published a client publication, receipts only for a room's own messages, room history read with a user's own token. */

let server: TestServer;
let key: string;
beforeAll(async () => {
  server = await startServer();
  key = await server.apiKey("acme");
});
afterAll(() => server.stop());

function get(path: string, credential = key, scheme = "Bearer"): Promise<Response> {
  return fetch(`${server.http}${path}`, { headers: { authorization: `${scheme} ${credential}` } });
}

async function postMessage(room: string, sender: string, content: string, credential = key): Promise<number> {
  const res = await post(server, `/v1/rooms/${room}/messages`, { sender, content }, credential);
  expect(res.status).toBe(200);
  return ((await res.json()) as { id: number }).id;
}

async function unreadOf(room: string, user: string): Promise<number> {
  return ((await (await get(`/v1/rooms/${room}/unread?user=${user}`)).json()) as { unread: number }).unread;
}

const SERVER_EVENTS = [
  "new_message",
  "message_read",
  "typing",
  "presence",
  "user_joined",
  "user_left",
  "notification",
  "lock",
  "unlock",
  "data_sync",
  "new_conversation",
  "conversation_updated",
];

/** A client whose token carries `opts`, with the connection id of its welcome. */
async function connect(opts: Parameters<TestServer["token"]>[0]): Promise<{ client: Client; id: string }> {
  const { client, welcome } = await Client.connect(`${server.ws}?token=${await server.token(opts)}`);
  return { client, id: welcome.client as string };
}

describe("who published", () => {
  test("a client's publication reaches another subscriber with from: its user, the client id of its welcome and its name", async () => {
    const { client: ana, id } = await connect({ user: "ana", name: "Ana Lima", pubChannels: ["dept:*"] });
    const watcher = await Client.open(server, { user: "watcher", subChannels: ["dept:*"] });
    await watcher.request({ type: "subscribe", channel: "dept:who" });
    const reply = await ana.request({ type: "publish", channel: "dept:who", event: "deal_closed", data: { id: 9 } });
    const pub = await watcher.next();
    expect(pub).toEqual({
      type: "pub",
      channel: "dept:who",
      event: "deal_closed",
      data: { id: 9 },
      from: { user: "ana", client: id, name: "Ana Lima" },
      offset: reply.offset,
      epoch: reply.epoch,
      ts: expect.any(Number),
    });
    expect(Object.keys(pub)).toEqual(["type", "channel", "event", "data", "from", "offset", "epoch", "ts"]);
    ana.close();
    watcher.close();
  });

  test("a token without a name claim publishes with from naming its user and client only", async () => {
    const { client: bo, id } = await connect({ user: "bo", pubChannels: ["dept:*"] });
    const watcher = await Client.open(server, { user: "watcher", subChannels: ["dept:*"] });
    await watcher.request({ type: "subscribe", channel: "dept:anon" });
    await bo.request({ type: "publish", channel: "dept:anon", event: "ping", data: null });
    expect((await watcher.next()).from).toEqual({ user: "bo", client: id });
    bo.close();
    watcher.close();
  });

  test("publications from REST, chat and the server carry no from", async () => {
    const watcher = await Client.open(server, { user: "watcher", subChannels: ["dept:*", "room:*"] });
    await watcher.request({ type: "subscribe", channel: "dept:rest" });
    expect((await post(server, "/v1/publish", { channel: "dept:rest", event: "deal_closed", data: { id: 1 } }, key)).status).toBe(200);
    const rest = await watcher.next();
    expect(rest).toMatchObject({ channel: "dept:rest", event: "deal_closed" });
    expect(rest).not.toHaveProperty("from");
    await watcher.request({ type: "subscribe", channel: "room:nofrom" });
    const joined = await watcher.next();
    expect(joined).toMatchObject({ event: "user_joined" });
    expect(joined).not.toHaveProperty("from");
    watcher.send({ type: "message", id: "m", room: "nofrom", content: "hi" });
    const chat = await watcher.next();
    expect(chat).toMatchObject({ event: "new_message", data: { sender: "watcher", content: "hi" } });
    expect(chat).not.toHaveProperty("from");
    expect(await watcher.next()).toMatchObject({ type: "reply", id: "m", ok: true });
    watcher.close();
  });

  test("a replay after since shows who published, from memory history (dept) as from durable history (room)", async () => {
    const { client: cy, id } = await connect({ user: "cy", name: "Cy", pubChannels: ["dept:*", "room:*"] });
    for (const channel of ["dept:replay", "room:replay"]) {
      const first = await cy.request({ type: "publish", channel, event: "note", data: { n: 1 } });
      const late = await Client.open(server, { user: "late", subChannels: ["dept:*", "room:*"] });
      const reply = await late.request({ type: "subscribe", channel, since: { epoch: first.epoch, offset: first.offset - 1 } });
      expect(reply).toMatchObject({ ok: true, recovered: true, offset: first.offset });
      expect(await late.next()).toEqual({
        type: "pub",
        channel,
        event: "note",
        data: { n: 1 },
        from: { user: "cy", client: id, name: "Cy" },
        offset: first.offset,
        epoch: first.epoch,
        ts: expect.any(Number),
      });
      late.close();
    }
    cy.close();
  });

  test("a client may not publish a server event: each is refused forbidden, naming it, and nothing is published", async () => {
    const forger = await Client.open(server, { user: "forger", pubChannels: ["*"], subChannels: ["*"] });
    await forger.request({ type: "subscribe", channel: "dept:forged" });
    const watcher = await Client.open(server, { user: "watcher", subChannels: ["dept:*"] });
    await watcher.request({ type: "subscribe", channel: "dept:forged" });
    for (const event of SERVER_EVENTS) {
      const reply = await forger.request({ type: "publish", channel: "dept:forged", event, data: { room: "x", id: 1, content: "forged" } });
      expect(reply).toEqual({ type: "reply", id: reply.id, ok: false, error: { code: "forbidden", message: `event "${event}" is reserved for the server` } });
    }
    // A forged new_message on a room is refused the same way.
    expect(await forger.request({ type: "publish", channel: "room:forged", event: "new_message", data: {} })).toMatchObject({ ok: false, error: { code: "forbidden" } });
    expect(await watcher.silentFor(150)).toBe(true);
    forger.close();
    watcher.close();
  });
});

describe("read receipts", () => {
  test("a receipt naming another room's message is refused not_found; nothing is stored or published", async () => {
    await postMessage("rr1", "agent", "first");
    await postMessage("rr1", "agent", "second");
    const foreign = await postMessage("rr1-other", "agent", "elsewhere");
    const reader = await Client.open(server, { user: "reader1", subChannels: ["room:*"] });
    await reader.request({ type: "subscribe", channel: "room:rr1" });
    expect(await reader.next()).toMatchObject({ event: "user_joined", data: { user: "reader1" } });
    const reply = await reader.request({ type: "read", room: "rr1", message_id: foreign });
    expect(reply).toEqual({ type: "reply", id: reply.id, ok: false, error: { code: "not_found", message: `no message ${foreign} in room "rr1"` } });
    expect(await reader.silentFor(150)).toBe(true);
    expect(await unreadOf("rr1", "reader1")).toBe(2);
    reader.close();
  });

  test("a receipt naming a message that does not exist is refused not_found and the unread count stays", async () => {
    const last = await postMessage("rr2", "agent", "only");
    const reader = await Client.open(server, { user: "reader2", subChannels: ["room:*"] });
    expect(await reader.request({ type: "read", room: "rr2", message_id: 999_999 })).toMatchObject({ ok: false, error: { code: "not_found" } });
    expect(await unreadOf("rr2", "reader2")).toBe(1);
    // The room's own message is still accepted after the refusal.
    expect(await reader.request({ type: "read", room: "rr2", message_id: last })).toMatchObject({ ok: true, message_id: last });
    expect(await unreadOf("rr2", "reader2")).toBe(0);
    reader.close();
  });
});

describe("reading a room as a user", () => {
  test("a user reads the messages of a room their grants cover, newest first with the backends' paging", async () => {
    const ids: number[] = [];
    for (const content of ["one", "two", "three"]) ids.push(await postMessage("hist", "agent", content));
    const token = await server.token({ user: "reader3", subChannels: ["room:hist"] });
    const first = await get("/v1/rooms/hist/messages?limit=2", token);
    expect(first.status).toBe(200);
    const page = (await first.json()) as { messages: { id: number; content: string }[]; next_before: number | null };
    expect(page.messages.map((m) => m.content)).toEqual(["three", "two"]);
    expect(page.next_before).toBe(ids[1]!);
    // Any case of the scheme will do.
    const rest = (await (await get(`/v1/rooms/hist/messages?limit=2&before=${page.next_before}`, token, "bearer")).json()) as typeof page;
    expect(rest).toEqual({ messages: [expect.objectContaining({ id: ids[0], room: "hist", sender: "agent", content: "one" })], next_before: null });
  });

  test("a user is refused (403) the messages and the unread count of a room their grants do not cover", async () => {
    await postMessage("secret", "agent", "not for you");
    const token = await server.token({ user: "outsider", subChannels: ["room:hist", "dept:*"] });
    for (const path of ["/v1/rooms/secret/messages", "/v1/rooms/secret/unread"]) {
      const res = await get(path, token);
      expect(res.status).toBe(403);
      expect(await res.json()).toEqual({ error: { code: "forbidden", message: 'not a participant of room "secret"' } });
    }
  });

  test("a user reads their own unread count, named or not; naming another user is refused (403)", async () => {
    await postMessage("count", "agent", "a");
    await postMessage("count", "agent", "b");
    const token = await server.token({ user: "counter", subChannels: ["room:*"] });
    expect(await (await get("/v1/rooms/count/unread", token)).json()).toEqual({ room: "count", user: "counter", unread: 2 });
    expect(await (await get("/v1/rooms/count/unread?user=counter", token)).json()).toEqual({ room: "count", user: "counter", unread: 2 });
    const other = await get("/v1/rooms/count/unread?user=agent", token);
    expect(other.status).toBe(403);
    expect(((await other.json()) as { error: { code: string } }).error.code).toBe("forbidden");
  });

  test("API keys and admin tokens still read any user's unread count and any room", async () => {
    await postMessage("backend", "agent", "a");
    const admin = await server.token({ user: "boss", roles: ["admin"] });
    for (const credential of [key, admin]) {
      expect(await (await get("/v1/rooms/backend/unread?user=someone", credential)).json()).toEqual({ room: "backend", user: "someone", unread: 1 });
      expect(((await (await get("/v1/rooms/backend/messages", credential)).json()) as { messages: unknown[] }).messages).toHaveLength(1);
    }
    // A backend has no "own" count: the user stays required.
    expect((await get("/v1/rooms/backend/unread", key)).status).toBe(400);
  });

  test("another tenant's room is never visible to a user: the tenant comes from the token", async () => {
    await postMessage("shared-id", "agent", "acme only");
    const globexUser = await server.token({ tenant: "globex", user: "g1", subChannels: ["*"] });
    expect(await (await get("/v1/rooms/shared-id/messages", globexUser)).json()).toEqual({ messages: [], next_before: null });
    expect(await (await get("/v1/rooms/shared-id/unread", globexUser)).json()).toEqual({ room: "shared-id", user: "g1", unread: 0 });
    // And a globex API key sees globex only, whatever the user token's tenant.
    const globexKey = await server.apiKey("globex");
    expect(await (await get("/v1/rooms/shared-id/messages", globexKey)).json()).toEqual({ messages: [], next_before: null });
  });

  test("a token that does not verify is refused 401, whatever room it asks for", async () => {
    const expired = await server.token({ user: "reader3", subChannels: ["room:*"], ttlSec: -60 });
    const res = await get("/v1/rooms/hist/messages", expired);
    expect(res.status).toBe(401);
    expect((await get("/v1/rooms/hist/unread", "not-a-token")).status).toBe(401);
  });
});
