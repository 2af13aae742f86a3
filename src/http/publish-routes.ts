import { Elysia } from "elysia";
import type { Logger } from "../log.ts";
import { emitEventItem, type PublishService } from "../publish-service.ts";
import type { BodyReader } from "./json-body.ts";
import { Type } from "@sinclair/typebox";
import { validator } from "../validate.ts";
import type { RestAuth } from "./rest-auth.ts";

/** `data_sync` for open grids: `{module, action, record}` on `sync:<module>`. */
const checkSync = validator(
  Type.Object({
    module: Type.String({ minLength: 1, maxLength: 128, pattern: "^[A-Za-z0-9_.@-]+$" }),
    action: Type.Union([Type.Literal("create"), Type.Literal("update"), Type.Literal("delete")]),
    record: Type.Record(Type.String(), Type.Unknown()),
    idempotency_key: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
  }),
);

/**
 * `POST /v1/publish`, `POST /v1/sync` and the scraper's `POST /emit-event`. Bodies are read after authentication
 * (`parse: "none"`), so a caller without a credential gets 401 whatever it sent.
 */
export function publishRoutes(auth: RestAuth, service: PublishService, logger: Logger, bodies: BodyReader) {
  return new Elysia({ name: "publish-routes" })
    .post(
      "/v1/publish",
      async ({ request }) => {
        const principal = await auth.authenticate(request);
        const parsed = await bodies.json(request);
        const isBatch = Array.isArray(parsed);
        const results = await service.publishMany(principal, isBatch ? parsed : [parsed]);
        logger.debug({ tenant: principal.tenant, actor: principal.actor, count: results.length }, "rest publish");
        return isBatch ? results : results[0];
      },
      { parse: "none" },
    )
    .post(
      "/v1/sync",
      async ({ request }) => {
        const principal = await auth.authenticate(request);
        const body = checkSync(await bodies.json(request));
        const { module, action, record } = body;
        const item = { channel: `sync:${module}`, event: "data_sync", data: { module, action, record }, idempotency_key: body.idempotency_key };
        const [result] = await service.publishMany(principal, [item]);
        return result;
      },
      { parse: "none" },
    )
    .post(
      "/emit-event",
      async ({ request }) => {
        const principal = await auth.authenticate(request);
        const [result] = await service.publishMany(principal, [emitEventItem(await bodies.json(request))]);
        return result;
      },
      { parse: "none" },
    );
}
