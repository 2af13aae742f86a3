import type { Logger } from "../log.ts";
import type { AuditStore, NewAuditEntry } from "../store/audit-store.ts";
import type { Peer, PeerListener } from "../peer.ts";

/**
 * Records connects, disconnects (with close code), denied subscriptions, REST publishes and
 * notifications. Entries are buffered and written in one transaction per flush, so a burst of
 * connections costs a few commits, not one each.
 */
export class AuditLog implements PeerListener {
  private buffer: NewAuditEntry[] = [];
  private flushing: Promise<void> = Promise.resolve();

  constructor(
    private readonly store: AuditStore,
    private readonly logger: Logger,
    private readonly maxBuffer = 500,
  ) {}

  record(tenant: string, kind: string, actor: string, detail: Record<string, unknown> | null = null): void {
    this.buffer.push({ tenant, at: Date.now(), kind, actor, detail });
    if (this.buffer.length >= this.maxBuffer) void this.flush();
  }

  opened(peer: Peer): void {
    this.record(peer.tenant, "connect", `user:${peer.user}`, { client: peer.client });
  }

  closed(peer: Peer, code: number): void {
    this.record(peer.tenant, "disconnect", `user:${peer.user}`, { client: peer.client, code });
  }

  denied(peer: Peer, channel: string, code: string): void {
    this.record(peer.tenant, "subscribe_denied", `user:${peer.user}`, { client: peer.client, channel, code });
  }

  /** Writes what is buffered; concurrent calls queue behind each other. */
  flush(): Promise<void> {
    const rows = this.buffer;
    if (rows.length === 0) return this.flushing;
    this.buffer = [];
    this.flushing = this.flushing.then(() =>
      this.store.append(rows).catch((err) => this.logger.error({ err, rows: rows.length }, "audit log write failed")),
    );
    return this.flushing;
  }
}
