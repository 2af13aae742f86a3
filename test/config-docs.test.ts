import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Glob } from "bun";
import { ConfigError, loadConfig } from "../src/config.ts";

/**
 * docs/configuration.md must not drift from src/config.ts: the variables in its tables are
 * exactly the ones `loadConfig` reads, and every default written as a literal is the one the
 * code applies.
 */

const ROOT = join(import.meta.dir, "..");
const DOC = "docs/configuration.md";
const SECRET = "x".repeat(32);
const FEEDS = JSON.stringify([{ collection: "roulettes", channel: "roulette:{_id}", tenant: "acme", event: "roulette_update" }]);
const PEM = "-----BEGIN PUBLIC KEY-----\\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\\n-----END PUBLIC KEY-----";

/** Environments that together reach every branch of loadConfig that reads a variable. */
const VARIANTS: Record<string, Record<string, string>> = {
  "dev mode (nothing set)": {},
  "JWT_SECRET": { JWT_SECRET: SECRET },
  "JWT_PUBLIC_KEY": { JWT_PUBLIC_KEY: PEM },
  "MongoDB feeds inline": { JWT_SECRET: SECRET, MONGODB_URI: "mongodb://localhost:27017/runcash", SINAL_FEEDS: FEEDS },
  "MongoDB feeds, db from MONGODB_DB": { JWT_SECRET: SECRET, MONGODB_URI: "mongodb://localhost:27017", MONGODB_DB: "runcash", SINAL_FEEDS: FEEDS },
};

/** Calls loadConfig with an env object that records every variable name it looks at. */
function recordReads(env: Record<string, string>): { reads: Set<string>; error: unknown } {
  const reads = new Set<string>();
  const note = (key: string | symbol) => {
    if (typeof key === "string") reads.add(key);
  };
  const proxy = new Proxy(env, {
    get(target, key) {
      note(key);
      return typeof key === "string" ? target[key] : undefined;
    },
    has(target, key) {
      note(key);
      return key in target;
    },
    getOwnPropertyDescriptor(target, key) {
      note(key);
      return Reflect.getOwnPropertyDescriptor(target, key);
    },
    ownKeys() {
      // Enumerating the environment (a prefix scan) would hide variables from this test.
      throw new Error("loadConfig enumerated the environment; config-docs.test.ts can only see variables read by name");
    },
  });
  try {
    loadConfig(proxy);
    return { reads, error: null };
  } catch (error) {
    return { reads, error };
  }
}

function variablesReadByCode(): Set<string> {
  const all = new Set<string>();
  for (const [name, env] of Object.entries(VARIANTS)) {
    const { reads, error } = recordReads(env);
    if (error !== null) throw new Error(`variant "${name}" no longer loads (${String(error)}); fix VARIANTS in test/config-docs.test.ts`);
    for (const key of reads) all.add(key);
  }
  return all;
}

interface DocRow {
  variable: string;
  /** The default cell as written. */
  defaultCell: string;
  line: number;
}

/** Table rows of docs/configuration.md whose first cell is one backticked UPPER_CASE name. */
function documentedRows(): DocRow[] {
  const rows: DocRow[] = [];
  readFileSync(join(ROOT, DOC), "utf8")
    .split("\n")
    .forEach((text, i) => {
      const match = /^\|\s*`([A-Z][A-Z0-9_]*)`\s*\|([^|]*)\|/.exec(text);
      if (match) rows.push({ variable: match[1]!, defaultCell: match[2]!.trim(), line: i + 1 });
    });
  return rows;
}

