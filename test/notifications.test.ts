import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Client, post, startServer, type TestServer } from "./helpers.ts";

let server: TestServer;
let key: string;
beforeAll(async () => {
  server = await startServer();
  key = await server.apiKey("acme");
});
afterAll(() => server.stop());

const note = { category: "ticket", title: "New ticket", message: "Ticket #7 was assigned to you", data: { ticket: 7 }, action: "/tickets/7" };

async function me(path: string, token: string, init: RequestInit = {}) {
  const res = await fetch(`${server.http}${path}`, { ...init, headers: { authorization: `Bearer ${token}`, ...(init.headers ?? {}) } });
  return { status: res.status, body: (await res.json()) as any };
}

describe("notifications", () => {
  test("a connected user gets it pushed on user:<id> at once; it is stored and listable", async () => {
    const amy = await Client.open(server, { user: "amy" });
    const res = await post(server, "/v1/notifications", { user: "amy", ...note }, key);
    const sent = (await res.json()) as any;
    expect(sent).toEqual({ notifications: [{ user: "amy", id: expect.any(Number), status: "pushed" }] });
    const id = sent.notifications[0].id;
    expect(await amy.next()).toEqual({
      type: "pub",
      channel: "user:amy",
      event: "notification",
      data: { id, category: "ticket", title: "New ticket", message: "Ticket #7 was assigned to you", data: { ticket: 7 }, action: "/tickets/7", created_at: expect.any(Number) },
      offset: 1,
      epoch: expect.any(String),
      ts: expect.any(Number),
    });
    const token = await server.token({ user: "amy" });
    const list = await me("/v1/me/notifications?unread=1", token);
    expect(list.body.notifications).toEqual([expect.objectContaining({ id, title: "New ticket", read: false })]);
    amy.close();
  });

  test("a user who was offline gets the pending ones after welcome at the next connect, exactly once", async () => {
    const sent = (await (await post(server, "/v1/notifications", { users: ["bob", "bob"], ...note, title: "while away" }, key)).json()) as any;
    expect(sent.notifications).toEqual([{ user: "bob", id: expect.any(Number), status: "pending" }]);
    await post(server, "/v1/notifications", { user: "bob", ...note, title: "second" }, key);
    const token = await server.token({ user: "bob" });
    const { client, welcome } = await Client.connect(`${server.ws}?token=${token}`);
    expect(welcome.type).toBe("welcome");
    expect(await client.next()).toMatchObject({ channel: "user:bob", event: "notification", data: { title: "while away" }, offset: 1 });
    expect(await client.next()).toMatchObject({ channel: "user:bob", event: "notification", data: { title: "second" }, offset: 2 });
    expect(await client.silentFor(150)).toBe(true);
    client.close();
    await client.closed;
    // Reconnecting (two tabs at once) delivers nothing again.
    const [a, b] = await Promise.all([Client.connect(`${server.ws}?token=${token}`), Client.connect(`${server.ws}?token=${token}`)]);
    expect(await a.client.silentFor(200)).toBe(true);
    expect(await b.client.silentFor(10)).toBe(true);
    // They stay unread and listable until marked read.
    expect((await me("/v1/me/notifications?unread=1", token)).body.notifications.map((n: any) => n.title)).toEqual(["second", "while away"]);
    a.client.close();
    b.client.close();
  });

  test("muted categories are stored and listed but never pushed, now or at the next connect", async () => {
    const token = await server.token({ user: "cat" });
    expect(await me("/v1/me/preferences", token, { method: "PUT", body: JSON.stringify({ muted_categories: ["marketing"] }) })).toEqual({
      status: 200,
      body: { muted_categories: ["marketing"] },
    });
    const online = await Client.open(server, { user: "cat" });
    const sent = (await (await post(server, "/v1/notifications", { user: "cat", ...note, category: "marketing" }, key)).json()) as any;
    expect(sent.notifications[0].status).toBe("muted");
    expect(await online.silentFor(150)).toBe(true);
    online.close();
    await online.closed;
    const again = await Client.open(server, { user: "cat" });
    expect(await again.silentFor(150)).toBe(true);
    expect((await me("/v1/me/notifications", token)).body.notifications.map((n: any) => n.category)).toEqual(["marketing"]);
    expect((await me("/v1/me/preferences", token)).body).toEqual({ muted_categories: ["marketing"] });
    again.close();
  });

  test("marking read by ids or all; unread filter and paging", async () => {
    const token = await server.token({ user: "dan" });
    const ids: number[] = [];
    for (let i = 1; i <= 3; i++) ids.push(((await (await post(server, "/v1/notifications", { user: "dan", ...note, title: `n${i}` }, key)).json()) as any).notifications[0].id);
    expect((await me("/v1/me/notifications/read", token, { method: "POST", body: JSON.stringify({ ids: [ids[0]] }) })).body).toEqual({ updated: 1 });
    expect((await me("/v1/me/notifications?unread=1", token)).body.notifications.map((n: any) => n.title)).toEqual(["n3", "n2"]);
    expect((await me(`/v1/me/notifications?limit=1&before=${ids[2]}`, token)).body.notifications.map((n: any) => n.title)).toEqual(["n2"]);
    expect((await me("/v1/me/notifications/read", token, { method: "POST", body: JSON.stringify({ all: true }) })).body).toEqual({ updated: 2 });
    expect((await me("/v1/me/notifications?unread=1", token)).body.notifications).toEqual([]);
    expect((await me("/v1/me/notifications/read", token, { method: "POST", body: JSON.stringify({ all: false }) })).status).toBe(400);
  });

  test("a channel notification reaches the channel's subscribers", async () => {
    const sales = await Client.open(server, { user: "s1", subChannels: ["dept:*"] });
    await sales.request({ type: "subscribe", channel: "dept:sales" });
    const res = (await (await post(server, "/v1/notifications", { channel: "dept:sales", ...note }, key)).json()) as any;
    expect(res).toEqual({ channel: "dept:sales", offset: 1, epoch: expect.any(String) });
    expect(await sales.next()).toMatchObject({ channel: "dept:sales", event: "notification", data: { title: "New ticket", created_at: expect.any(Number) } });
    sales.close();
  });

  test("bad requests: no target or two, bad category, a user token on the backend route, no token on /me", async () => {
    expect((await post(server, "/v1/notifications", { ...note }, key)).status).toBe(400);
    expect((await post(server, "/v1/notifications", { user: "a", users: ["b"], ...note }, key)).status).toBe(400);
    expect((await post(server, "/v1/notifications", { user: "a", ...note, category: "has space" }, key)).status).toBe(400);
    expect((await post(server, "/v1/notifications", { user: "a", ...note }, await server.token({ user: "a" }))).status).toBe(403);
    expect((await fetch(`${server.http}/v1/me/notifications`)).status).toBe(401);
  });

  test("tenant isolation: another tenant's user with the same id gets nothing and lists nothing", async () => {
    const foreign = await Client.open(server, { tenant: "globex", user: "eve" });
    await post(server, "/v1/notifications", { user: "eve", ...note }, key);
    expect(await foreign.silentFor(150)).toBe(true);
    expect((await me("/v1/me/notifications", await server.token({ tenant: "globex", user: "eve" }))).body.notifications).toEqual([]);
    foreign.close();
    // acme's eve gets hers at connect.
    const acmeEve = await Client.open(server, { user: "eve" });
    expect(await acmeEve.next()).toMatchObject({ event: "notification", data: { title: "New ticket" } });
    acmeEve.close();
  });
});
