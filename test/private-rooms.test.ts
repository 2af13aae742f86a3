import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mintToken, type MintOptions } from "../src/auth/tokens.ts";
import { parseChannel } from "../src/channel.ts";
import { RoomAccess } from "../src/chat/room-access.ts";
import { RoomMembers } from "../src/chat/room-members.ts";
import { ConfigError, loadConfig } from "../src/config.ts";
import { Namespaces } from "../src/namespaces.ts";
import { Client, handshake, post, SECRET, startServer, type Frame, type TestServer } from "./helpers.ts";

// Private rooms (a room with members admits only them, exact grants and admins), direct chats
// set up by a backend, channel tokens on subscribe, and the room namespace's members_only.

let server: TestServer;
let key: string;
beforeAll(async () => {
  server = await startServer();
  key = await server.apiKey("acme");
});
afterAll(() => server.stop());

const open = (user: string, more: Partial<MintOptions> = {}) => Client.open(server, { user, ...more });
/** A support agent's usual grants: every room, subscribe and publish. */
const agent = (user: string) => open(user, { subChannels: ["room:*"], pubChannels: ["room:*"] });

let ids = 0;
/** Sends `frame` with a fresh id and returns its reply, skipping the publications that come first. */
async function ask(c: Client, frame: Frame): Promise<Frame> {
  const id = `q${++ids}`;
  c.send({ ...frame, id });
  for (;;) {
    const f = await c.next();
    if (f.type === "reply" && f.id === id) return f;
  }
}

/** The next publication of `event`, skipping others (joins). */
async function nextEvent(c: Client, event: string): Promise<Frame> {
  for (;;) {
    const f = await c.next();
    if (f.type === "pub" && f.event === event) return f;
  }
}

function refused(message: string) {
  return { ok: false, error: { code: "forbidden", message } };
}

async function putRoom(room: string, body: Record<string, unknown>, server_ = server, key_ = key): Promise<any> {
  const res = await fetch(`${server_.http}/v1/rooms/${room}`, { method: "PUT", headers: { authorization: `Bearer ${key_}` }, body: JSON.stringify(body) });
  expect(res.status).toBe(200);
  return res.json();
}

/** A backend's message into the room; its id is what a `read` frame points at. */
async function backendMessage(room: string, sender: string, content: string): Promise<number> {
  const res = await post(server, `/v1/rooms/${room}/messages`, { sender, content }, key);
  expect(res.status).toBe(200);
  return ((await res.json()) as any).id;
}

function getAs(path: string, credential: string): Promise<Response> {
  return fetch(`${server.http}${path}`, { headers: { authorization: `Bearer ${credential}` } });
}

