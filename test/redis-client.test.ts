import { afterAll, beforeAll, describe, expect } from "bun:test";
import { createServer, type Server } from "node:net";
import { connectRedis, openRedis, redisLabel, type Redis } from "../src/redis/redis-client.ts";
import { freePort, redisTests, startRedis, type RedisServer } from "./support/redis.ts";

// What the cluster relies on from its Redis connection (src/redis/redis-client.ts), against a real
// redis-server: why ioredis was chosen, pinned so an upgrade that changes it fails here.

const { test, available } = redisTests();

describe.if(available)("Redis connection (ioredis against redis-server)", () => {
  let server: RedisServer;
  const open: Redis[] = [];
  const connect = async (subscriber = false, commandTimeoutMs = 500) => {
    const redis = connectRedis({ url: server.url, commandTimeoutMs, prefix: "t" }, "test", undefined, subscriber);
    open.push(redis);
    await openRedis(redis, 5000);
    return redis;
  };

  beforeAll(async () => {
    server = await startRedis();
  });
  afterAll(async () => {
    for (const redis of open) redis.disconnect();
    await server?.stop();
  });

  test("while Redis is down a command fails at once instead of waiting; after Redis is back the connection is ready again by itself", async () => {
    const redis = await connect();
    await redis.set("k", "1");
    await server.kill();
    const started = performance.now();
    await expect(redis.get("k")).rejects.toThrow();
    expect(performance.now() - started).toBeLessThan(1000);

    const ready = new Promise<void>((resolve) => redis.once("ready", () => resolve()));
    await server.start();
    await ready;
    // Redis came back empty (no persistence in this test): the connection works, the data is gone.
    expect(await redis.get("k")).toBeNull();
    await redis.set("k", "2");
    expect(await redis.get("k")).toBe("2");
  });

  test("a subscriber connection is subscribed to nothing after a reconnect, and says so with `ready`: restoring subscriptions is the broker's", async () => {
    const sub = await connect(true);
    const pub = await connect();
    const got: string[] = [];
    sub.on("message", (_channel: string, message: string) => got.push(message));
    await sub.subscribe("c");
    await pub.publish("c", "before");
    await Bun.sleep(50);
    expect(got).toEqual(["before"]);

    await server.kill();
    const ready = new Promise<void>((resolve) => sub.once("ready", () => resolve()));
    const pubReady = new Promise<void>((resolve) => pub.once("ready", () => resolve()));
    await server.start();
    await Promise.all([ready, pubReady]);
    expect(await pub.publish("c", "lost")).toBe(0);
    await sub.subscribe("c");
    expect(await pub.publish("c", "after")).toBe(1);
    await Bun.sleep(50);
    expect(got).toEqual(["before", "after"]);
  });

  test("a Redis that accepts the connection but never answers fails a command within the command timeout, never hangs", async () => {
    const port = await freePort();
    const silent: Server = createServer((socket) => socket.on("data", () => {}));
    await new Promise<void>((resolve) => silent.listen(port, "127.0.0.1", resolve));
    const redis = connectRedis({ url: `redis://127.0.0.1:${port}`, commandTimeoutMs: 300, prefix: "t" }, "silent");
    open.push(redis);
    redis.connect().catch(() => {});
    const started = performance.now();
    // Whether the handshake (its own timeout) or the command itself times out first, it rejects.
    await expect(redis.get("k")).rejects.toThrow();
    expect(performance.now() - started).toBeLessThan(1500);
    redis.disconnect();
    silent.close();
  });

  test("opening a connection to a port where nothing listens fails within the bound, naming no password", async () => {
    const port = await freePort();
    const redis = connectRedis({ url: `redis://:secret@127.0.0.1:${port}`, commandTimeoutMs: 300, prefix: "t" }, "nowhere");
    const started = performance.now();
    await expect(openRedis(redis, 1000)).rejects.toThrow();
    expect(performance.now() - started).toBeLessThan(2000);
    expect(redisLabel(`redis://:secret@127.0.0.1:${port}`)).not.toContain("secret");
  });
});
