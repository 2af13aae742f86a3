import { Type } from "@sinclair/typebox";
import { Elysia } from "elysia";
import { parseChannel } from "../channel.ts";
import { SinalError } from "../errors.ts";
import { notificationView, type NotificationService } from "../notifications/notification-service.ts";
import type { NotificationStore } from "../store/notification-store.ts";
import { validator } from "../validate.ts";
import type { AuditLog } from "../audit/audit-log.ts";
import { UserId } from "../ids.ts";
import { checkDataSize } from "../data-size.ts";
import type { BodyReader } from "./json-body.ts";
import { pageQuery } from "./page-query.ts";
import type { RestAuth } from "./rest-auth.ts";
import type { Namespaces } from "../namespaces.ts";

const Category = Type.String({ minLength: 1, maxLength: 64, pattern: "^[A-Za-z0-9_.:-]+$" });
const checkSend = validator(
  Type.Object({
    user: Type.Optional(UserId),
    users: Type.Optional(Type.Array(UserId, { minItems: 1, maxItems: 1000 })),
    channel: Type.Optional(Type.String({ maxLength: 256 })),
    category: Category,
    title: Type.String({ minLength: 1, maxLength: 256 }),
    message: Type.String({ maxLength: 4000 }),
    data: Type.Optional(Type.Unknown()),
    action: Type.Optional(Type.String({ maxLength: 2048 })),
  }),
);
const checkRead = validator(
  Type.Union([Type.Object({ ids: Type.Array(Type.Integer({ minimum: 1 }), { maxItems: 1000 }) }), Type.Object({ all: Type.Literal(true) })]),
);
const checkPreferences = validator(Type.Object({ muted_categories: Type.Array(Category, { maxItems: 100 }) }));

/** `POST /v1/notifications` for backends; `/v1/me/...` for a user with their own token. */
export function notificationRoutes(auth: RestAuth, service: NotificationService, store: NotificationStore, audit: AuditLog, bodies: BodyReader, maxDataBytes: number, namespaces: Namespaces) {
  return new Elysia({ name: "notification-routes" })
    .post(
      "/v1/notifications",
      async ({ request }) => {
        const { tenant, actor } = await auth.authenticate(request);
        const body = checkSend(await bodies.json(request));
        // `data` is stored and published with the notification: bounded like any publication's data, before either.
        checkDataSize(body.data, maxDataBytes, "data");
        const targets = [body.user, body.users, body.channel].filter((t) => t !== undefined).length;
        if (targets !== 1) throw new SinalError("bad_request", "give exactly one of user, users or channel");
        const input = { category: body.category, title: body.title, message: body.message, data: body.data, action: body.action };
        if (body.channel !== undefined) {
          const channel = parseChannel(tenant, body.channel, namespaces);
          const position = await service.sendToChannel(channel, input);
          audit.record(tenant, "notification", actor, { category: input.category, channel: channel.name });
          return { channel: channel.name, ...position };
        }
        const sent = await service.sendToUsers(tenant, body.users ?? [body.user!], input);
        audit.record(tenant, "notification", actor, { category: input.category, users: sent.length });
        return { notifications: sent };
      },
      { parse: "none" },
    )
    .get("/v1/me/notifications", async ({ request, query }) => {
      const me = auth.authenticateUser(request);
      const { before, limit } = pageQuery(query, { defaultLimit: 50, maxLimit: 200, idName: "a notification id" });
      const unreadOnly = query.unread === "1" || query.unread === "true";
      const list = await store.list(me.tenant, me.user, { unreadOnly, before, limit });
      return { notifications: list.map((n) => ({ ...notificationView(n), read: n.readAt !== null })) };
    })
    .post(
      "/v1/me/notifications/read",
      async ({ request }) => {
        const me = auth.authenticateUser(request);
        const body = checkRead(await bodies.json(request));
        return { updated: await store.markRead(me.tenant, me.user, "ids" in body ? body.ids : null, Date.now()) };
      },
      { parse: "none" },
    )
    .get("/v1/me/preferences", async ({ request }) => {
      const me = auth.authenticateUser(request);
      return { muted_categories: await store.mutedCategories(me.tenant, me.user) };
    })
    .put(
      "/v1/me/preferences",
      async ({ request }) => {
        const me = auth.authenticateUser(request);
        const body = checkPreferences(await bodies.json(request));
        await store.setMutedCategories(me.tenant, me.user, body.muted_categories, Date.now());
        return { muted_categories: await store.mutedCategories(me.tenant, me.user) };
      },
      { parse: "none" },
    );
}
