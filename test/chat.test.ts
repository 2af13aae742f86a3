import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mintToken } from "../src/auth/tokens.ts";
import { Client, post, SECRET, startServer, type Frame, type TestServer } from "./helpers.ts";

let server: TestServer;
let key: string;
beforeAll(async () => {
  // No leave grace here: user_left at the leave (the grace is in presence-channels.test.ts).
  server = await startServer({ TYPING_THROTTLE_MS: "300", TYPING_TIMEOUT_MS: "500", SWEEP_INTERVAL_MS: "25", PRESENCE_LEAVE_GRACE_MS: "0" });
  key = await server.apiKey("acme");
});
afterAll(() => server.stop());

const chatter = (user: string, tenant = "acme") => Client.open(server, { tenant, user, subChannels: ["room:*", "dept:*"] });

/** Subscribes and consumes the frames the subscribe causes for this client: its reply and its own user_joined. */
async function join(c: Client, room: string, user: string): Promise<Frame> {
  const reply = await c.request({ type: "subscribe", channel: `room:${room}` });
  expect(await c.next()).toMatchObject({ type: "pub", channel: `room:${room}`, event: "user_joined", data: { room, user } });
  return reply;
}

function get(path: string, credential = key): Promise<Response> {
  return fetch(`${server.http}${path}`, { headers: { authorization: `Bearer ${credential}` } });
}

describe("messages", () => {
  test("a message frame is stored, published as new_message to the room with an offset, then replied to", async () => {
    const alice = await chatter("alice");
    const bob = await chatter("bob");
    await join(alice, "m1", "alice");
    await join(bob, "m1", "bob");
    expect(await alice.next()).toMatchObject({ event: "user_joined", data: { user: "bob" } });
    alice.send({ type: "message", id: 9, room: "m1", content: "hello", client_msg_id: "c-1" });
    const pub = await alice.next();
    expect(pub).toEqual({
      type: "pub",
      channel: "room:m1",
      event: "new_message",
      data: { id: expect.any(Number), room: "m1", sender: "alice", content: "hello", created_at: expect.any(Number), client_msg_id: "c-1" },
      offset: 1,
      epoch: expect.any(String),
      ts: expect.any(Number),
    });
    expect(await alice.next()).toEqual({ type: "reply", id: 9, ok: true, message: pub.data });
    expect(await bob.next()).toEqual(pub);
    const stored = (await (await get("/v1/rooms/m1/messages")).json()) as any;
    expect(stored.messages).toEqual([pub.data]);
    alice.close();
    bob.close();
  });

  test("resending a client_msg_id returns the first message and publishes nothing", async () => {
    const alice = await chatter("alice");
    await join(alice, "m2", "alice");
    alice.send({ type: "message", id: 1, room: "m2", content: "once", client_msg_id: "dup" });
    const first = await alice.next();
    const firstReply = await alice.next();
    alice.send({ type: "message", id: 2, room: "m2", content: "once (retry)", client_msg_id: "dup" });
    expect(await alice.next()).toEqual({ type: "reply", id: 2, ok: true, message: first.data });
    expect(firstReply.message).toEqual(first.data);
    const rest = await post(server, "/v1/rooms/m2/messages", { sender: "alice", content: "again", client_msg_id: "dup" }, key);
    expect(await rest.json()).toEqual(first.data);
    expect(await alice.silentFor(150)).toBe(true);
    alice.close();
  });

  test("a backend posts a message over REST and it reaches the room", async () => {
    const bob = await chatter("bob");
    await join(bob, "m3", "bob");
    const res = await post(server, "/v1/rooms/m3/messages", { sender: "system", content: "ticket opened" }, key);
    expect(res.status).toBe(200);
    const message = await res.json();
    expect(message).toEqual({ id: expect.any(Number), room: "m3", sender: "system", content: "ticket opened", created_at: expect.any(Number) });
    expect(await bob.next()).toMatchObject({ event: "new_message", data: message });
    bob.close();
  });

  test("bad message frames get documented errors; a room the user may not join is forbidden", async () => {
    const outsider = await Client.open(server, { user: "eve", subChannels: ["dept:*"] });
    expect(await outsider.request({ type: "message", room: "m1", content: "hi" })).toMatchObject({ ok: false, error: { code: "forbidden" } });
    expect(await outsider.request({ type: "message", room: "m1", content: "" })).toMatchObject({ ok: false, error: { code: "bad_request" } });
    expect(await outsider.request({ type: "message", room: "bad room", content: "x" })).toMatchObject({ ok: false, error: { code: "bad_request" } });
    expect(await outsider.request({ type: "read", room: "m1", message_id: "7" })).toMatchObject({ ok: false, error: { code: "bad_request" } });
    const res = await post(server, "/v1/rooms/m1/messages", { sender: "x", content: 5 }, key);
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({ error: { code: "bad_request", message: expect.stringMatching(/^content: /) } });
    outsider.close();
  });

  test("history pages newest first and stays stable while messages arrive", async () => {
    for (let i = 1; i <= 30; i++) await post(server, "/v1/rooms/h1/messages", { sender: "a", content: `m${i}` }, key);
    const seen: string[] = [];
    let before: number | null = null;
    let n = 0;
    for (;;) {
      const page = (await (await get(`/v1/rooms/h1/messages?limit=7${before ? `&before=${before}` : ""}`)).json()) as any;
      // Messages keep arriving between pages; they are newer than the first page and never show up later.
      await post(server, "/v1/rooms/h1/messages", { sender: "b", content: `late${n++}` }, key);
      seen.push(...page.messages.map((m: any) => m.content));
      if (page.next_before === null) break;
      before = page.next_before;
    }
    expect(seen).toEqual(Array.from({ length: 30 }, (_, i) => `m${30 - i}`));
    const bad = await get("/v1/rooms/h1/messages?limit=0");
    expect(bad.status).toBe(400);
  });
});

