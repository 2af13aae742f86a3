import { Elysia } from "elysia";
import { embeddedAssets } from "./assets.macro.ts" with { type: "macro" };
import type { Asset } from "./assets.macro.ts";

/** Inlined at bundle time (see assets.macro.ts): no file is read at run time. */
const ASSETS: Record<string, Asset> = embeddedAssets();

/**
 * The page reads its token from the URL fragment, so it must never be framed, leak a referrer or
 * run scripts from elsewhere. `connect-src 'self'` covers the same-origin WebSocket (CSP 3).
 */
const PAGE_HEADERS = {
  "content-security-policy":
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
  "referrer-policy": "no-referrer",
};

/**
 * The demo page at `/` (web/), its scripts and styles under `/web/`, and the JS SDK as one ESM
 * file at `/client.js`. No auth: they hold no data; the page connects with the user's own token.
 * Answers carry an ETag and must be revalidated (`no-cache`), so a new build is seen at once.
 */
export function assetRoutes() {
  const app = new Elysia({ name: "asset-routes" });
  for (const [path, asset] of Object.entries(ASSETS)) {
    app.get(path, ({ request }) => serve(asset, request.headers.get("if-none-match"), path === "/"));
  }
  return app;
}

function serve(asset: Asset, ifNoneMatch: string | null, isPage: boolean): Response {
  const headers: Record<string, string> = {
    "content-type": asset.type,
    etag: asset.etag,
    "cache-control": "no-cache",
    "x-content-type-options": "nosniff",
    ...(isPage ? PAGE_HEADERS : {}),
  };
  const isFresh = ifNoneMatch !== null && ifNoneMatch.split(",").some((tag) => tag.trim() === asset.etag || tag.trim() === "*");
  if (isFresh) return new Response(null, { status: 304, headers });
  return new Response(asset.body, { headers });
}
