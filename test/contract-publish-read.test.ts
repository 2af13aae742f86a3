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
