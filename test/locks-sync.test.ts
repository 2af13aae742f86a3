import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Client, post, startServer, type TestServer } from "./helpers.ts";

let server: TestServer;
let key: string;
beforeAll(async () => {
  server = await startServer({ LOCK_TTL_MS: "1000", SWEEP_INTERVAL_MS: "25" });
  key = await server.apiKey("acme");
});
afterAll(() => server.stop());

const erp = (user: string, tenant = "acme") => Client.open(server, { tenant, user, subChannels: ["sync:*"] });

describe("edit locks", () => {
  test("one user at a time: the second gets locked naming the holder and since when; lock/unlock go to sync:<module>", async () => {
    const grid = await erp("viewer");
    await grid.request({ type: "subscribe", channel: "sync:customer" });
    const u1 = await erp("u1");
    const u2 = await erp("u2");
    const taken = await u1.request({ type: "lock", resource: "customer:77" });
    expect(taken).toEqual({
      type: "reply",
      id: 1,
      ok: true,
      lock: { resource: "customer:77", user: "u1", since: expect.any(Number), expires_at: expect.any(Number) },
      renewed: false,
    });
    expect(await grid.next()).toMatchObject({ channel: "sync:customer", event: "lock", data: taken.lock, offset: 1 });
    const refused = await u2.request({ type: "lock", resource: "customer:77" });
    expect(refused).toEqual({
      type: "reply",
      id: 1,
      ok: false,
      error: {
        code: "locked",
        message: `customer:77 is locked by u1 since ${new Date(taken.lock.since).toISOString()}`,
        lock: taken.lock,
      },
    });
    expect(await u2.request({ type: "unlock", resource: "customer:77" })).toMatchObject({ ok: false, error: { code: "forbidden" } });
    expect(await u1.request({ type: "unlock", resource: "customer:77" })).toEqual({ type: "reply", id: 2, ok: true, released: true });
    expect(await grid.next()).toMatchObject({ event: "unlock", data: { resource: "customer:77", user: "u1", since: taken.lock.since }, offset: 2 });
    expect(await u2.request({ type: "lock", resource: "customer:77" })).toMatchObject({ ok: true, lock: { user: "u2" } });
    expect(await u1.request({ type: "unlock", resource: "customer:99" })).toMatchObject({ ok: true, released: false });
    for (const c of [grid, u1, u2]) c.close();
  });

  test("the holder renews by repeating (silently); a lock not renewed expires after the TTL", async () => {
    const grid = await erp("viewer2");
    await grid.request({ type: "subscribe", channel: "sync:order" });
    const holder = await erp("h");
    const first = await holder.request({ type: "lock", resource: "order:1" });
    expect(await grid.next()).toMatchObject({ event: "lock" });
    await Bun.sleep(600);
    const renewed = await holder.request({ type: "lock", resource: "order:1" });
    expect(renewed).toMatchObject({ ok: true, renewed: true, lock: { since: first.lock.since } });
    expect(renewed.lock.expires_at).toBeGreaterThan(first.lock.expires_at);
    await Bun.sleep(600);
    // Past the first expiry, still held thanks to the renewal.
    const other = await erp("o");
    expect(await other.request({ type: "lock", resource: "order:1" })).toMatchObject({ ok: false, error: { code: "locked" } });
    const unlock = await grid.next(2000);
    expect(unlock).toMatchObject({ event: "unlock", data: { resource: "order:1", user: "h" } });
    expect(Date.now()).toBeGreaterThanOrEqual(renewed.lock.expires_at);
    expect(await other.request({ type: "lock", resource: "order:1" })).toMatchObject({ ok: true });
    for (const c of [grid, holder, other]) c.close();
  });

  test("a lock is released when its holder disconnects", async () => {
    const grid = await erp("viewer3");
    await grid.request({ type: "subscribe", channel: "sync:invoice" });
    const holder = await erp("leaver");
    await holder.request({ type: "lock", resource: "invoice:5" });
    expect(await grid.next()).toMatchObject({ event: "lock" });
    holder.close();
    expect(await grid.next()).toMatchObject({ event: "unlock", data: { resource: "invoice:5", user: "leaver" } });
    grid.close();
  });

  test("bad resources, foreign modules and tenants", async () => {
    const c = await Client.open(server, { user: "x", subChannels: ["sync:customer"] });
    expect(await c.request({ type: "lock", resource: "nocolon" })).toMatchObject({ ok: false, error: { code: "bad_request" } });
    expect(await c.request({ type: "lock", resource: "order:1" })).toMatchObject({ ok: false, error: { code: "forbidden" } });
    expect(await c.request({ type: "lock", resource: "customer:1" })).toMatchObject({ ok: true });
    const foreign = await erp("x", "globex");
    // Same resource name in another tenant is another lock.
    expect(await foreign.request({ type: "lock", resource: "customer:1" })).toMatchObject({ ok: true, lock: { user: "x" } });
    c.close();
    foreign.close();
  });
});

describe("data sync", () => {
  test("POST /v1/sync publishes data_sync on sync:<module> so open grids refresh", async () => {
    const grid = await erp("g");
    await grid.request({ type: "subscribe", channel: "sync:customer" });
    const res = await post(server, "/v1/sync", { module: "customer", action: "update", record: { id: 77, name: "Ana" } }, key);
    expect(res.status).toBe(200);
    const answer = (await res.json()) as any;
    expect(answer).toEqual({ offset: expect.any(Number), epoch: expect.any(String) });
    expect(await grid.next()).toMatchObject({
      channel: "sync:customer",
      event: "data_sync",
      data: { module: "customer", action: "update", record: { id: 77, name: "Ana" } },
      offset: answer.offset,
    });
    const bad = await post(server, "/v1/sync", { module: "customer", action: "upsert", record: {} }, key);
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as any).error.message).toStartWith("action:");
    const foreign = await erp("g", "globex");
    await foreign.request({ type: "subscribe", channel: "sync:customer" });
    await post(server, "/v1/sync", { module: "customer", action: "delete", record: { id: 1 } }, key);
    expect(await grid.next()).toMatchObject({ event: "data_sync", data: { action: "delete" } });
    expect(await foreign.silentFor(150)).toBe(true);
    grid.close();
    foreign.close();
  });
});
