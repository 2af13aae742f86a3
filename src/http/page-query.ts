import { SinalError } from "../errors.ts";

/**
 * `?before=<id>&limit=<n>` of the newest-first listings (messages, notifications, audit log):
 * `before` excludes ids >= it; a bad value is a bad_request naming the parameter.
 */
export function pageQuery(
  query: Record<string, string | undefined>,
  opts: { defaultLimit: number; maxLimit: number; idName: string },
): { before: number | null; limit: number } {
  const limit = query.limit === undefined ? opts.defaultLimit : Number(query.limit);
  if (!Number.isInteger(limit) || limit < 1 || limit > opts.maxLimit) {
    throw new SinalError("bad_request", `limit: a whole number from 1 to ${opts.maxLimit}`);
  }
  const before = query.before === undefined ? null : Number(query.before);
  if (before !== null && !(Number.isInteger(before) && before > 0)) throw new SinalError("bad_request", `before: ${opts.idName}`);
  return { before, limit };
}
