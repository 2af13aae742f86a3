import type { Channel } from "../channel.ts";
import { Close } from "../errors.ts";
import type { Peer, PeerListener } from "../peer.ts";
import { RollingBuckets, TopKeys } from "./rolling.ts";

/** What happened in one time bucket of one tenant. */
export interface ActivityCounts {
  /** Publications, ephemeral ones (typing, presence changes) included. */
  events: number;
  /** Chat messages (`new_message`). */
  messages: number;
  /** `notification` publications (one per user pushed to, or one per channel). */
  notifications: number;
  /** Sockets the events were handed to. */
  deliveries: number;
  /** WebSocket connections opened. */
  connects: number;
}

export interface ActivityPoint extends ActivityCounts {
  /** Start of the bucket, unix ms. */
  t: number;
}

/** One tenant's activity on this node, as the dashboard shows it. */
export interface ActivitySnapshot {
  lastHour: ActivityCounts;
  /** Deliveries per second over the last minute. */
  deliveriesPerSec: number;
  /** The busiest channels of the last hour, busiest first. */
  topChannels: { channel: string; events: number }[];
  /** Connections this tenant lost to the slow-consumer close (4009) since the server started. */
  slowConsumerCloses: number;
  /** Per minute over the last hour, oldest first. */
  perMinute: ActivityPoint[];
  /** Per 10 s over the last 10 minutes, oldest first (the live chart). */
  live: ActivityPoint[];
}

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const LIVE_BUCKET_MS = 10_000;
/** Channel counts are kept per 10 minutes: 6 sketches an hour, each of at most 2 x CHANNELS_PER_BUCKET keys (a few KB per tenant). */
const CHANNEL_BUCKET_MS = 10 * MINUTE;
const CHANNELS_PER_BUCKET = 16;
const TOP_CHANNELS = 8;

const emptyCounts = (): ActivityCounts => ({ events: 0, messages: 0, notifications: 0, deliveries: 0, connects: 0 });

class TenantActivity {
  readonly minutes = new RollingBuckets(60, MINUTE, emptyCounts);
  readonly live = new RollingBuckets(60, LIVE_BUCKET_MS, emptyCounts);
  readonly channels = new RollingBuckets(HOUR / CHANNEL_BUCKET_MS, CHANNEL_BUCKET_MS, () => new TopKeys(CHANNELS_PER_BUCKET));
  lastSeen = 0;
}

const NO_ACTIVITY = new TenantActivity();

/**
 * Rolling per-tenant activity for the dashboard (`GET /v1/dashboard`): events, chat messages,
 * notifications, deliveries and connects per minute over the last hour, per 10 s over the last
 * 10 minutes, and the busiest channels. Fed by `publisher.observe` and, as a connection
 * listener, by the gateway.
 *
 * Memory is bounded: fixed rings per tenant, channel counts in Space-Saving sketches, and a
 * tenant with no activity for an hour is forgotten (its slow-consumer count, one number, stays).
 */
export class Activity implements PeerListener {
  readonly startedAt: number;
  private readonly tenants = new Map<string, TenantActivity>();
  private readonly slowConsumerCloses = new Map<string, number>();
  private prunedMinute = 0;

  constructor(private readonly clock: () => number = Date.now) {
    this.startedAt = clock();
  }

  /** A publication reached `reached` sockets (the `publisher.observe` callback). */
  published(channel: Channel, event: string, reached: number): void {
    const now = this.clock();
    const tenant = this.touch(channel.tenant, now);
    // Runs on every publication: no allocation here.
    count(tenant.minutes.at(now), event, reached);
    count(tenant.live.at(now), event, reached);
    tenant.channels.at(now).add(channel.name);
  }

  /** A publication made on another node reached `reached` of this node's sockets (no event here: its node counts it). */
  delivered(tenant: string, reached: number): void {
    if (reached === 0) return;
    const now = this.clock();
    const counts = this.touch(tenant, now);
    counts.minutes.at(now).deliveries += reached;
    counts.live.at(now).deliveries += reached;
  }

  opened(peer: Pick<Peer, "tenant">): void {
    const now = this.clock();
    const tenant = this.touch(peer.tenant, now);
    tenant.minutes.at(now).connects++;
    tenant.live.at(now).connects++;
  }

  closed(peer: Pick<Peer, "tenant">, code: number): void {
    if (code === Close.slowConsumer) this.slowConsumerCloses.set(peer.tenant, (this.slowConsumerCloses.get(peer.tenant) ?? 0) + 1);
  }

  snapshot(tenantId: string): ActivitySnapshot {
    const now = this.clock();
    const slowConsumerCloses = this.slowConsumerCloses.get(tenantId) ?? 0;
    // Only read, never written: a tenant with no recent activity shows empty series.
    const tenant = this.tenants.get(tenantId) ?? NO_ACTIVITY;
    const perMinute = points(tenant.minutes, now);
    const live = points(tenant.live, now);
    const lastHour = emptyCounts();
    for (const p of perMinute) addCounts(lastHour, p);
    // The last 6 live buckets (the current one partly) cover the last minute or a little less.
    const lastMinute = live.slice(-6);
    const since = Math.max(this.startedAt, lastMinute[0]!.t);
    const seconds = Math.max(1, (now - since) / 1000);
    const deliveriesPerSec = Math.round((lastMinute.reduce((sum, p) => sum + p.deliveries, 0) / seconds) * 10) / 10;
    return { lastHour, deliveriesPerSec, topChannels: topChannels(tenant, now), slowConsumerCloses, perMinute, live };
  }

  private touch(tenantId: string, now: number): TenantActivity {
    const minute = Math.floor(now / MINUTE);
    if (minute !== this.prunedMinute) {
      this.prunedMinute = minute;
      for (const [id, t] of this.tenants) if (t.lastSeen < now - HOUR) this.tenants.delete(id);
    }
    let tenant = this.tenants.get(tenantId);
    if (tenant === undefined) {
      tenant = new TenantActivity();
      this.tenants.set(tenantId, tenant);
    }
    tenant.lastSeen = now;
    return tenant;
  }
}

function count(counts: ActivityCounts, event: string, reached: number): void {
  counts.events++;
  counts.deliveries += reached;
  if (event === "new_message") counts.messages++;
  else if (event === "notification") counts.notifications++;
}

function points(ring: RollingBuckets<ActivityCounts>, now: number): ActivityPoint[] {
  return ring.window(now).map(({ start, value }) => ({ t: start, ...(value ?? emptyCounts()) }));
}

function addCounts(into: ActivityCounts, from: ActivityCounts): void {
  into.events += from.events;
  into.messages += from.messages;
  into.notifications += from.notifications;
  into.deliveries += from.deliveries;
  into.connects += from.connects;
}

function topChannels(tenant: TenantActivity, now: number): { channel: string; events: number }[] {
  const merged = new Map<string, number>();
  for (const { value } of tenant.channels.window(now)) {
    if (value === null) continue;
    for (const [channel, count] of value.entries()) merged.set(channel, (merged.get(channel) ?? 0) + count);
  }
  return [...merged]
    .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
    .slice(0, TOP_CHANNELS)
    .map(([channel, events]) => ({ channel, events }));
}