describe("a room with members", () => {
  test("refuses a non-member holding room:* to subscribe, send, type, mark read, publish and read history or unread over REST", async () => {
    await putRoom("conv-1", { members: ["alice", "bob"] });
    const messageId = await backendMessage("conv-1", "alice", "private words");
    const alice = await open("alice");
    expect(await ask(alice, { type: "subscribe", channel: "room:conv-1" })).toMatchObject({ ok: true });
    const outsider = await agent("eve");

    expect(await ask(outsider, { type: "subscribe", channel: "room:conv-1" })).toMatchObject(refused('not allowed to subscribe to "room:conv-1"'));
    expect(await ask(outsider, { type: "message", room: "conv-1", content: "hi" })).toMatchObject(refused('not a participant of room "conv-1"'));
    expect(await ask(outsider, { type: "typing", room: "conv-1", typing: true })).toMatchObject(refused('not a participant of room "conv-1"'));
    expect(await ask(outsider, { type: "read", room: "conv-1", message_id: messageId })).toMatchObject(refused('not a participant of room "conv-1"'));
    expect(await ask(outsider, { type: "publish", channel: "room:conv-1", event: "note", data: 1 })).toMatchObject(refused('not allowed to publish to "room:conv-1"'));

    const eveToken = await server.token({ user: "eve", subChannels: ["room:*"] });
    for (const path of ["/v1/rooms/conv-1/messages", "/v1/rooms/conv-1/unread"]) {
      const res = await getAs(path, eveToken);
      expect(res.status).toBe(403);
      expect(await res.json()).toEqual({ error: { code: "forbidden", message: 'not a participant of room "conv-1"' } });
    }
    // Alice saw her own join and nothing the outsider tried.
    expect(await alice.next()).toMatchObject({ event: "user_joined", data: { user: "alice" } });
    expect(await alice.silentFor(100)).toBe(true);
    alice.close();
    outsider.close();
  });

  test("admits its members without any grant, a user whose grants name it exactly, and an admin", async () => {
    await putRoom("conv-2", { members: ["alice", "bob"] });
    const messageId = await backendMessage("conv-2", "bob", "hello");
    const member = await open("alice");
    const named = await open("carol", { subChannels: ["room:conv-2"] });
    const admin = await open("ops", { roles: ["admin"] });
    for (const [c, user] of [[member, "alice"], [named, "carol"], [admin, "ops"]] as const) {
      expect(await ask(c, { type: "subscribe", channel: "room:conv-2" })).toMatchObject({ ok: true, channel: "room:conv-2" });
      expect(await ask(c, { type: "message", room: "conv-2", content: `from ${user}` })).toMatchObject({ ok: true, message: { sender: user } });
      expect(await ask(c, { type: "typing", room: "conv-2", typing: false })).toMatchObject({ ok: true });
      expect(await ask(c, { type: "read", room: "conv-2", message_id: messageId })).toMatchObject({ ok: true, message_id: messageId });
    }
    for (const [user, grants] of [["alice", []], ["carol", ["room:conv-2"]]] as const) {
      const token = await server.token({ user, subChannels: [...grants] });
      const page = (await (await getAs("/v1/rooms/conv-2/messages", token)).json()) as any;
      expect(page.messages.map((m: Frame) => m.content)).toEqual(["from ops", "from carol", "from alice", "hello"]);
      // Each read "hello"; the two later messages of the other two are unread.
      expect(((await (await getAs("/v1/rooms/conv-2/unread", token)).json()) as any).unread).toBe(2);
    }
    member.close();
    named.close();
    admin.close();
  });

  test("members added by a later PUT get in at once, and the earlier members stay", async () => {
    const carl = await open("carl");
    const dana = await open("dana");
    await putRoom("conv-3", { members: ["carl"] });
    expect(await ask(dana, { type: "message", room: "conv-3", content: "too early" })).toMatchObject(refused('not a participant of room "conv-3"'));
    const changed = await putRoom("conv-3", { members: ["dana"] });
    expect(changed.room.members).toEqual(["carl", "dana"]);
    expect(await ask(dana, { type: "message", room: "conv-3", content: "now" })).toMatchObject({ ok: true });
    expect(await ask(carl, { type: "message", room: "conv-3", content: "still here" })).toMatchObject({ ok: true });
    carl.close();
    dana.close();
  });
});

describe("a room without members", () => {
  test("keeps the grant rules: room:* admits, no grant refuses, a pub_channels grant alone publishes", async () => {
    const withGrant = await agent("gina");
    const without = await open("hank");
    const publisherOnly = await open("ivan", { pubChannels: ["room:*"] });
    expect(await ask(withGrant, { type: "subscribe", channel: "room:lobby" })).toMatchObject({ ok: true });
    expect(await ask(withGrant, { type: "message", room: "lobby", content: "hi all" })).toMatchObject({ ok: true });
    expect(await ask(without, { type: "subscribe", channel: "room:lobby" })).toMatchObject(refused('not allowed to subscribe to "room:lobby"'));
    expect(await ask(publisherOnly, { type: "publish", channel: "room:lobby", event: "note", data: 1 })).toMatchObject({ ok: true });
    for (const c of [withGrant, without, publisherOnly]) c.close();
  });
});