describe("joins, typing and receipts", () => {
  test("two tabs of one user join once and leave once", async () => {
    const watcher = await chatter("watcher");
    await join(watcher, "j1", "watcher");
    const tab1 = await chatter("carol");
    const tab2 = await chatter("carol");
    await join(tab1, "j1", "carol");
    expect(await watcher.next()).toMatchObject({ event: "user_joined", data: { room: "j1", user: "carol" } });
    expect(await tab2.request({ type: "subscribe", channel: "room:j1" })).toMatchObject({ ok: true });
    expect(await watcher.silentFor(100)).toBe(true);
    tab1.close();
    await tab1.closed;
    expect(await watcher.silentFor(100)).toBe(true);
    expect(await tab2.request({ type: "unsubscribe", channel: "room:j1" })).toMatchObject({ ok: true });
    const left = await watcher.next();
    expect(left).toMatchObject({ event: "user_left", data: { room: "j1", user: "carol" } });
    // Joins and leaves are ephemeral, like typing: no offset, never in history.
    expect(left.offset).toBeUndefined();
    tab2.close();
    watcher.close();
  });

  test("typing reaches the others, not the typist, at most once per throttle window, and expires", async () => {
    const typist = await chatter("tina");
    const reader = await chatter("rick");
    await join(typist, "t1", "tina");
    await join(reader, "t1", "rick");
    expect(await typist.next()).toMatchObject({ event: "user_joined" });
    typist.send({ type: "typing", room: "t1", typing: true });
    const started = Date.now();
    const frame = await reader.next();
    expect(frame).toEqual({ type: "pub", channel: "room:t1", event: "typing", data: { room: "t1", user: "tina", typing: true }, ts: expect.any(Number) });
    typist.send({ type: "typing", room: "t1", typing: true });
    typist.send({ type: "typing", room: "t1", typing: true });
    // No repeat within the throttle window; typing:false once the timeout passes without a repeat after the last one.
    const stop = await reader.next(2000);
    expect(stop).toMatchObject({ event: "typing", data: { user: "tina", typing: false } });
    expect(Date.now() - started).toBeGreaterThanOrEqual(450);
    expect(await typist.silentFor(100)).toBe(true);
    typist.close();
    reader.close();
  });

  test("typing:false goes out when the typist disconnects; typing, joins and leaves take no offset", async () => {
    const typist = await chatter("tom");
    const reader = await chatter("ria");
    await join(typist, "t2", "tom");
    await join(reader, "t2", "ria");
    typist.send({ type: "typing", room: "t2", typing: true });
    expect((await reader.next()).data).toEqual({ room: "t2", user: "tom", typing: true });
    typist.close();
    expect(await reader.next()).toMatchObject({ event: "typing", data: { user: "tom", typing: false } });
    const left = await reader.next();
    expect(left).toMatchObject({ event: "user_left", data: { user: "tom" } });
    expect(left.offset).toBeUndefined();
    // The room's first publication still has offset 1: nothing before it took one.
    const first = (await (await post(server, "/v1/publish", { channel: "room:t2", event: "note", data: 1 }, key)).json()) as { offset: number };
    expect(first.offset).toBe(1);
    reader.close();
  });

  test("read stores the furthest message, publishes message_read, and unread counts follow", async () => {
    const ids: number[] = [];
    for (const content of ["a", "b", "c"]) ids.push(((await (await post(server, "/v1/rooms/r1/messages", { sender: "agent", content }, key)).json()) as any).id);
    const unread = async (user: string) => ((await (await get(`/v1/rooms/r1/unread?user=${user}`)).json()) as any).unread;
    expect(await unread("cust")).toBe(3);
    const cust = await chatter("cust");
    await join(cust, "r1", "cust");
    cust.send({ type: "read", id: 1, room: "r1", message_id: ids[1] });
    expect(await cust.next()).toMatchObject({ event: "message_read", data: { room: "r1", message_id: ids[1], user: "cust" } });
    expect(await cust.next()).toEqual({ type: "reply", id: 1, ok: true, message_id: ids[1] });
    expect(await unread("cust")).toBe(1);
    // A receipt never moves back: reading an older message answers with the furthest one.
    cust.send({ type: "read", id: 2, room: "r1", message_id: ids[0] });
    expect(await cust.next()).toMatchObject({ event: "message_read", data: { message_id: ids[1] } });
    expect(await cust.next()).toEqual({ type: "reply", id: 2, ok: true, message_id: ids[1] });
    expect(await unread("cust")).toBe(1);
    expect(await unread("agent")).toBe(0);
    cust.close();
  });
});

