import { parseChannel, type Channel } from "../channel.ts";
import { TENANT_RE } from "../config.ts";
import type { ChannelTemplate, FeedConfig } from "./feed-config.ts";

/**
 * From a MongoDB document to what a feed publishes: plain JSON (ObjectId as its hex string, dates
 * as ISO strings), the tenant and channel it belongs to, and the configured projection and shape.
 * Pure functions; the watcher calls them for every change and for every document of a snapshot.
 */

export type Plain = null | boolean | number | string | Plain[] | { [key: string]: Plain };
export type PlainDoc = { [key: string]: Plain };

/** Why a document was not published (the `reason` label of sinal_feed_skipped_total). */
export type SkipReason = "no_tenant" | "no_channel" | "unknown_document" | "too_large";

export type Resolved = { ok: true; key: string; channel: Channel; data: PlainDoc } | { ok: false; reason: SkipReason };

/** BSON values to JSON-safe values; unknown BSON types fall back to their string form. */
export function toPlain(value: unknown): Plain {
  if (value === null || value === undefined) return null;
  if (typeof value === "string" || typeof value === "boolean") return value;
  if (typeof value === "number") return Number.isFinite(value) ? value : null;
  if (typeof value === "bigint") return Number(value);
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? null : value.toISOString();
  if (Array.isArray(value)) return value.map(toPlain);
  const bsonType = (value as { _bsontype?: string })._bsontype;
  if (bsonType !== undefined) return bsonToPlain(bsonType, value as Record<string, unknown> & { toString(): string });
  if (value instanceof Uint8Array) return Buffer.from(value).toString("base64");
  const out: PlainDoc = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) out[k] = toPlain(v);
  return out;
}

function bsonToPlain(type: string, value: Record<string, unknown> & { toString(): string }): Plain {
  switch (type) {
    case "ObjectId":
    case "ObjectID":
      return (value as unknown as { toHexString(): string }).toHexString();
    case "Int32":
    case "Double":
      return Number((value as unknown as { valueOf(): number }).valueOf());
    case "Long":
      return (value as unknown as { toNumber(): number }).toNumber();
    case "Binary":
      return Buffer.from((value as unknown as { buffer: Uint8Array }).buffer).toString("base64");
    case "Timestamp":
      return { t: Number(value.t ?? 0), i: Number(value.i ?? 0) };
    default:
      // Decimal128, UUID, BSONRegExp, MinKey/MaxKey, Code: their string form keeps every digit.
      return value.toString();
  }
}

/** The value at a dotted path (`meta.tenant`), or undefined. */
export function getPath(doc: Plain, path: string): Plain | undefined {
  let at: Plain | undefined = doc;
  for (const key of path.split(".")) {
    if (at === null || typeof at !== "object" || Array.isArray(at)) return undefined;
    at = at[key];
  }
  return at;
}

function setPath(doc: PlainDoc, path: string, value: Plain): void {
  const keys = path.split(".");
  let at = doc;
  for (const key of keys.slice(0, -1)) {
    const next = at[key];
    if (next === null || typeof next !== "object" || Array.isArray(next)) at[key] = {};
    at = at[key] as PlainDoc;
  }
  at[keys[keys.length - 1]!] = value;
}

/** A document's `_id` as a string key (ObjectId hex, or the JSON of any other id). */
export function documentKey(id: Plain): string {
  return typeof id === "string" ? id : JSON.stringify(id);
}

/** A scalar usable inside a channel name or as a tenant id; null for objects, arrays, null. */
function scalar(value: Plain | undefined): string | null {
  if (typeof value === "string") return value;
  if (typeof value === "number" && Number.isFinite(value)) return String(value);
  return null;
}

export function resolveTenant(feed: FeedConfig, doc: PlainDoc): string | null {
  if (feed.tenant.kind === "fixed") return feed.tenant.tenant;
  const tenant = scalar(getPath(doc, feed.tenant.path));
  return tenant !== null && TENANT_RE.test(tenant) ? tenant : null;
}

/** The channel a document feeds, or null when a field is missing or renders an invalid name. */
export function renderChannel(template: ChannelTemplate, tenant: string, doc: PlainDoc): Channel | null {
  let name = "";
  for (const part of template.parts) {
    if ("literal" in part) {
      name += part.literal;
      continue;
    }
    const value = scalar(getPath(doc, part.path));
    if (value === null) return null;
    name += value;
  }
  try {
    return parseChannel(tenant, name, template.namespaces);
  } catch {
    return null;
  }
}

/** The configured projection (`_id` always kept) and shape (an array cut to its latest N). */
export function shapeData(feed: FeedConfig, doc: PlainDoc): PlainDoc {
  let data: PlainDoc = doc;
  if (feed.fields !== null) {
    data = { _id: doc._id ?? null };
    for (const path of feed.fields) {
      const value = getPath(doc, path);
      if (value !== undefined) setPath(data, path, value);
    }
  }
  const shape = feed.snapshot;
  if (shape.kind === "latest") {
    const list = getPath(data, shape.field);
    if (Array.isArray(list) && list.length > shape.count) {
      if (data === doc) data = structuredClone(doc);
      setPath(data, shape.field, shape.newest === "last" ? list.slice(-shape.count) : list.slice(0, shape.count));
    }
  }
  return data;
}

/** Where a full document goes and what it carries, or why it is skipped. */
export function resolveDocument(feed: FeedConfig, raw: unknown): Resolved {
  const doc = toPlain(raw) as PlainDoc;
  const key = documentKey(doc._id ?? null);
  const tenant = resolveTenant(feed, doc);
  if (tenant === null) return { ok: false, reason: "no_tenant" };
  const channel = renderChannel(feed.channel, tenant, doc);
  if (channel === null) return { ok: false, reason: "no_channel" };
  return { ok: true, key, channel, data: shapeData(feed, doc) };
}
