import { and, asc, desc, eq, inArray, lt } from "drizzle-orm";
import type { BunSQLiteDatabase } from "drizzle-orm/bun-sqlite";
import type { AuditEntry, AuditStore, NewAuditEntry } from "./audit-store.ts";
import { auditLog } from "./schema.sqlite.ts";
import { pruneInBatches } from "./prune.ts";

type Db = BunSQLiteDatabase<Record<string, never>>;

export class SqliteAuditStore implements AuditStore {
  constructor(private readonly db: Db) {}

  async append(rows: readonly NewAuditEntry[]): Promise<void> {
    if (rows.length === 0) return;
    const values = rows.map((r) => ({ ...r, detail: r.detail === null ? null : JSON.stringify(r.detail) }));
    this.db.transaction((tx) => {
      // SQLite caps bound variables per statement; 6 columns x 500 rows stays well under it.
      for (let i = 0; i < values.length; i += 500) tx.insert(auditLog).values(values.slice(i, i + 500)).run();
    });
  }

  async list(tenant: string, opts: { before: number | null; limit: number; kind: string | null }): Promise<AuditEntry[]> {
    return this.db
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
      .limit(opts.limit)
      .all()
      .map((row) => ({ ...row, detail: row.detail === null ? null : (JSON.parse(row.detail) as Record<string, unknown>) }));
  }

  async prune(before: number): Promise<number> {
    // `at` is indexed (audit_at_idx): each batch reads only the rows it deletes.
    return pruneInBatches((limit) => {
      const old = this.db.select({ id: auditLog.id }).from(auditLog).where(lt(auditLog.at, before)).orderBy(asc(auditLog.at)).limit(limit);
      return this.db.delete(auditLog).where(inArray(auditLog.id, old)).returning({ id: auditLog.id }).all().length;
    });
  }
}
