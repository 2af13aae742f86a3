import { Elysia } from "elysia";
import type { Metrics } from "../metrics.ts";
import type { Activity, ActivityCounts, ActivityPoint } from "../stats/activity.ts";
import type { RestAuth } from "./rest-auth.ts";

/**
 * `GET /v1/dashboard` (API key or admin token): what the demo page's stats panel shows, for the
 * caller's tenant only and this node only. Counts of the last hour are rolling (per minute);
 * drops and the delivery ratio are since the server started.
 */
export function dashboardRoutes(auth: RestAuth, activity: Activity, metrics: Metrics, nodeId: string) {
  return new Elysia({ name: "dashboard-routes" }).get("/v1/dashboard", async ({ request }) => {
    const { tenant } = await auth.authenticate(request);
    const now = Date.now();
    const counters = metrics.tenant(tenant);
    const seen = activity.snapshot(tenant);
    // Updates a slow client did not get because a newer one replaced them (ws/slow-lane.ts).
    const conflated = counters.conflated;
    const drops = {
      dropped_sends: counters.droppedSends,
      conflated,
      slow_consumer_closes: seen.slowConsumerCloses,
      total: counters.droppedSends + conflated + seen.slowConsumerCloses,
    };
    const attempted = counters.deliveries + counters.droppedSends + conflated;
    return {
      tenant,
      // On a cluster each node answers for itself: the balancer's choice of node is in the answer.
      node: nodeId,
      generated_at: now,
      uptime_s: Math.floor((now - activity.startedAt) / 1000),
      connections: { current: counters.connections, subscriptions: counters.subscriptions, opened_last_hour: seen.lastHour.connects },
      last_hour: hourView(seen.lastHour),
      deliveries_per_sec: seen.deliveriesPerSec,
      delivery_ratio: attempted === 0 ? 1 : Math.round((counters.deliveries / attempted) * 10_000) / 10_000,
      drops,
      top_channels: seen.topChannels,
      series: {
        per_minute: seen.perMinute.map(pointView),
        live: { interval_s: 10, points: seen.live.map(pointView) },
      },
    };
  });
}

function hourView(c: ActivityCounts) {
  return { events: c.events, messages: c.messages, notifications: c.notifications, deliveries: c.deliveries, connects: c.connects };
}

function pointView(p: ActivityPoint) {
  return { t: p.t, ...hourView(p) };
}
