import { readFileSync } from "node:fs";
import { parseChannel } from "../channel.ts";
import { Namespaces } from "../namespaces.ts";
import { ConfigError, TENANT_RE } from "../config.ts";

/**
 * The MongoDB feeds an operator configures (docs/protocol.md "MongoDB feeds"): MONGODB_URI,
 * MONGODB_DB, and SINAL_FEEDS (JSON) or SINAL_FEEDS_FILE (a path to the same JSON), validated
 * once at start-up. Every mistake is a ConfigError naming the variable and the feed's field.
 */

/** `roulette:{_id}` split into literal text and document paths. */
export interface ChannelTemplate {
  readonly source: string;
  readonly parts: readonly ({ literal: string } | { path: string })[];
  /** The deployment's namespaces, which a rendered channel must belong to. */
  readonly namespaces: Namespaces;
}

export type SnapshotShape = { kind: "document" } | { kind: "latest"; field: string; count: number; newest: "first" | "last" };

export interface FeedConfig {
  /** Metric label and key of the stored resume token; defaults to the collection. */
  name: string;
  db: string;
  collection: string;
  channel: ChannelTemplate;
  /** A fixed tenant, or the document path holding the tenant id. */
  tenant: { kind: "fixed"; tenant: string } | { kind: "field"; path: string };
  event: string;
  deleteEvent: string;
  /** Paths sent in publications and snapshots (`_id` always is); null sends the whole document. */
  fields: string[] | null;
  /** Shape of publications and snapshots: the document, or it with an array cut to its latest N. */
  snapshot: SnapshotShape;
}

export interface MongoConfig {
  uri: string;
  feeds: FeedConfig[];
  /** Cap of the reconnect backoff (ms); attempts start at 250 ms and double, with jitter. */
  retryMaxMs: number;
}

type Env = Record<string, string | undefined>;

const NAME_RE = /^[A-Za-z0-9_-]{1,64}$/;
const PATH_RE = /^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$/;
const EVENT_RE = /^[A-Za-z0-9_.:-]{1,64}$/;
const KEYS = new Set(["name", "db", "collection", "channel", "tenant", "tenant_field", "event", "delete_event", "fields", "snapshot"]);

/** Reads the feed settings; null when MONGODB_URI is unset and no feed is configured. */
export function parseMongoConfig(env: Env, retryMaxMs: number, namespaces: Namespaces = Namespaces.builtIn()): MongoConfig | null {
  const uri = env.MONGODB_URI?.trim() ?? "";
  const rawFeeds = readFeedsJson(env);
  if (uri === "") {
    if (rawFeeds !== null) throw new ConfigError("MONGODB_URI", `${rawFeeds.variable} lists feeds but MONGODB_URI is not set`);
    return null;
  }
  if (!/^mongodb(\+srv)?:\/\//.test(uri)) {
    // Only the scheme is echoed: the rest of a URI may hold a password.
    const scheme = /^[a-z][a-z0-9+.-]*:/i.exec(uri)?.[0] ?? "no scheme";
    throw new ConfigError("MONGODB_URI", `expected mongodb://... or mongodb+srv://..., got ${scheme}`);
  }
  if (rawFeeds === null) throw new ConfigError("SINAL_FEEDS", "MONGODB_URI is set: list the watched collections in SINAL_FEEDS or SINAL_FEEDS_FILE");
  const defaultDb = env.MONGODB_DB?.trim() || databaseOfUri(uri);
  const { variable, value } = rawFeeds;
  if (!Array.isArray(value) || value.length === 0) throw new ConfigError(variable, "expected a JSON array with at least one feed");
  const feeds = value.map((raw, i) => parseFeed(raw, `[${i}]`, variable, defaultDb, namespaces));
  const names = new Set<string>();
  for (const feed of feeds) {
    if (names.has(feed.name)) throw new ConfigError(variable, `two feeds are named "${feed.name}"; give each a distinct "name"`);
    names.add(feed.name);
  }
  return { uri, feeds, retryMaxMs };
}

