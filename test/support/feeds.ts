import { test } from "bun:test";
import type { TestServer } from "../helpers.ts";
import { prepareEmulator } from "./mongo-emulator.ts";

/**
 * `test` for suites that need the MongoDB emulator: the real one when Java and Maven are there;
 * otherwise, by hand, skipped tests with the reason printed once; under CI=true, one failing test
 * stating the reason (CI must prove the feed, not skip it).
 */
export function emulatorTests(): { test: typeof test; available: boolean } {
  let prepared: ReturnType<typeof prepareEmulator>;
  try {
    prepared = prepareEmulator();
  } catch (err) {
    prepared = { ok: false, reason: (err as Error).message };
  }
  if (prepared.ok) return { test, available: true };
  const reason = prepared.reason;
  if (process.env.CI === "true") {
    test("the MongoDB emulator (Java 17 + Maven) is available", () => {
      throw new Error(reason);
    });
  } else {
    process.stderr.write(`skipping MongoDB emulator tests: ${reason}\n`);
  }
  return { test: test.skip, available: false };
}

/** Env for startServer with the given feeds (SINAL_FEEDS as JSON). */
export function feedEnv(uri: string, feeds: unknown[], extra: Record<string, string> = {}): Record<string, string> {
  return { MONGODB_URI: uri, MONGODB_DB: "runcash", SINAL_FEEDS: JSON.stringify(feeds), MONGODB_RETRY_MAX_MS: "400", ...extra };
}

/** The feeds most tests use: roulettes by a tenant field, strategies of one fixed tenant. */
export const ROULETTES = {
  name: "roulettes",
  collection: "roulettes",
  channel: "roulette:{_id}",
  tenant_field: "tenant",
  event: "roulette_update",
  fields: ["name", "numbers", "n"],
  snapshot: { field: "numbers", latest: 3 },
};
export const STRATEGIES = {
  name: "strategies",
  collection: "strategies",
  channel: "strategy:{roulette_id}",
  tenant: "acme",
  event: "strategy_update",
};

/** Polls `check` every 25 ms until it returns a value other than undefined/false, or fails after `ms`. */
export async function waitFor<T>(what: string, check: () => T | Promise<T>, ms = 10_000): Promise<Exclude<T, false | undefined>> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value as Exclude<T, false | undefined>;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await Bun.sleep(25);
  }
}

export async function ready(server: TestServer): Promise<{ status: number; body: { status: string; failing?: string[] } }> {
  const res = await fetch(`${server.http}/ready`);
  return { status: res.status, body: (await res.json()) as { status: string; failing?: string[] } };
}

/** Waits until /ready answers 200 (every feed streaming). */
export function waitReady(server: TestServer, ms = 15_000): Promise<true> {
  return waitFor("/ready 200", async () => (await ready(server)).status === 200, ms);
}

/** The value of one Prometheus series, e.g. metric(text, "sinal_feed_skipped_total", {feed: "roulettes", reason: "no_tenant"}). */
export async function metric(server: TestServer, name: string, labels: Record<string, string>): Promise<number | undefined> {
  const text = await (await fetch(`${server.http}/metrics`)).text();
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const matchesAll = Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`));
    if (matchesAll) return Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return undefined;
}