test("a direct chat between two users: a backend PUTs the room with both as members, and their current tokens work", async () => {
  // Connected before the room exists, with tokens that grant no room at all.
  const ana = await open("ana");
  const ben = await open("ben");
  expect(await ask(ana, { type: "subscribe", channel: "room:dm-ana-ben" })).toMatchObject(refused('not allowed to subscribe to "room:dm-ana-ben"'));
  const { created, room } = await putRoom("dm-ana-ben", { members: ["ana", "ben"] });
  expect({ created, members: room.members }).toEqual({ created: true, members: ["ana", "ben"] });

  expect(await ask(ana, { type: "subscribe", channel: "room:dm-ana-ben" })).toMatchObject({ ok: true });
  expect(await ask(ben, { type: "subscribe", channel: "room:dm-ana-ben" })).toMatchObject({ ok: true });
  expect(await ask(ana, { type: "message", room: "dm-ana-ben", content: "lunch?" })).toMatchObject({ ok: true });
  const received = await nextEvent(ben, "new_message");
  expect(received).toMatchObject({ type: "pub", channel: "room:dm-ana-ben", event: "new_message", data: { sender: "ana", content: "lunch?" } });
  expect(await ask(ben, { type: "read", room: "dm-ana-ben", message_id: received.data.id })).toMatchObject({ ok: true });
  const benToken = await server.token({ user: "ben" });
  expect(((await (await getAs("/v1/rooms/dm-ana-ben/unread", benToken)).json()) as any).unread).toBe(0);
  ana.close();
  ben.close();
});

describe("channel tokens", () => {
  const channelToken = (user: string, channel: string, ttlSec = 60, secret = SECRET) => mintToken(secret, { tenant: "acme", user, channel, ttlSec });

  test("admit a non-member to a private room, whose chat frames that connection may then use while it holds the room", async () => {
    await putRoom("conv-4", { members: ["alice"] });
    const viaToken = await open("dave");
    const other = await open("dave");
    expect(await ask(viaToken, { type: "subscribe", channel: "room:conv-4", token: channelToken("dave", "room:conv-4") })).toMatchObject({ ok: true, channel: "room:conv-4" });
    expect(await ask(viaToken, { type: "message", room: "conv-4", content: "invited" })).toMatchObject({ ok: true, message: { sender: "dave" } });
    expect(await ask(viaToken, { type: "typing", room: "conv-4", typing: false })).toMatchObject({ ok: true });
    // The token admitted that connection's subscription, not the user everywhere.
    expect(await ask(other, { type: "message", room: "conv-4", content: "me too" })).toMatchObject(refused('not a participant of room "conv-4"'));
    expect(await ask(viaToken, { type: "unsubscribe", channel: "room:conv-4" })).toMatchObject({ ok: true });
    expect(await ask(viaToken, { type: "message", room: "conv-4", content: "after leaving" })).toMatchObject(refused('not a participant of room "conv-4"'));
    viaToken.close();
    other.close();
  });

  test("an expired, forged, other-channel or other-user token, or a connection token, is refused with the reason", async () => {
    await putRoom("conv-5", { members: ["alice"] });
    const dave = await agent("dave");
    const attempts: [string, string][] = [
      [channelToken("dave", "room:conv-5", -10), "channel token refused: token expired"],
      [channelToken("dave", "room:conv-5", 60, "another-secret-that-is-also-long-enough!!"), "channel token refused: token signature is invalid"],
      [channelToken("dave", "room:conv-6"), 'channel token refused: it is for channel "room:conv-6", not "room:conv-5"'],
      [channelToken("alice", "room:conv-5"), 'channel token refused: it is for user "alice", this connection is "dave"'],
      [mintToken(SECRET, { tenant: "globex", user: "dave", channel: "room:conv-5", ttlSec: 60 }), "channel token refused: it is for another tenant"],
      [await server.token({ user: "dave", subChannels: ["room:conv-5"] }), 'channel token refused: token claim "channel" is missing: a connection token is no channel token'],
    ];
    for (const [token, message] of attempts) {
      expect(await ask(dave, { type: "subscribe", channel: "room:conv-5", token })).toMatchObject(refused(message));
    }
    dave.close();
  });

  test("cannot open a connection", async () => {
    const res = await handshake(`${server.ws}?token=${channelToken("dave", "room:conv-5")}`);
    expect(res.status).toBe(401);
    expect(((await res.json()) as any).error.message).toStartWith('token claim "channel" marks a channel token');
  });
});

