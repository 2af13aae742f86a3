import { Elysia } from "elysia";
import { SinalError } from "../errors.ts";
import type { Metrics } from "../metrics.ts";
import type { InFlight } from "./in-flight.ts";
import type { BodyReader } from "./json-body.ts";
import { isOriginAllowed } from "./origin.ts";

export interface RequestGuardDeps {
  bodies: BodyReader;
  inFlight: InFlight;
  allowedOrigins: string[] | null;
  metrics: Metrics;
}

/**
 * The API a page on a foreign origin may not call (403, the same policy as the upgrade). CORS
 * alone only hides the answer from the page; the request would still run. The demo page, its
 * assets, /health, /ready and /metrics hold nothing to protect and stay open.
 */
function isApiPath(path: string): boolean {
  return path.startsWith("/v1/") || path === "/emit-event";
}

/**
 * What every REST request goes through around its route: the Origin check, the start of its body
 * deadline, freeing its in-flight slot (InFlight) and closing the connection when its body was
 * left unread.
 */
export function requestGuards(deps: RequestGuardDeps) {
  const finished = (request: Request, set: { headers: Record<string, string | number> }) => {
    // The work is done: the slot is free before the answer is written, so a caller that sends its
    // next request on receiving this answer is never refused for this one.
    deps.inFlight.leave(request);
    // Bun honours `Connection: close` and closes after the answer; without it, it would first
    // drain the unread body at the caller's pace (measured on bun 1.4.5).
    if (deps.bodies.leftUnread(request)) set.headers.connection = "close";
  };
  return new Elysia({ name: "request-guards" })
    .onRequest(({ request }) => {
      deps.bodies.arrived(request);
      const origin = request.headers.get("origin");
      if (origin === null || isOriginAllowed(origin, request, deps.allowedOrigins)) return;
      if (!isApiPath(new URL(request.url).pathname)) return;
      deps.metrics.authFailed("rest_origin");
      throw new SinalError("forbidden", `origin ${origin} is not allowed`);
    })
    .onAfterHandle({ as: "global" }, ({ request, set }) => {
      finished(request, set);
    })
    // Returns nothing: the app's own error hook writes the answer.
    .onError({ as: "global" }, ({ request, set }) => {
      finished(request, set);
    })
    // A backstop for any path that skips both hooks above: Elysia 1.4 runs this after every answer.
    .onAfterResponse({ as: "global" }, ({ request }) => {
      deps.inFlight.leave(request);
    });
}
