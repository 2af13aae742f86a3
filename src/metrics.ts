import { Counter, Gauge, Registry } from "prom-client";

/** Counters of one tenant on this node. */
export interface TenantStats {
  connections: number;
  subscriptions: number;
  publications: number;
  deliveries: number;
  droppedSends: number;
  /** Updates a slow client did not get because a newer one for the same key replaced them. */
  conflated: number;
}

const emptyStats = (): TenantStats => ({ connections: 0, subscriptions: 0, publications: 0, deliveries: 0, droppedSends: 0, conflated: 0 });

/**
 * Node counters, kept per tenant in plain numbers on the hot path and turned into Prometheus
 * series only when scraped. Per-tenant labels go to the `topTenants` busiest tenants; the rest
 * are summed under tenant="_other", so the number of series stays bounded however many tenants.
 */
export class Metrics {
  readonly registry = new Registry();
  private readonly tenants = new Map<string, TenantStats>();
  private readonly rejectedByCode = new Map<string, number>();
  private readonly authFailuresByReason = new Map<string, number>();
  private slowConsumerCloses = 0;
  private readonly conflatedByKind = new Map<string, number>();
  private readonly backgroundFailures = new Map<string, number>();
  /** Connections whose frames are being conflated now (see ws/slow-lane.ts). */
  slowClients = 0;
  private readonly samples: { at: number; publications: number; deliveries: number }[] = [];

  constructor(private readonly topTenants: number) {
    const perTenant = (field: keyof TenantStats) => () => this.byTopTenant(field);
    this.gauge("sinal_connections", "Open WebSocket connections", perTenant("connections"));
    this.gauge("sinal_subscriptions", "Channel subscriptions of open connections", perTenant("subscriptions"));
    this.counter("sinal_publications_total", "Publications accepted", ["tenant"], perTenant("publications"));
    this.counter("sinal_deliveries_total", "Publications handed to subscriber sockets", ["tenant"], perTenant("deliveries"));
    this.counter("sinal_dropped_sends_total", "Frames not sent because a socket was past its backpressure limit", ["tenant"], perTenant("droppedSends"));
    this.counter("sinal_rejected_frames_total", "Client frames rejected, by error code", ["code"], () =>
      [...this.rejectedByCode].map(([code, value]) => ({ labels: { code }, value })),
    );
    this.counter("sinal_auth_failures_total", "Refused WebSocket upgrades and REST calls, by reason", ["reason"], () =>
      [...this.authFailuresByReason].map(([reason, value]) => ({ labels: { reason }, value })),
    );
    this.counter("sinal_slow_consumer_closes_total", "Connections closed with 4009", [], () => [{ labels: {}, value: this.slowConsumerCloses }]);
    this.counter("sinal_conflated_total", "Updates not sent to a slow client because a newer one for the same key replaced them, by channel kind", ["kind"], () =>
      [...this.conflatedByKind].map(([kind, value]) => ({ labels: { kind }, value })),
    );
    this.counter("sinal_background_failures_total", "Work nobody awaited that failed (publications of joins, leaves, lock expiry, feeds; trims), by source", ["source"], () =>
      [...this.backgroundFailures].map(([source, value]) => ({ labels: { source }, value })),
    );
    this.counter("sinal_conflated_by_tenant_total", "Updates conflated for slow clients, by tenant", ["tenant"], perTenant("conflated"));
    const metrics = this;
    new Gauge({
      name: "sinal_slow_clients",
      help: "Connections past CONFLATE_AFTER_BYTES whose typing, presence and feed updates are conflated",
      registers: [this.registry],
      collect() {
        this.set(metrics.slowClients);
      },
    });
  }

  /**
   * `sinal_node_info{node, mode} 1`: which node these numbers are from. On a cluster every node
   * exports its own (sum them per tenant in Prometheus; docs/operations.md).
   */
  nodeInfo(node: string, mode: "single" | "cluster"): void {
    new Gauge({ name: "sinal_node_info", help: "This node's id, and whether it runs alone or in a cluster", labelNames: ["node", "mode"], registers: [this.registry] }).set({ node, mode }, 1);
  }