describe("members_only on the room namespace", () => {
  let strict: TestServer;
  let strictKey: string;
  beforeAll(async () => {
    strict = await startServer({ SINAL_NAMESPACES: JSON.stringify([{ name: "room", members_only: true }]) });
    strictKey = await strict.apiKey("acme");
  });
  afterAll(() => strict.stop());

  test("refuses room:* holders in rooms without members; exact grants, admins and members get in", async () => {
    const wildcard = await Client.open(strict, { user: "ivy", subChannels: ["room:*"] });
    const everything = await Client.open(strict, { user: "jon", subChannels: ["*"] });
    const named = await Client.open(strict, { user: "kim", subChannels: ["room:open-1"] });
    const admin = await Client.open(strict, { user: "ops", roles: ["admin"] });
    expect(await ask(wildcard, { type: "subscribe", channel: "room:open-1" })).toMatchObject(refused('not allowed to subscribe to "room:open-1"'));
    expect(await ask(wildcard, { type: "message", room: "open-1", content: "hi" })).toMatchObject(refused('not a participant of room "open-1"'));
    expect(await ask(everything, { type: "subscribe", channel: "room:open-1" })).toMatchObject(refused('not allowed to subscribe to "room:open-1"'));
    expect(await ask(named, { type: "subscribe", channel: "room:open-1" })).toMatchObject({ ok: true });
    expect(await ask(admin, { type: "subscribe", channel: "room:open-1" })).toMatchObject({ ok: true });

    await putRoom("team", { members: ["ivy"] }, strict, strictKey);
    expect(await ask(wildcard, { type: "subscribe", channel: "room:team" })).toMatchObject({ ok: true });
    for (const c of [wildcard, everything, named, admin]) c.close();
  });

  test("on another namespace stops the start naming the namespace", () => {
    const env = { JWT_SECRET: SECRET, SINAL_NAMESPACES: JSON.stringify([{ name: "campaign", members_only: true }]) };
    expect(() => loadConfig(env)).toThrow(new ConfigError("SINAL_NAMESPACES", 'namespace "campaign": members_only applies to room only (only rooms have members)'));
  });
});

describe("the member cache, when another node changes members in the shared store", () => {
  // Writing to the store directly is what another node's PUT does: this node's cache hears nothing.
  const elsewhere = (room: string, members: string[]) => server.store.chat.upsertRoom("acme", room, { members }, Date.now());

  test("a room made private there admits a room:* holder here for at most 5 s", async () => {
    let now = 0;
    const access = new RoomAccess(new RoomMembers(server.store.chat, () => now), Namespaces.builtIn());
    const room = parseChannel("acme", "room:cache-1");
    const eve = { user: "eve", subChannels: ["room:*"], roles: [] };
    expect(await access.mayUseRoom(eve, room)).toBe(true);
    await elsewhere("cache-1", ["zed"]);
    now = 5_000;
    expect(await access.mayUseRoom(eve, room)).toBe(true);
    now = 5_001;
    expect(await access.mayUseRoom(eve, room)).toBe(false);
  });

  test("a member added there is refused here only while the refusing read is under 1 s old", async () => {
    let now = 0;
    const access = new RoomAccess(new RoomMembers(server.store.chat, () => now), Namespaces.builtIn());
    const room = parseChannel("acme", "room:cache-2");
    const yan = { user: "yan", subChannels: [], roles: [] };
    await elsewhere("cache-2", ["zed"]);
    expect(await access.mayUseRoom(yan, room)).toBe(false);
    await elsewhere("cache-2", ["yan"]);
    now = 1_000;
    expect(await access.mayUseRoom(yan, room)).toBe(false);
    now = 1_001;
    expect(await access.mayUseRoom(yan, room)).toBe(true);
  });
});
