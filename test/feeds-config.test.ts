import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ObjectId, Decimal128, Long } from "mongodb";
import { parseChannel } from "../src/channel.ts";
import { ConfigError, loadConfig } from "../src/config.ts";
import type { FeedConfig } from "../src/feeds/feed-config.ts";
import { resolveDocument, toPlain } from "../src/feeds/feed-document.ts";
import { backoffMs } from "../src/feeds/feed-watcher.ts";
import { SnapshotCache } from "../src/feeds/snapshot-cache.ts";

const BASE = { JWT_SECRET: "x".repeat(32), MONGODB_URI: "mongodb://127.0.0.1:27017", MONGODB_DB: "runcash" };
const ROULETTES = { collection: "roulettes", channel: "roulette:{_id}", tenant_field: "tenant_id", event: "roulette_update" };

function feeds(list: unknown, env: Record<string, string> = {}): FeedConfig[] {
  return loadConfig({ ...BASE, SINAL_FEEDS: JSON.stringify(list), ...env }).mongo!.feeds;
}

function failure(env: Record<string, string>): string {
  try {
    loadConfig({ JWT_SECRET: "x".repeat(32), ...env });
  } catch (err) {
    if (err instanceof ConfigError) return err.message;
    throw err;
  }
  throw new Error("expected a ConfigError");
}

