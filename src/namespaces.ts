import { readFileSync } from "node:fs";
import type { Retention } from "./history/history.ts";

/**
 * Channel namespaces: what the part of a channel name before `:` means. sinal has built-in ones
 * (today's kinds, with today's behaviour); an operator adds its own (`campaign`, `whatsapp`) and
 * may change a built-in's options, in `SINAL_NAMESPACES` (a JSON array) or `SINAL_NAMESPACES_FILE`.
 * A channel is `<namespace>:<id>`, or the bare namespace name where its id rule allows.
 * Every node of a cluster reads the same configuration, so every node agrees on every rule.
 */
export interface Namespace {
  readonly name: string;
  /** `required`: always `<name>:<id>`; `none`: only the bare name; `optional`: either (configured namespaces). */
  readonly id: "required" | "none" | "optional";
  /** What a channel keeps for recovery (`"<size>,<age>"` or `"off"` in the configuration). */
  readonly history: Retention;
  /** History in the store, surviving restarts (built-in `room` only). */
  readonly durable: boolean;
  /** Clients with a matching `pub_channels` grant may publish here. */
  readonly clientPublish: boolean;
  /** Every publication is a latest value: a slow consumer gets only the newest per key (conflated). */
  readonly latestValue: boolean;
  /** `user_joined` / `user_left` go out when a user's first connection subscribes and its last leaves. */
  readonly joinLeave: boolean;
  /** Who is subscribed is kept, per user: listed in the subscribe reply and by `GET /v1/presence?channel=` (src/presence/presence.ts). */
  readonly presence: boolean;
  /** Any user of the tenant may subscribe, without a grant (built-in `global` and `system`). */
  readonly open: boolean;
  /** `room` only: every room admits only its members, exact grants and admins, even before members are set (chat/room-access.ts). */
  readonly membersOnly: boolean;
}

export class NamespaceError extends Error {
  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(message);
    this.name = "NamespaceError";
  }
}

const off: Retention = { size: 0, ttlMs: 0 };
const builtIn = (name: string, id: Namespace["id"], history: string, more: Partial<Namespace> = {}): Namespace => ({
  name,
  id,
  history: parseRetention(history, "built-in"),
  durable: false,
  clientPublish: true,
  latestValue: false,
  joinLeave: false,
  presence: false,
  open: false,
  membersOnly: false,
  ...more,
});

/** Today's kinds: names, id rules and defaults (HISTORY_<NAME> overrides the history). */
const BUILT_INS: readonly Namespace[] = [
  builtIn("global", "none", "100,1h", { open: true }),
  builtIn("system", "none", "100,1h", { open: true }),
  builtIn("presence", "none", "off", { latestValue: true }),
  builtIn("dept", "required", "100,1h"),
  builtIn("room", "required", "1000,24h", { durable: true, joinLeave: true, presence: true }),
  builtIn("user", "required", "100,24h"),
  builtIn("roulette", "required", "20,2m", { latestValue: true }),
  builtIn("strategy", "required", "20,2m", { latestValue: true }),
  builtIn("sync", "required", "100,1h"),
];

/** The options a configuration entry may set, with the Namespace field each sets. */
const OPTIONS: Record<string, keyof Namespace> = {
  history: "history",
  client_publish: "clientPublish",
  latest_value: "latestValue",
  join_leave: "joinLeave",
  presence: "presence",
  members_only: "membersOnly",
};

export const NAMESPACE_RE = /^[a-z][a-z0-9_-]{0,31}$/;
/** A channel name: `<namespace>` or `<namespace>:<id>`. */
export const CHANNEL_RE = /^([a-z][a-z0-9_-]{0,31})(?::([A-Za-z0-9_.@-]{1,128}))?$/;

/** The namespaces of one deployment: the built-ins, overridden and extended by configuration. */
export class Namespaces {
  private readonly byName: ReadonlyMap<string, Namespace>;

  constructor(list: readonly Namespace[]) {
    this.byName = new Map(list.map((ns) => [ns.name, ns]));
  }

  /** Only the built-in namespaces, with their defaults. */
  static builtIn(): Namespaces {
    return BUILT_IN;
  }

  get(name: string): Namespace | undefined {
    return this.byName.get(name);
  }

  list(): Namespace[] {
    return [...this.byName.values()];
  }

  /** The namespace of a topic (`<tenant>/<namespace>[:<id>]`); undefined when none is known. */
  ofTopic(topic: string): Namespace | undefined {
    const name = topic.slice(topic.indexOf("/") + 1);
    const colon = name.indexOf(":");
    return this.byName.get(colon < 0 ? name : name.slice(0, colon));
  }
}

