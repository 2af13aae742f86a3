import { expect, test } from "bun:test";
import { Glob } from "bun";
import { dirname, join, relative } from "node:path";

/**
 * The WebSocket layer (src/ws) is the edge that sees sockets: features and REST routes take plain
 * values (src/peer.ts) and never import it. Only the composition root wires it in.
 */
const SRC = join(import.meta.dir, "..", "src");
const MAY_IMPORT_WS: Record<string, string> = {
  "app.ts": "the composition root builds the Gateway",
};

/** Relative import specifiers of a module: static imports and re-exports, `import type` too, and dynamic imports. */
function importsOf(source: string): string[] {
  const found: string[] = [];
  const patterns = [/\b(?:import|export)\b[^;]*?\bfrom\s*["']([^"']+)["']/g, /\bimport\s*\(\s*["']([^"']+)["']\s*\)/g, /^\s*import\s*["']([^"']+)["']/gm];
  for (const pattern of patterns) for (const match of source.matchAll(pattern)) found.push(match[1]!);
  return found.filter((spec) => spec.startsWith("."));
}

test("no module outside src/ws imports from src/ws, but the composition root", async () => {
  const offenders: string[] = [];
  let scanned = 0;
  for await (const file of new Glob("**/*.ts").scan(SRC)) {
    if (file.startsWith("ws/") || file in MAY_IMPORT_WS) continue;
    scanned++;
    const source = await Bun.file(join(SRC, file)).text();
    for (const spec of importsOf(source)) {
      const target = relative(SRC, join(dirname(join(SRC, file)), spec));
      if (target === "ws" || target.startsWith("ws/")) offenders.push(`${file} imports ${spec}`);
    }
  }
  // The scan saw the features (a glob that matched nothing would pass anything).
  expect(scanned).toBeGreaterThan(50);
  expect(offenders).toEqual([]);
});

test("the import scan finds every form of import it is meant to catch", () => {
  const source = [
    'import type { Connection } from "../ws/connection.ts";',
    'import {\n  Gateway,\n} from "./ws/gateway.ts";',
    'export { x } from "../ws/frames.ts";',
    'const m = await import("../ws/hooks.ts");',
    'import "./ws/side-effect.ts";',
    'import { Type } from "@sinclair/typebox";',
  ].join("\n");
  expect(importsOf(source)).toEqual(["../ws/connection.ts", "./ws/gateway.ts", "../ws/frames.ts", "../ws/hooks.ts", "./ws/side-effect.ts"]);
});