describe("conversations announced by a backend", () => {
  test("PUT /v1/rooms/:room announces new_conversation, then conversation_updated, on the room and notify channels", async () => {
    const agents = await chatter("agent1");
    expect(await agents.request({ type: "subscribe", channel: "dept:support" })).toMatchObject({ ok: true });
    const body = { members: ["cust9"], assigned_agent: "agent1", meta: { subject: "refund" }, notify: ["dept:support"] };
    const res = await fetch(`${server.http}/v1/rooms/c9`, { method: "PUT", headers: { authorization: `Bearer ${key}` }, body: JSON.stringify(body) });
    const created = (await res.json()) as any;
    expect(created).toEqual({
      created: true,
      room: { id: "c9", status: "open", assigned_agent: "agent1", members: ["cust9"], meta: { subject: "refund" }, created_at: expect.any(Number), updated_at: expect.any(Number) },
    });
    expect(await agents.next()).toMatchObject({ channel: "dept:support", event: "new_conversation", data: created.room });
    const closed = await fetch(`${server.http}/v1/rooms/c9`, { method: "PUT", headers: { authorization: `Bearer ${key}` }, body: JSON.stringify({ status: "closed", notify: ["dept:support"] }) });
    expect(((await closed.json()) as any).created).toBe(false);
    expect(await agents.next()).toMatchObject({ event: "conversation_updated", data: { id: "c9", status: "closed", assigned_agent: "agent1" } });
    expect(((await (await get("/v1/rooms/c9")).json()) as any).status).toBe("closed");
    expect((await get("/v1/rooms/nope")).status).toBe(404);
    agents.close();
  });
});

describe("tenant isolation", () => {
  test("the same room id in another tenant shares nothing: messages, joins, typing, receipts, history", async () => {
    const acme = await chatter("same", "acme");
    const globex = await chatter("same", "globex");
    await join(acme, "iso", "same");
    await join(globex, "iso", "same");
    acme.send({ type: "message", room: "iso", content: "acme secret" });
    acme.send({ type: "typing", room: "iso", typing: true });
    expect(await acme.next()).toMatchObject({ event: "new_message" });
    expect(await globex.silentFor(150)).toBe(true);
    const globexKey = await server.apiKey("globex");
    const page = (await (await get("/v1/rooms/iso/messages", globexKey)).json()) as any;
    expect(page.messages).toEqual([]);
    expect(((await (await get("/v1/rooms/iso/unread?user=same", globexKey)).json()) as any).unread).toBe(0);
    acme.close();
    globex.close();
  });
});

test("after a restart on the same store, rooms, messages, receipts and notifications are all there", async () => {
  const first = await startServer();
  const k = await first.apiKey("acme");
  const m = (await (await post(first, "/v1/rooms/keep/messages", { sender: "a", content: "persisted", client_msg_id: "k1" }, k)).json()) as any;
  await fetch(`${first.http}/v1/rooms/keep`, { method: "PUT", headers: { authorization: `Bearer ${k}` }, body: JSON.stringify({ status: "closed", assigned_agent: "ag" }) });
  await post(first, "/v1/notifications", { user: "offline-user", category: "c", title: "kept for later", message: "m" }, k);
  const reader = await Client.open(first, { user: "b", subChannels: ["room:*"] });
  expect(await reader.request({ type: "read", room: "keep", message_id: m.id })).toMatchObject({ ok: true });
  reader.close();
  await reader.closed;
  const again = await first.restart();
  try {
    const base = again.http;
    const h = { authorization: `Bearer ${k}` };
    expect(((await (await fetch(`${base}/v1/rooms/keep/messages`, { headers: h })).json()) as any).messages).toEqual([m]);
    expect(await (await fetch(`${base}/v1/rooms/keep`, { headers: h })).json()).toMatchObject({ status: "closed", assigned_agent: "ag" });
    expect(((await (await fetch(`${base}/v1/rooms/keep/unread?user=b`, { headers: h })).json()) as any).unread).toBe(0);
    const resend = await fetch(`${base}/v1/rooms/keep/messages`, { method: "POST", headers: h, body: JSON.stringify({ sender: "a", content: "x", client_msg_id: "k1" }) });
    expect(await resend.json()).toEqual(m);
    // The notification that was pending before the restart is pushed at the user's first connect after it.
    const token = await mintToken(SECRET, { tenant: "acme", user: "offline-user", ttlSec: 60 });
    const { client } = await Client.connect(`${again.ws}?token=${token}`);
    expect(await client.next()).toMatchObject({ channel: "user:offline-user", event: "notification", data: { title: "kept for later" } });
    client.close();
  } finally {
    await again.stop();
  }
});