function readFeedsJson(env: Env): { variable: string; value: unknown } | null {
  const inline = env.SINAL_FEEDS?.trim() ?? "";
  const file = env.SINAL_FEEDS_FILE?.trim() ?? "";
  if (inline !== "" && file !== "") throw new ConfigError("SINAL_FEEDS", "set SINAL_FEEDS or SINAL_FEEDS_FILE, not both");
  if (inline !== "") return { variable: "SINAL_FEEDS", value: parseJson("SINAL_FEEDS", inline) };
  if (file === "") return null;
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new ConfigError("SINAL_FEEDS_FILE", `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  return { variable: "SINAL_FEEDS_FILE", value: parseJson("SINAL_FEEDS_FILE", text) };
}

function parseJson(variable: string, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ConfigError(variable, `not valid JSON (${(err as Error).message})`);
  }
}

/** The database named in the URI's path (`mongodb://host/runcash`), or "" when none. */
function databaseOfUri(uri: string): string {
  const afterHosts = uri.replace(/^mongodb(\+srv)?:\/\/[^/]*/, "");
  const db = afterHosts.replace(/^\//, "").split("?")[0] ?? "";
  return decodeURIComponent(db);
}

function parseFeed(raw: unknown, at: string, variable: string, defaultDb: string, namespaces: Namespaces): FeedConfig {
  const fail = (field: string, message: string): never => {
    throw new ConfigError(variable, `${at}.${field}: ${message}`);
  };
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new ConfigError(variable, `${at}: expected an object`);
  const obj = raw as Record<string, unknown>;
  for (const key of Object.keys(obj)) if (!KEYS.has(key)) fail(key, `unknown setting; expected one of ${[...KEYS].join(", ")}`);
  const str = (field: string, required: boolean): string | undefined => {
    const value = obj[field];
    if (value === undefined) return required ? fail(field, "required") : undefined;
    if (typeof value !== "string" || value.trim() === "") return fail(field, "expected a non-empty string");
    return value.trim();
  };

  const collection = str("collection", true)!;
  if (collection.includes("$") || collection.includes("\0")) fail("collection", "a collection name cannot hold $ or NUL");
  const db = str("db", false) ?? defaultDb;
  if (db === "") fail("db", "no database: set MONGODB_DB, put one in the MONGODB_URI path, or give the feed a \"db\"");
  const name = str("name", false) ?? collection;
  if (!NAME_RE.test(name)) fail("name", `"${name}" must match ${NAME_RE.source} (it labels metrics)`);
  const event = str("event", true)!;
  if (!EVENT_RE.test(event)) fail("event", `"${event}" must match ${EVENT_RE.source}`);
  const deleteEvent = str("delete_event", false) ?? defaultDeleteEvent(event);
  if (!EVENT_RE.test(deleteEvent)) fail("delete_event", `"${deleteEvent}" must match ${EVENT_RE.source}`);

  const fixedTenant = str("tenant", false);
  const tenantField = str("tenant_field", false);
  if ((fixedTenant === undefined) === (tenantField === undefined)) fail("tenant", 'give exactly one of "tenant" (a fixed tenant id) or "tenant_field" (a document path)');
  if (fixedTenant !== undefined && !TENANT_RE.test(fixedTenant)) fail("tenant", `"${fixedTenant}" is not a tenant id (${TENANT_RE.source})`);
  if (tenantField !== undefined && !PATH_RE.test(tenantField)) fail("tenant_field", `"${tenantField}" is not a document path like tenant_id or meta.tenant`);
  const tenant: FeedConfig["tenant"] = fixedTenant !== undefined ? { kind: "fixed", tenant: fixedTenant } : { kind: "field", path: tenantField! };

  const template = str("channel", true)!;
  const channel = parseTemplate(template, (message) => fail("channel", message), namespaces);

  let fields: string[] | null = null;
  if (obj.fields !== undefined) {
    if (!Array.isArray(obj.fields) || obj.fields.length === 0) fail("fields", "expected a non-empty array of document paths");
    fields = (obj.fields as unknown[]).map((f) => (typeof f === "string" && PATH_RE.test(f) ? f : fail("fields", `${JSON.stringify(f)} is not a document path`)));
  }
  return { name, db, collection, channel, tenant, event, deleteEvent, fields, snapshot: parseSnapshot(obj.snapshot, fail) };
}

/** `roulette_update` -> `roulette_deleted`; any other event `e` -> `e_deleted`. */
function defaultDeleteEvent(event: string): string {
  return event.endsWith("_update") ? `${event.slice(0, -"_update".length)}_deleted` : `${event}_deleted`;
}

export function parseTemplate(source: string, fail: (message: string) => never, namespaces: Namespaces = Namespaces.builtIn()): ChannelTemplate {
  const parts: ChannelTemplate["parts"][number][] = [];
  const re = /\{([^{}]*)\}/g;
  let last = 0;
  for (let m = re.exec(source); m !== null; m = re.exec(source)) {
    if (m.index > last) parts.push({ literal: source.slice(last, m.index) });
    if (!PATH_RE.test(m[1]!)) fail(`"{${m[1]}}" is not a document path like {_id} or {roulette_id}`);
    parts.push({ path: m[1]! });
    last = m.index + m[0].length;
  }
  if (last < source.length) parts.push({ literal: source.slice(last) });
  if (/[{}]/.test(parts.map((p) => ("literal" in p ? p.literal : "")).join(""))) fail(`unbalanced braces in "${source}"`);
  if (!parts.some((p) => "path" in p)) fail(`"${source}" names no document field; use e.g. roulette:{_id}`);
  // A sample rendering must be a channel of the contract (kind with an id: roulette, strategy ...).
  const sample = parts.map((p) => ("literal" in p ? p.literal : "x")).join("");
  try {
    const channel = parseChannel("t", sample, namespaces);
    if (channel.id === null) fail(`"${source}" must render a channel with an id, like roulette:{_id}`);
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    fail(`"${source}" does not render a valid channel: ${(err as Error).message}`);
  }
  return { source, parts, namespaces };
}

function parseSnapshot(raw: unknown, fail: (field: string, message: string) => never): SnapshotShape {
  if (raw === undefined || raw === "document") return { kind: "document" };
  const expected = 'expected "document" or {"field": "<array path>", "latest": N, "newest": "last"|"first"}';
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) return fail("snapshot", expected);
  const { field, latest, newest = "last", ...rest } = raw as Record<string, unknown>;
  if (Object.keys(rest).length > 0) fail("snapshot", `unknown setting ${Object.keys(rest)[0]}; ${expected}`);
  if (typeof field !== "string" || !PATH_RE.test(field)) fail("snapshot.field", "expected the path of an array field, e.g. numbers");
  if (typeof latest !== "number" || !Number.isInteger(latest) || latest < 1 || latest > 10_000) fail("snapshot.latest", "expected a whole number from 1 to 10000");
  if (newest !== "last" && newest !== "first") fail("snapshot.newest", 'expected "last" (new entries are appended, as $push does) or "first"');
  return { kind: "latest", field: field as string, count: latest as number, newest: newest as "first" | "last" };
}
