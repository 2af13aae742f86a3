import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { ConfigError, loadConfig } from "../src/config.ts";

const SECRET = "x".repeat(32);

function failure(env: Record<string, string>): string {
  try {
    loadConfig({ JWT_SECRET: SECRET, ...env });
  } catch (err) {
    if (err instanceof ConfigError) return err.message;
    throw err;
  }
  throw new Error("expected a ConfigError");
}

describe("loadConfig", () => {
  test("defaults follow docs/protocol.md 'Running' and docs/configuration.md", () => {
    const config = loadConfig({ JWT_SECRET: SECRET });
    expect(config.port).toBe(3000);
    expect(config.host).toBe("0.0.0.0");
    expect(config.database).toEqual({ kind: "sqlite", path: "./data/sinal.db", synchronous: "full" });
    expect(config.limits.maxFrameBytes).toBe(65536);
    expect(config.limits.ratePerSec).toBe(50);
    expect(config.limits.rateBurst).toBe(100);
    expect(config.limits.maxRejected).toBe(100);
    expect(config.limits.rejectWindowMs).toBe(10_000);
    expect(config.idempotencyTtlSec).toBeGreaterThanOrEqual(86_400);
    expect(config.jwt).toEqual({ kind: "secret", secret: SECRET });
  });

  test("dev mode: no secret and no public key keeps the secret in dev-secret beside the sqlite file, none in memory", () => {
    expect(loadConfig({ DATABASE_URL: "sqlite:/var/lib/sinal/sinal.db" }).jwt).toEqual({ kind: "dev", secretFile: "/var/lib/sinal/dev-secret" });
    expect(loadConfig({}).jwt).toEqual({ kind: "dev", secretFile: join(process.cwd(), "data", "dev-secret") });
    expect(loadConfig({ DATABASE_URL: "sqlite::memory:" }).jwt).toEqual({ kind: "dev", secretFile: null });
  });

  test("each bad value names its variable", () => {
    expect(failure({ PORT: "abc" })).toStartWith("PORT:");
    expect(failure({ PORT: "70000" })).toStartWith("PORT:");
    expect(failure({ JWT_SECRET: "short" })).toStartWith("JWT_SECRET:");
    expect(failure({ JWT_PUBLIC_KEY: "not a pem" })).toStartWith("JWT_SECRET:");
    expect(failure({ JWT_SECRET: "", JWT_PUBLIC_KEY: "not a pem" })).toStartWith("JWT_PUBLIC_KEY:");
    expect(failure({ DATABASE_URL: "mysql://db" })).toStartWith("DATABASE_URL:");
    expect(failure({ DATABASE_URL: "postgres://db" })).toStartWith("DATABASE_URL:");
    expect(failure({ SINAL_API_KEYS: "acme" })).toStartWith("SINAL_API_KEYS:");
    expect(failure({ SINAL_API_KEYS: "Bad Tenant:0123456789abcdef" })).toStartWith("SINAL_API_KEYS:");
    expect(failure({ ALLOWED_ORIGINS: "https://a.example/path" })).toStartWith("ALLOWED_ORIGINS:");
    expect(failure({ MAX_FRAME_BYTES: "-1" })).toStartWith("MAX_FRAME_BYTES:");
    expect(failure({ RATE_LIMIT_PER_SEC: "0" })).toStartWith("RATE_LIMIT_PER_SEC:");
    expect(failure({ LOG_LEVEL: "loud" })).toStartWith("LOG_LEVEL:");
    expect(failure({ REDIS_URL: "redis://127.0.0.1:6379" })).toStartWith("REDIS_URL:");
    expect(failure({ IDLE_TIMEOUT_S: "20", PING_INTERVAL_MS: "25000" })).toStartWith("IDLE_TIMEOUT_S:");
    expect(failure({ SQLITE_SYNCHRONOUS: "off" })).toStartWith("SQLITE_SYNCHRONOUS:");
    expect(failure({ HOST: "256.1.1.1" })).toBe('HOST: expected an IPv4 address (four numbers from 0 to 255), got "256.1.1.1"');
    expect(failure({ HOST: "[::1]" })).toBe('HOST: expected an IPv6 address, without brackets, got "[::1]"');
    expect(failure({ HOST: "my host" })).toBe('HOST: expected an address or a host name, got "my host"');
    expect(failure({ DATABASE_URL: "mysql://root:hunter2@db" })).not.toContain("hunter2");
  });

  test("HOST takes IPv4 and IPv6 addresses and host names (underscores included)", () => {
    for (const host of ["127.0.0.1", "0.0.0.0", "::", "::1", "localhost", "sinal_1.internal"]) {
      expect(loadConfig({ JWT_SECRET: SECRET, HOST: host }).host).toBe(host);
    }
  });

  test("parses SINAL_API_KEYS and ALLOWED_ORIGINS lists", () => {
    const config = loadConfig({
      JWT_SECRET: SECRET,
      SINAL_API_KEYS: "acme:0123456789abcdef, globex:fedcba9876543210",
      ALLOWED_ORIGINS: "https://a.example, http://localhost:5173",
    });
    expect(config.envApiKeys).toEqual([
      { tenant: "acme", key: "0123456789abcdef" },
      { tenant: "globex", key: "fedcba9876543210" },
    ]);
    expect(config.allowedOrigins).toEqual(["https://a.example", "http://localhost:5173"]);
  });
});

describe("REDIS_URL (several nodes)", () => {
  const pg = { JWT_SECRET: "x".repeat(32), DATABASE_URL: "postgres://u:p@db:5432/sinal" };

  test("is read with its companions when the database is PostgreSQL", () => {
    const config = loadConfig({ ...pg, REDIS_URL: "redis://:pw@cache:6379/2", REDIS_PREFIX: "crm", REDIS_COMMAND_TIMEOUT_MS: "500" });
    expect(config.redis).toMatchObject({ url: "redis://:pw@cache:6379/2", prefix: "crm", commandTimeoutMs: 500, reorderWindowMs: 100, positionCheckMs: 5000, feedLeaseTtlMs: 10_000 });
    expect(loadConfig({ ...pg, REDIS_URL: "redis://cache:6379", FEED_LEASE_TTL_MS: "3000" }).redis?.feedLeaseTtlMs).toBe(3000);
    expect(() => loadConfig({ ...pg, REDIS_URL: "redis://cache:6379", FEED_LEASE_TTL_MS: "500" })).toThrow("FEED_LEASE_TTL_MS");
    expect(loadConfig(pg).redis).toBeNull();
  });

  test("is refused with a sqlite database, which the nodes could not share", () => {
    expect(() => loadConfig({ JWT_SECRET: "x".repeat(32), REDIS_URL: "redis://cache:6379" })).toThrow(/DATABASE_URL=postgres/);
  });

  test("is refused with another scheme, naming only the scheme", () => {
    expect(() => loadConfig({ ...pg, REDIS_URL: "http://secret@cache" })).toThrow(/got http:$/);
    expect(() => loadConfig({ ...pg, REDIS_URL: "redis://cache", REDIS_PREFIX: "a b" })).toThrow(/REDIS_PREFIX/);
  });
});
