import { Elysia } from "elysia";
import type { AuditStore } from "../store/audit-store.ts";
import { pageQuery } from "./page-query.ts";
import type { RestAuth } from "./rest-auth.ts";

/** `GET /v1/audit`: the caller's tenant's audit log, newest first (API key or admin token). */
export function auditRoutes(auth: RestAuth, store: AuditStore) {
  return new Elysia({ name: "audit-routes" }).get("/v1/audit", async ({ request, query }) => {
    const { tenant } = await auth.authenticate(request);
    const { before, limit } = pageQuery(query, { defaultLimit: 100, maxLimit: 1000, idName: "an entry id" });
    const entries = await store.list(tenant, { before, limit, kind: query.kind ?? null });
    return { entries: entries.map(({ tenant: _tenant, ...entry }) => entry) };
  });
}