  /** Counts one failure of background work (`sinal_background_failures_total{source}`). */
  backgroundFailed(source: string): void {
    this.backgroundFailures.set(source, (this.backgroundFailures.get(source) ?? 0) + 1);
  }

  /** `sinal_channels_evicted_total`: channels whose in-memory state the channel bounds evicted. */
  countChannelsEvicted(read: () => number): void {
    this.counter("sinal_channels_evicted_total", "Channels evicted from memory past MAX_CHANNELS or MAX_CHANNELS_PER_TENANT (they start again under a new epoch)", [], () => [
      { labels: {}, value: read() },
    ]);
  }

  private gauge(name: string, help: string, values: () => { labels: Record<string, string>; value: number }[]): void {
    new Gauge({
      name,
      help,
      labelNames: ["tenant"],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const { labels, value } of values()) this.set(labels, value);
      },
    });
  }

  private counter(name: string, help: string, labelNames: string[], values: () => { labels: Record<string, string>; value: number }[]): void {
    new Counter({
      name,
      help,
      labelNames,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const { labels, value } of values()) this.inc(labels, value);
      },
    });
  }

  private byTopTenant(field: keyof TenantStats): { labels: Record<string, string>; value: number }[] {
    const ranked = [...this.tenants].sort((a, b) => b[1].connections - a[1].connections || b[1].publications - a[1].publications);
    const out = ranked.slice(0, this.topTenants).map(([tenant, s]) => ({ labels: { tenant }, value: s[field] }));
    const rest = ranked.slice(this.topTenants).reduce((sum, [, s]) => sum + s[field], 0);
    if (ranked.length > this.topTenants) out.push({ labels: { tenant: "_other" }, value: rest });
    return out;
  }

  tenant(tenant: string): TenantStats {
    let stats = this.tenants.get(tenant);
    if (stats === undefined) {
      stats = emptyStats();
      this.tenants.set(tenant, stats);
    }
    return stats;
  }

  published(tenant: string, deliveries: number): void {
    const stats = this.tenant(tenant);
    stats.publications++;
    stats.deliveries += deliveries;
  }

  /** Deliveries of an ephemeral event (not counted as a publication). */
  delivered(tenant: string, deliveries: number): void {
    this.tenant(tenant).deliveries += deliveries;
  }

  dropped(tenant: string, count = 1): void {
    this.tenant(tenant).droppedSends += count;
  }

  rejected(code: string): void {
    this.rejectedByCode.set(code, (this.rejectedByCode.get(code) ?? 0) + 1);
  }

  authFailed(reason: string): void {
    this.authFailuresByReason.set(reason, (this.authFailuresByReason.get(reason) ?? 0) + 1);
  }

  slowConsumerClosed(): void {
    this.slowConsumerCloses++;
  }

  conflate(tenant: string, kind: string): void {
    this.tenant(tenant).conflated++;
    this.conflatedByKind.set(kind, (this.conflatedByKind.get(kind) ?? 0) + 1);
  }

  totals(): TenantStats {
    const total = emptyStats();
    for (const s of this.tenants.values()) {
      total.connections += s.connections;
      total.subscriptions += s.subscriptions;
      total.publications += s.publications;
      total.deliveries += s.deliveries;
      total.droppedSends += s.droppedSends;
      total.conflated += s.conflated;
    }
    return total;
  }

  /** Called about once a second; keeps 10 s of totals for the rates in /v1/stats. */
  sample(now: number): void {
    const { publications, deliveries } = this.totals();
    this.samples.push({ at: now, publications, deliveries });
    while (this.samples.length > 11) this.samples.shift();
  }

  /** Publications and deliveries per second over the sampled window. */
  rates(): { publicationsPerSec: number; deliveriesPerSec: number } {
    const first = this.samples[0];
    const last = this.samples[this.samples.length - 1];
    if (!first || !last || last.at === first.at) return { publicationsPerSec: 0, deliveriesPerSec: 0 };
    const seconds = (last.at - first.at) / 1000;
    return {
      publicationsPerSec: round((last.publications - first.publications) / seconds),
      deliveriesPerSec: round((last.deliveries - first.deliveries) / seconds),
    };
  }
}

const round = (n: number) => Math.round(n * 10) / 10;