describe("feed configuration", () => {
  test("MONGODB_URI unset means no feeds", () => {
    expect(loadConfig({ JWT_SECRET: "x".repeat(32) }).mongo).toBeNull();
  });

  test("a feed with defaults: name from the collection, delete event from the event, whole document", () => {
    const [feed] = feeds([ROULETTES]);
    expect(feed).toMatchObject({
      name: "roulettes",
      db: "runcash",
      collection: "roulettes",
      tenant: { kind: "field", path: "tenant_id" },
      event: "roulette_update",
      deleteEvent: "roulette_deleted",
      fields: null,
      snapshot: { kind: "document" },
    });
    expect(feed!.channel.parts).toEqual([{ literal: "roulette:" }, { path: "_id" }]);
  });

  test("fixed tenant, projection, latest-N snapshot, database from the URI path", () => {
    const [feed] = loadConfig({
      JWT_SECRET: "x".repeat(32),
      MONGODB_URI: "mongodb://db.internal:27017/casino?replicaSet=rs0",
      SINAL_FEEDS: JSON.stringify([
        { name: "wheel", collection: "roulettes", channel: "roulette:{_id}", tenant: "acme", event: "spin", fields: ["numbers", "meta.table"], snapshot: { field: "numbers", latest: 20, newest: "first" } },
      ]),
    }).mongo!.feeds;
    expect(feed).toMatchObject({ name: "wheel", db: "casino", tenant: { kind: "fixed", tenant: "acme" }, deleteEvent: "spin_deleted", fields: ["numbers", "meta.table"] });
    expect(feed!.snapshot).toEqual({ kind: "latest", field: "numbers", count: 20, newest: "first" });
  });

  test("SINAL_FEEDS_FILE reads the same JSON from a file", () => {
    const dir = mkdtempSync(join(tmpdir(), "sinal-feeds-"));
    const file = join(dir, "feeds.json");
    writeFileSync(file, JSON.stringify([ROULETTES]));
    try {
      expect(loadConfig({ ...BASE, SINAL_FEEDS_FILE: file }).mongo!.feeds[0]!.name).toBe("roulettes");
      expect(failure({ ...BASE, SINAL_FEEDS_FILE: join(dir, "missing.json") })).toStartWith("SINAL_FEEDS_FILE: cannot read");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("each mistake names the variable and the feed's field", () => {
    const bad = (feed: Record<string, unknown>) => failure({ ...BASE, SINAL_FEEDS: JSON.stringify([{ ...ROULETTES, ...feed }]) });
    expect(failure({ ...BASE })).toStartWith("SINAL_FEEDS: MONGODB_URI is set");
    expect(failure({ SINAL_FEEDS: JSON.stringify([ROULETTES]) })).toStartWith("MONGODB_URI:");
    expect(failure({ ...BASE, MONGODB_URI: "redis://user:pw@x", SINAL_FEEDS: "[]" })).toBe("MONGODB_URI: expected mongodb://... or mongodb+srv://..., got redis:");
    expect(failure({ ...BASE, SINAL_FEEDS: "{not json" })).toStartWith("SINAL_FEEDS: not valid JSON");
    expect(failure({ ...BASE, SINAL_FEEDS: "[]" })).toStartWith("SINAL_FEEDS: expected a JSON array with at least one feed");
    expect(failure({ ...BASE, SINAL_FEEDS: "[1]", SINAL_FEEDS_FILE: "/x" })).toStartWith("SINAL_FEEDS: set SINAL_FEEDS or SINAL_FEEDS_FILE");
    expect(failure({ ...BASE, MONGODB_DB: "", SINAL_FEEDS: JSON.stringify([ROULETTES]) })).toStartWith("SINAL_FEEDS: [0].db: no database");
    expect(bad({ collection: undefined })).toBe("SINAL_FEEDS: [0].collection: required");
    expect(bad({ channel: "roulette" })).toStartWith("SINAL_FEEDS: [0].channel:");
    expect(bad({ channel: "casino:{_id}" })).toStartWith("SINAL_FEEDS: [0].channel:");
    expect(bad({ channel: "global" })).toStartWith("SINAL_FEEDS: [0].channel:");
    expect(bad({ channel: "roulette:{a b}" })).toStartWith("SINAL_FEEDS: [0].channel:");
    expect(bad({ tenant: "acme" })).toStartWith('SINAL_FEEDS: [0].tenant: give exactly one of "tenant"');
    expect(bad({ tenant_field: undefined })).toStartWith("SINAL_FEEDS: [0].tenant:");
    expect(bad({ tenant_field: undefined, tenant: "Not A Tenant" })).toStartWith("SINAL_FEEDS: [0].tenant:");
    expect(bad({ event: "has space" })).toStartWith("SINAL_FEEDS: [0].event:");
    expect(bad({ fields: [] })).toStartWith("SINAL_FEEDS: [0].fields:");
    expect(bad({ snapshot: { field: "numbers", latest: 0 } })).toStartWith("SINAL_FEEDS: [0].snapshot.latest:");
    expect(bad({ snapshot: "numbers" })).toStartWith("SINAL_FEEDS: [0].snapshot:");
    expect(bad({ colection: "typo" })).toStartWith("SINAL_FEEDS: [0].colection: unknown setting");
    expect(failure({ ...BASE, SINAL_FEEDS: JSON.stringify([ROULETTES, ROULETTES]) })).toStartWith('SINAL_FEEDS: two feeds are named "roulettes"');
    expect(failure({ ...BASE, MONGODB_RETRY_MAX_MS: "5", SINAL_FEEDS: JSON.stringify([ROULETTES]) })).toStartWith("MONGODB_RETRY_MAX_MS:");
  });
});

describe("feed documents", () => {
  const [roulettes] = feeds([{ ...ROULETTES, fields: ["name", "numbers"], snapshot: { field: "numbers", latest: 2 } }]);

  test("BSON values become plain JSON", () => {
    const id = new ObjectId("65f000000000000000000001");
    expect(toPlain({ id, at: new Date(0), big: Long.fromNumber(7), dec: Decimal128.fromString("1.50"), list: [id] })).toEqual({
      id: "65f000000000000000000001",
      at: "1970-01-01T00:00:00.000Z",
      big: 7,
      dec: "1.50",
      list: ["65f000000000000000000001"],
    });
  });

  test("tenant and channel come from the document; projection and latest-N shape the data", () => {
    const resolved = resolveDocument(roulettes!, { _id: new ObjectId("65f000000000000000000002"), tenant_id: "acme", name: "Lightning", numbers: [1, 2, 3], secret: 1 });
    expect(resolved).toMatchObject({
      ok: true,
      key: "65f000000000000000000002",
      channel: { tenant: "acme", name: "roulette:65f000000000000000000002" },
      data: { _id: "65f000000000000000000002", name: "Lightning", numbers: [2, 3] },
    });
    expect(resolved.ok && "secret" in resolved.data).toBe(false);
  });

  test("no tenant, or a value that is no tenant id, is skipped: never a guessed tenant", () => {
    expect(resolveDocument(roulettes!, { _id: "r1", numbers: [] })).toEqual({ ok: false, reason: "no_tenant" });
    expect(resolveDocument(roulettes!, { _id: "r1", tenant_id: "ACME corp" })).toEqual({ ok: false, reason: "no_tenant" });
    expect(resolveDocument(roulettes!, { _id: "r1", tenant_id: { nested: true } })).toEqual({ ok: false, reason: "no_tenant" });
    expect(resolveDocument(roulettes!, { _id: "has space", tenant_id: "acme" })).toEqual({ ok: false, reason: "no_channel" });
  });
});

describe("snapshot cache", () => {
  test("a channel's snapshot is its most recently changed document; deletes fall back, then null", () => {
    const cache = new SnapshotCache();
    const channel = parseChannel("acme", "strategy:7");
    cache.set("a", channel, { _id: "a" });
    cache.set("b", channel, { _id: "b" });
    expect(cache.get(channel.topic)).toEqual({ _id: "b" });
    cache.set("a", channel, { _id: "a", v: 2 });
    expect(cache.get(channel.topic)).toEqual({ _id: "a", v: 2 });
    expect(cache.remove("a")).toBe(channel);
    expect(cache.get(channel.topic)).toEqual({ _id: "b" });
    cache.remove("b");
    expect(cache.get(channel.topic)).toBeNull();
    expect(cache.get("acme/strategy:unknown")).toBeUndefined();
  });

  test("replace returns every channel fed before or now, for their new epochs", () => {
    const cache = new SnapshotCache();
    const old = parseChannel("acme", "roulette:old");
    const fresh = parseChannel("acme", "roulette:new");
    cache.set("old", old, { _id: "old" });
    const reset = cache.replace([{ key: "new", channel: fresh, data: { _id: "new" } }]);
    expect(reset.map((c) => c.name).sort()).toEqual(["roulette:new", "roulette:old"]);
    expect(cache.get(old.topic)).toBeNull();
  });
});

test("retry backoff doubles from 250 ms, is capped, and jitters", () => {
  for (let attempt = 0; attempt < 30; attempt++) {
    const ceiling = Math.min(2_000, 250 * 2 ** attempt);
    const delay = backoffMs(attempt, 2_000);
    expect(delay).toBeGreaterThanOrEqual(ceiling / 2);
    expect(delay).toBeLessThanOrEqual(ceiling);
  }
  expect(new Set(Array.from({ length: 20 }, () => backoffMs(5, 30_000))).size).toBeGreaterThan(1);
});
