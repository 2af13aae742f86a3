import { SinalError } from "./errors.ts";

/**
 * A channel parsed once at the edge. Everything inward takes this value, never a raw string,
 * so the tenant travels with every call and a client can never name another tenant's topic.
 */
export interface Channel {
  readonly tenant: string;
  readonly kind: ChannelKind;
  /** null for kinds without an id (`global`, `system`, `presence`). */
  readonly id: string | null;
  /** The name clients see, without tenant: `room:42`. */
  readonly name: string;
  /** The internal pub/sub topic: `<tenant>/<name>`. */
  readonly topic: string;
}

const KINDS_WITHOUT_ID = new Set(["global", "system", "presence"]);
const KINDS_WITH_ID = new Set(["dept", "room", "user", "roulette", "strategy", "sync"]);
export type ChannelKind = "global" | "system" | "presence" | "dept" | "room" | "user" | "roulette" | "strategy" | "sync";

const NAME_RE = /^([a-z]+)(?::([A-Za-z0-9_.@-]{1,128}))?$/;

/** Parses a client-supplied channel name for `tenant`; throws SinalError bad_request/unknown_channel. */
export function parseChannel(tenant: string, name: unknown): Channel {
  if (typeof name !== "string") throw new SinalError("bad_request", "channel must be a string");
  const match = NAME_RE.exec(name);
  if (!match) throw new SinalError("bad_request", `channel "${truncate(name)}" does not match ^[a-z]+(:[A-Za-z0-9_.@-]{1,128})?$`);
  const kind = match[1]!;
  const id = match[2] ?? null;
  const known = id === null ? KINDS_WITHOUT_ID.has(kind) : KINDS_WITH_ID.has(kind);
  if (!known) throw new SinalError("unknown_channel", `unknown channel "${name}"`);
  return { tenant, kind: kind as ChannelKind, id, name, topic: `${tenant}/${name}` };
}

/** The channel a user always has: `user:<sub>`. */
export function userChannel(tenant: string, user: string): Channel {
  return parseChannel(tenant, `user:${user}`);
}

function truncate(s: string): string {
  return s.length > 64 ? `${s.slice(0, 64)}...` : s;
}

/**
 * Channel permission patterns from a token's `sub_channels`/`pub_channels`:
 * `room:*` matches every `room:<id>`, a bare `*` every channel, anything else only itself.
 */
export function matchesAny(patterns: readonly string[] | undefined, channel: Channel): boolean {
  if (!patterns) return false;
  for (const pattern of patterns) {
    if (pattern === "*" || pattern === channel.name) return true;
    if (pattern.endsWith(":*") && channel.id !== null && pattern.slice(0, -2) === channel.kind) return true;
  }
  return false;
}

const ALWAYS_SUBSCRIBABLE = new Set<ChannelKind>(["global", "system", "presence"]);

/** Subscribe rule (docs/protocol.md "Channels"): own user channel and the public ones always; another user's never. */
export function maySubscribe(user: string, subPatterns: readonly string[] | undefined, channel: Channel): boolean {
  if (channel.kind === "user") return channel.id === user;
  if (ALWAYS_SUBSCRIBABLE.has(channel.kind)) return true;
  return matchesAny(subPatterns, channel);
}

/** Direct client publishing needs an explicit pub_channels grant; never into another user's channel. */
export function mayPublish(user: string, pubPatterns: readonly string[] | undefined, channel: Channel): boolean {
  if (channel.kind === "user" && channel.id !== user) return false;
  return matchesAny(pubPatterns, channel);
}
