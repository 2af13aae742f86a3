import { test } from "bun:test";

/** Whether a tool a suite needs is here, or why not. */
export type Found = { ok: true; bin: string } | { ok: false; reason: string };

/**
 * `test` for suites that need `what`: the real one when it is here; otherwise, by hand, skipped
 * tests with the reason printed once; under CI=true, one failing test stating the reason (CI
 * installs every tool, so a missing one is a failure there).
 */
export function testsNeeding(what: string, install: string, found: Found): { test: typeof test; available: boolean } {
  if (found.ok) return { test, available: true };
  const reason = found.reason;
  if (process.env.CI === "true") {
    test(`${what} is available (${install})`, () => {
      throw new Error(reason);
    });
  } else {
    process.stderr.write(`skipping ${what} tests: ${reason}\n`);
  }
  return { test: test.skip, available: false };
}

/**
 * `test` for suites that need several tools: the real one when every gate (testsNeeding) found
 * its tool, otherwise skipped; each missing tool has said why already (or failed under CI=true).
 * Not `gate.test.skip`: a missing gate's `test` is `test.skip` already, which has no `.skip`.
 */
export function testsNeedingAll(...gates: { available: boolean }[]): typeof test {
  return gates.every((gate) => gate.available) ? test : test.skip;
}
