import { and, desc, eq, lt, sql } from "drizzle-orm";
import type { AuditEntry, AuditStore, NewAuditEntry } from "./audit-store.ts";
import type { PgDb } from "./pg-db.ts";
import { auditLog } from "./schema.pg.ts";
import { pruneInBatches } from "./prune.ts";

/** Rows per INSERT: 5 bound values each, far under PostgreSQL's 65,535 per statement. */
const INSERT_CHUNK = 1_000;

/** See AuditStore; `detail` is jsonb and holds the object itself (not a JSON string). */
export class PgAuditStore implements AuditStore {
  constructor(private readonly db: PgDb) {}

  async append(rows: readonly NewAuditEntry[]): Promise<void> {
    if (rows.length === 0) return;
    const values = rows.map(({ tenant, at, kind, actor, detail }) => ({ tenant, at, kind, actor, detail }));
    if (values.length <= INSERT_CHUNK) {
      // One statement is atomic by itself, and keeps the order of ids (bigserial, row by row).
      await this.db.insert(auditLog).values(values);
      return;
    }
    await this.db.transaction(async (tx) => {
      for (let i = 0; i < values.length; i += INSERT_CHUNK) await tx.insert(auditLog).values(values.slice(i, i + INSERT_CHUNK));
    });
  }

  async list(tenant: string, opts: { before: number | null; limit: number; kind: string | null }): Promise<AuditEntry[]> {
    const rows = await this.db
      .select()
      .from(auditLog)
      .where(
        and(
          eq(auditLog.tenant, tenant),
          opts.before === null ? undefined : lt(auditLog.id, opts.before),
          opts.kind === null ? undefined : eq(auditLog.kind, opts.kind),
        ),
      )
      .orderBy(desc(auditLog.id))
      .limit(opts.limit);
    return rows.map((row) => ({ ...row, detail: (row.detail ?? null) as Record<string, unknown> | null }));
  }

  async prune(before: number): Promise<number> {
    // `at` is indexed (audit_at_idx): each batch reads only the rows it deletes. The count comes
    // back as one row, not the deleted ids. Two nodes pruning at once is harmless: the later one
    // finds some rows gone, deletes fewer, and stops early.
    return pruneInBatches(async (limit) => {
      const rows = (await this.db.execute(sql`
        WITH gone AS (
          DELETE FROM ${auditLog} WHERE ${auditLog.id} IN (
            SELECT ${auditLog.id} FROM ${auditLog} WHERE ${auditLog.at} < ${before} ORDER BY ${auditLog.at} LIMIT ${limit}
          ) RETURNING 1
        )
        SELECT count(*)::int AS n FROM gone`)) as unknown as { n: number | string }[];
      return Number(rows[0]?.n ?? 0);
    });
  }
}
