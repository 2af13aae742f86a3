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
