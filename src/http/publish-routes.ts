import { Elysia } from "elysia";
import type { Logger } from "../log.ts";
import { emitEventItem, type PublishService } from "../publish-service.ts";
import { readJsonBody } from "./json-body.ts";
import type { RestAuth } from "./rest-auth.ts";

/**
 * `POST /v1/publish` and the scraper's `POST /emit-event`. Bodies are read after authentication
 * (`parse: "none"`), so a caller without a credential gets 401 whatever it sent.
 */
export function publishRoutes(auth: RestAuth, service: PublishService, logger: Logger, maxBodyBytes: number) {
  return new Elysia({ name: "publish-routes" })
    .post(
      "/v1/publish",
      async ({ request }) => {
        const principal = await auth.authenticate(request);
        const parsed = await readJsonBody(request, maxBodyBytes);
        const isBatch = Array.isArray(parsed);
        const results = await service.publishMany(principal.tenant, isBatch ? parsed : [parsed]);
        logger.debug({ tenant: principal.tenant, actor: principal.actor, count: results.length }, "rest publish");
        return isBatch ? results : results[0];
      },
      { parse: "none" },
    )
    .post(
      "/emit-event",
      async ({ request }) => {
        const principal = await auth.authenticate(request);
        const [result] = await service.publishMany(principal.tenant, [emitEventItem(await readJsonBody(request, maxBodyBytes))]);
        return result;
      },
      { parse: "none" },
    );
}
