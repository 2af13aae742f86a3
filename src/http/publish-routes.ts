import { Elysia } from "elysia";
import { SinalError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { emitEventItem, type PublishService } from "../publish-service.ts";
import type { RestAuth } from "./rest-auth.ts";

/** Parses a body Elysia left as text (a caller that sent no JSON content type). */
export function jsonBody(body: unknown): unknown {
  if (typeof body !== "string") return body;
  try {
    return JSON.parse(body);
  } catch {
    throw new SinalError("bad_request", "body is not valid JSON");
  }
}

/** `POST /v1/publish` and the scraper's `POST /emit-event`. */
export function publishRoutes(auth: RestAuth, service: PublishService, logger: Logger) {
  return new Elysia({ name: "publish-routes" })
    .post("/v1/publish", async ({ request, body }) => {
      const principal = await auth.authenticate(request);
      const parsed = jsonBody(body);
      const isBatch = Array.isArray(parsed);
      const results = await service.publishMany(principal.tenant, isBatch ? parsed : [parsed]);
      logger.debug({ tenant: principal.tenant, actor: principal.actor, count: results.length }, "rest publish");
      return isBatch ? results : results[0];
    })
    .post("/emit-event", async ({ request, body }) => {
      const principal = await auth.authenticate(request);
      const [result] = await service.publishMany(principal.tenant, [emitEventItem(jsonBody(body))]);
      return result;
    });
}