const BUILT_IN = new Namespaces(BUILT_INS);

type Env = Record<string, string | undefined>;

/**
 * The deployment's namespaces from the environment: the built-ins (their history from
 * HISTORY_<NAME> when set), then each entry of SINAL_NAMESPACES or SINAL_NAMESPACES_FILE, which
 * adds a namespace or changes options of a built-in. Throws NamespaceError naming the variable,
 * the namespace and the key.
 */
export function parseNamespaces(env: Env): Namespace[] {
  const byName = new Map<string, Namespace>();
  for (const ns of BUILT_INS) {
    const variable = `HISTORY_${ns.name.toUpperCase()}`;
    const raw = env[variable];
    byName.set(ns.name, raw === undefined || raw === "" ? ns : { ...ns, history: parseRetention(raw, variable) });
  }
  const { variable, entries } = readEntries(env);
  entries.forEach((entry, i) => {
    const where = `${variable}[${i}]`;
    if (typeof entry !== "object" || entry === null || Array.isArray(entry)) throw new NamespaceError(variable, `${where} must be an object like {"name": "campaign"}`);
    const { name, ...options } = entry as Record<string, unknown>;
    if (typeof name !== "string" || !NAMESPACE_RE.test(name)) {
      throw new NamespaceError(variable, `${where}.name must match ${NAMESPACE_RE.source} (a lower-case name like "campaign"), got ${JSON.stringify(name)}`);
    }
    const base = byName.get(name) ?? { ...builtIn(name, "optional", "100,1h"), clientPublish: false };
    const changed: Record<string, unknown> = { ...base };
    for (const [key, value] of Object.entries(options)) {
      const field = OPTIONS[key];
      if (field === undefined) throw new NamespaceError(variable, `namespace "${name}": unknown option "${key}" (allowed: ${Object.keys(OPTIONS).join(", ")})`);
      if (field === "history") {
        if (typeof value !== "string") throw new NamespaceError(variable, `namespace "${name}": history must be "<size>,<age>" or "off"`);
        changed.history = parseRetention(value, variable, `namespace "${name}": history: `);
      } else if (typeof value !== "boolean") {
        throw new NamespaceError(variable, `namespace "${name}": ${key} must be true or false, got ${JSON.stringify(value)}`);
      } else changed[field] = value;
    }
    if (changed.membersOnly === true && name !== "room") throw new NamespaceError(variable, `namespace "${name}": members_only applies to room only (only rooms have members)`);
    byName.set(name, changed as unknown as Namespace);
  });
  return [...byName.values()];
}

function readEntries(env: Env): { variable: string; entries: unknown[] } {
  const inline = env.SINAL_NAMESPACES;
  const file = env.SINAL_NAMESPACES_FILE;
  if (inline && file) throw new NamespaceError("SINAL_NAMESPACES", "set SINAL_NAMESPACES or SINAL_NAMESPACES_FILE, not both");
  const variable = file ? "SINAL_NAMESPACES_FILE" : "SINAL_NAMESPACES";
  let text = inline ?? "";
  if (file) {
    try {
      text = readFileSync(file, "utf8");
    } catch (err) {
      throw new NamespaceError(variable, `cannot read ${file}: ${(err as Error).message}`);
    }
  }
  if (text.trim() === "") return { variable, entries: [] };
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new NamespaceError(variable, `not valid JSON: ${(err as Error).message}`);
  }
  if (!Array.isArray(parsed)) throw new NamespaceError(variable, "must be a JSON array of namespaces");
  return { variable, entries: parsed };
}

/** `"<size>,<age>"` (age in ms, s, m, h or d) or `"off"`; a bad value throws naming `variable`. */
export function parseRetention(raw: string, variable: string, prefix = ""): Retention {
  if (raw === "off") return off;
  const match = /^(\d+),(\d+)(ms|s|m|h|d)$/.exec(raw.replace(/\s+/g, ""));
  if (match === null) throw new NamespaceError(variable, `${prefix}expected "<size>,<age>" (e.g. "1000,24h"; age in ms, s, m, h or d) or "off", got "${raw}"`);
  const size = Number(match[1]);
  const ttlMs = Number(match[2]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[match[3] as "ms" | "s" | "m" | "h" | "d"];
  if (size > 100_000) throw new NamespaceError(variable, `${prefix}size must be at most 100000`);
  return { size, ttlMs };
}
