import { Elysia } from "elysia";
import type { Broker } from "../broker/broker.ts";
import type { LocalHub } from "../hub/local-hub.ts";
import type { Metrics } from "../metrics.ts";
import type { Store } from "../store/store.ts";
import type { RestAuth } from "./rest-auth.ts";

/** What the stats read of the WebSocket edge (the Gateway): how many connections this node holds. */
export interface OpenConnections {
  readonly size: number;
}

export interface OpsDeps {
  /** This node's id (a cluster's nodes each answer for themselves). */
  nodeId: string;
  store: Store;
  broker: Broker;
  hub: LocalHub;
  metrics: Metrics;
  gateway: OpenConnections;
  auth: RestAuth;
  isDraining: () => boolean;
  /** Names of the MongoDB feeds that are not streaming (reported as `feed:<name>`). */
  feedsDown?: () => string[];
}

/**
 * Health, readiness, Prometheus metrics and the JSON stats of this node: `GET /v1/stats` answers
 * the caller's tenant to an API key, and the node's totals besides to an admin token.
 */
export function opsRoutes(deps: OpsDeps) {
  return new Elysia({ name: "ops-routes" })
    .get("/health", () => ({ status: "ok" }))
    .get("/ready", async ({ set }) => {
      const failing: string[] = [];
      if (deps.isDraining()) failing.push("draining");
      if (!(await deps.store.ping())) failing.push("store");
      if (!deps.broker.isReady()) failing.push("broker");
      for (const feed of deps.feedsDown?.() ?? []) failing.push(`feed:${feed}`);
      if (failing.length > 0) {
        set.status = 503;
        return { status: "not_ready", failing };
      }
      return { status: "ready" };
    })
    .get("/metrics", async ({ set }) => {
      set.headers["content-type"] = deps.metrics.registry.contentType;
      return deps.metrics.registry.metrics();
    })
    .get("/v1/stats", async ({ request }) => {
      const principal = await deps.auth.authenticate(request);
      const counters = deps.metrics.tenant(principal.tenant);
      const tenant = {
        id: principal.tenant,
        node: deps.nodeId,
        connections: counters.connections,
        subscriptions: counters.subscriptions,
        publications: counters.publications,
        deliveries: counters.deliveries,
        dropped_sends: counters.droppedSends,
      };
      // An API key is a tenant's backend: it sees its tenant only. The node's totals (all tenants
      // together) are for an admin token.
      if (principal.via !== "admin_token") return { tenant };
      const total = deps.metrics.totals();
      return {
        node: {
          id: deps.nodeId,
          connections: deps.gateway.size,
          channels: deps.hub.channelCount(),
          subscriptions: total.subscriptions,
          publications: total.publications,
          deliveries: total.deliveries,
          dropped_sends: total.droppedSends,
          ...snake(deps.metrics.rates()),
        },
        tenant,
      };
    });
}

function snake(rates: { publicationsPerSec: number; deliveriesPerSec: number }) {
  return { publications_per_sec: rates.publicationsPerSec, deliveries_per_sec: rates.deliveriesPerSec };
}
