import type { Logger } from "../log.ts";
import type { AuditStore, NewAuditEntry } from "../store/audit-store.ts";
import type { Connection } from "../ws/connection.ts";
import type { ConnectionListener } from "../ws/hooks.ts";

/**
 * Records connects, disconnects (with close code), denied subscriptions, REST publishes and
 * notifications. Entries are buffered and written in one transaction per flush, so a burst of
 * connections costs a few commits, not one each.
 */
export class AuditLog implements ConnectionListener {
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

  opened(conn: Connection): void {
    this.record(conn.tenant, "connect", `user:${conn.user}`, { client: conn.id });
  }

  closed(conn: Connection, code: number): void {
    this.record(conn.tenant, "disconnect", `user:${conn.user}`, { client: conn.id, code });
  }

  denied(conn: Connection, channel: string, code: string): void {
    this.record(conn.tenant, "subscribe_denied", `user:${conn.user}`, { client: conn.id, channel, code });
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
