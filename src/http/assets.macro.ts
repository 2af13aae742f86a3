import { readdirSync, readFileSync } from "node:fs";
import { extname, join } from "node:path";

/** One file the server hands out as it is: body, content type and a validator. */
export interface Asset {
  body: string;
  type: string;
  etag: string;
}

const ROOT = join(import.meta.dir, "../..");
const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
};

/**
 * Runs at bundle/transpile time (imported `with { type: "macro" }`), like migrations.macro.ts:
 * the JS SDK, bundled to one browser ESM file, and the demo page of web/ are inlined as strings,
 * so `bun src/main.ts` and a `bun build --compile` binary serve them with no files beside them.
 *
 * The SDK is bundled by the `bun build` CLI in a child process: Bun refuses `Bun.build()` inside
 * a macro (the bundler would wait for the macro that waits for the bundler).
 *
 * @returns a map from URL path (`/client.js`, `/`, `/web/app.js`, ...) to the asset.
 */
export function embeddedAssets(): Record<string, Asset> {
  const assets: Record<string, Asset> = { "/client.js": asset(bundleSdk(), TYPES[".js"]!) };
  const web = join(ROOT, "web");
  for (const name of readdirSync(web).sort()) {
    const type = TYPES[extname(name)];
    if (type === undefined) continue;
    const path = name === "index.html" ? "/" : `/web/${name}`;
    assets[path] = asset(readFileSync(join(web, name), "utf8"), type);
  }
  return assets;
}

function bundleSdk(): string {
  const entry = join(ROOT, "clients/js/src/index.ts");
  const build = Bun.spawnSync([process.execPath, "build", entry, "--target=browser", "--format=esm"], {
    // The bundle names its sources relative to the working directory: the same text from anywhere.
    cwd: ROOT,
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, NO_COLOR: "1" },
  });
  if (build.exitCode !== 0) throw new Error(`bundling the JS SDK failed: ${build.stderr.toString()}`);
  return build.stdout.toString();
}

function asset(body: string, type: string): Asset {
  return { body, type, etag: `"${Bun.hash(body).toString(36)}"` };
}
