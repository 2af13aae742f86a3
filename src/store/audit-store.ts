/**
 * The audit log: who did what, per tenant. Append-only; rows older than the retention are pruned.
 * Implementations: sqlite-audit-store.ts.
 */
export interface AuditEntry {
  id: number;
  tenant: string;
  at: number;
  /** `connect`, `disconnect`, `subscribe_denied`, `rest_publish`, `notification`. */
  kind: string;
  /** `user:<sub>`, `key:<id>` or `jwt:<sub>`. */
  actor: string;
  detail: Record<string, unknown> | null;
}

export type NewAuditEntry = Omit<AuditEntry, "id">;

export interface AuditStore {
  /** Appends in one transaction, in order. */
  append(rows: readonly NewAuditEntry[]): Promise<void>;
  /** Newest first; `before` excludes ids >= before. */
  list(tenant: string, opts: { before: number | null; limit: number; kind: string | null }): Promise<AuditEntry[]>;
  /** Deletes rows older than `before` (ms) in bounded batches, like ChatStore.prune; returns how many went. */
  prune(before: number): Promise<number>;
}