/** The literal default of a row: the first backticked value when the cell starts with one. */
function literalDefault(cell: string): string | null {
  const match = /^`([^`]+)`/.exec(cell);
  return match ? match[1]! : null;
}

/** Paths where two configs differ, for a readable failure. */
function differences(a: unknown, b: unknown, path = "config"): string[] {
  if (Object.is(a, b)) return [];
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return [`${path}: ${JSON.stringify(a)} vs ${JSON.stringify(b)}`];
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  return [...keys].flatMap((k) => differences((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], `${path}.${k}`));
}

describe("docs/configuration.md", () => {
  const rows = documentedRows();
  const documented = new Set(rows.map((r) => r.variable));

  test("lists each variable once", () => {
    const seen = new Map<string, number>();
    const repeated: string[] = [];
    for (const row of rows) {
      if (seen.has(row.variable)) repeated.push(`${row.variable} (lines ${seen.get(row.variable)} and ${row.line})`);
      seen.set(row.variable, row.line);
    }
    expect(repeated).toEqual([]);
    expect(rows.length).toBeGreaterThan(20);
  });

  test("documents exactly the variables loadConfig reads", () => {
    const read = variablesReadByCode();
    const undocumented = [...read].filter((v) => !documented.has(v)).sort();
    const notRead = [...documented].filter((v) => !read.has(v)).sort();
    const message = [
      undocumented.length > 0 ? `read by src/config.ts but missing from ${DOC}: ${undocumented.join(", ")}` : "",
      notRead.length > 0 ? `in ${DOC} but never read by loadConfig: ${notRead.join(", ")}` : "",
    ]
      .filter(Boolean)
      .join("; ");
    if (message !== "") throw new Error(message);
  });

  test("names no variable read elsewhere in src/ that is missing from the table", () => {
    // Runtime reads outside loadConfig would escape the test above; the build-time asset macro
    // only passes the environment through to a child process.
    const named = /(?:process\.env|Bun\.env|import\.meta\.env)(?:\.([A-Z][A-Z0-9_]*)|\[\s*["'`]([A-Z][A-Z0-9_]*)["'`]\s*\])/g;
    // Build-time variables are documented in prose ("Build time"), not in the run-time tables.
    const docText = readFileSync(join(ROOT, DOC), "utf8");
    const buildTime = docText.slice(docText.indexOf("## Build time"));
    const missing: string[] = [];
    for (const file of new Glob("src/**/*.ts").scanSync(ROOT)) {
      const text = readFileSync(join(ROOT, file), "utf8");
      for (const m of text.matchAll(named)) {
        const name = m[1] ?? m[2]!;
        const inBuildTime = file.endsWith(".macro.ts") && docText.includes("## Build time") && buildTime.includes(`\`${name}\``);
        if (!documented.has(name) && !inBuildTime) missing.push(`${name} (${file})`);
      }
    }
    expect(missing).toEqual([]);
  });

  test("literal defaults are the ones the code applies", () => {
    // Setting a variable to its documented default must leave the configuration unchanged, in a
    // plain start and with feeds (MONGODB_RETRY_MAX_MS only shows in the feed configuration).
    const bases = [VARIANTS.JWT_SECRET!, VARIANTS["MongoDB feeds inline"]!];
    const wrong: string[] = [];
    let checked = 0;
    for (const row of rows) {
      const value = literalDefault(row.defaultCell);
      if (value === null) continue;
      checked++;
      for (const base of bases) {
        if (row.variable in base) continue;
        const expected = loadConfig(base);
        let actual: unknown;
        try {
          actual = loadConfig({ ...base, [row.variable]: value });
        } catch (err) {
          wrong.push(`${row.variable}=${value} (line ${row.line}) is refused: ${err instanceof ConfigError ? err.message : String(err)}`);
          break;
        }
        const diff = differences(actual, expected);
        if (diff.length > 0) {
          wrong.push(`${row.variable}: the documented default \`${value}\` (line ${row.line}) is not the code's: ${diff.join("; ")}`);
          break;
        }
      }
    }
    expect(wrong).toEqual([]);
    expect(checked).toBeGreaterThan(30);
  });

  test("numeric defaults match the Config fields they set", () => {
    // A direct cross-check for the numbers, so a variable that has no effect at all cannot pass
    // the test above by accident.
    const config = loadConfig({ JWT_SECRET: SECRET });
    const feeds = loadConfig(VARIANTS["MongoDB feeds inline"]!);
    const fields: Record<string, number | undefined> = {
      PORT: config.port,
      PING_INTERVAL_MS: config.pingIntervalMs,
      IDLE_TIMEOUT_S: config.idleTimeoutSec,
      IDEMPOTENCY_TTL_S: config.idempotencyTtlSec,
      SWEEP_INTERVAL_MS: config.sweepIntervalMs,
      METRICS_TOP_TENANTS: config.metricsTopTenants,
      SHUTDOWN_TIMEOUT_MS: config.shutdownTimeoutMs,
      TYPING_THROTTLE_MS: config.chat.typingThrottleMs,
      TYPING_TIMEOUT_MS: config.chat.typingTimeoutMs,
      PRESENCE_AWAY_AFTER_MS: config.presence.awayAfterMs,
      COMMIT_INTERVAL_MS: config.commitIntervalMs,
      LOCK_TTL_MS: config.locks.ttlMs,
      AUDIT_RETENTION_DAYS: config.audit.retentionDays,
      HISTORY_MEMORY_MAX_BYTES: config.history.memoryMaxBytes,
      MONGODB_RETRY_MAX_MS: feeds.mongo?.retryMaxMs,
      MAX_FRAME_BYTES: config.limits.maxFrameBytes,
      RATE_LIMIT_PER_SEC: config.limits.ratePerSec,
      RATE_LIMIT_BURST: config.limits.rateBurst,
      RATE_LIMIT_MAX_REJECTED: config.limits.maxRejected,
      RATE_LIMIT_WINDOW_MS: config.limits.rejectWindowMs,
      MAX_SUBSCRIPTIONS: config.limits.maxSubscriptions,
      MAX_CONNECTIONS_PER_USER: config.limits.maxConnectionsPerUser,
      MAX_CONNECTIONS_PER_TENANT: config.limits.maxConnectionsPerTenant,
      SLOW_CONSUMER_BYTES: config.limits.slowConsumerBytes,
      CONFLATE_AFTER_BYTES: config.limits.conflateBytes,
      MAX_BODY_BYTES: config.limits.maxBodyBytes,
    };
    const byVariable = new Map(rows.map((r) => [r.variable, r]));
    const wrong: string[] = [];
    for (const [variable, actual] of Object.entries(fields)) {
      const row = byVariable.get(variable);
      if (row === undefined) {
        wrong.push(`${variable}: no row in ${DOC}`);
        continue;
      }
      const documentedValue = literalDefault(row.defaultCell);
      if (documentedValue === null || Number(documentedValue) !== actual) {
        wrong.push(`${variable}: ${DOC} line ${row.line} says ${row.defaultCell || "(empty)"}, the code's default is ${actual}`);
      }
    }
    expect(wrong).toEqual([]);
  });
});
