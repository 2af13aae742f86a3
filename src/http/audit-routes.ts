import { Elysia } from "elysia";
import { SinalError } from "../errors.ts";
import type { AuditStore } from "../store/audit-store.ts";
import type { RestAuth } from "./rest-auth.ts";

/** `GET /v1/audit`: the caller's tenant's audit log, newest first (API key or admin token). */
export function auditRoutes(auth: RestAuth, store: AuditStore) {
  return new Elysia({ name: "audit-routes" }).get("/v1/audit", async ({ request, query }) => {
    const { tenant } = await auth.authenticate(request);
    const limit = query.limit === undefined ? 100 : Number(query.limit);
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw new SinalError("bad_request", "limit: a whole number from 1 to 1000");
    const before = query.before === undefined ? null : Number(query.before);
    if (before !== null && !(Number.isInteger(before) && before > 0)) throw new SinalError("bad_request", "before: an entry id");
    const entries = await store.list(tenant, { before, limit, kind: query.kind ?? null });
    return { entries: entries.map(({ tenant: _tenant, ...entry }) => entry) };
  });
}
