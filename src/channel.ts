import { SinalError } from "./errors.ts";
import { CHANNEL_RE, Namespaces, type Namespace } from "./namespaces.ts";

/**
 * A channel parsed once at the edge. Everything inward takes this value, never a raw string,
 * so the tenant travels with every call and a client can never name another tenant's topic.
 */
export interface Channel {
  readonly tenant: string;
  /** Its namespace's name (`room`, `dept`, a configured `campaign` ...); options are the deployment's (Namespaces). */
  readonly kind: string;
  /** null for a bare namespace name (`global`, `system`, `presence`, `campaign`). */
  readonly id: string | null;
  /** The name clients see, without tenant: `room:42`. */
  readonly name: string;
  /** The internal pub/sub topic: `<tenant>/<name>`. */
  readonly topic: string;
}

/**
 * Parses a channel name for `tenant` against the deployment's namespaces (the built-ins when none
 * is given: enough for the names sinal makes itself, `user:<sub>`, `room:<id>`, `sync:<module>`,
 * whose rules an operator cannot change). Throws SinalError bad_request (not the grammar) or
 * unknown_channel (a namespace that does not exist, or an id where its rule does not allow one).
 */
export function parseChannel(tenant: string, name: unknown, namespaces: Namespaces = Namespaces.builtIn()): Channel {
  if (typeof name !== "string") throw new SinalError("bad_request", "channel must be a string");
  const match = CHANNEL_RE.exec(name);
  if (!match) throw new SinalError("bad_request", `channel "${truncate(name)}" does not match ${CHANNEL_RE.source}`);
  const kind = match[1]!;
  const id = match[2] ?? null;
  const ns = namespaces.get(kind);
  const fits = ns !== undefined && (id === null ? ns.id !== "required" : ns.id !== "none");
  if (!fits) throw new SinalError("unknown_channel", `unknown channel "${name}"`);
  return { tenant, kind, id, name, topic: `${tenant}/${name}` };
}

/** The tenant of an internal topic (`<tenant>/<name>`, see Channel.topic). */
export function tenantOfTopic(topic: string): string {
  return topic.slice(0, topic.indexOf("/"));
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

/**
 * Subscribe rule (docs/protocol.md "Channels"): one's own user channel, an open namespace's
 * channels (`global`, `system`), and what `sub_channels` grants; another user's channel never.
 * `namespace` is the channel's, from the deployment's Namespaces (the built-in when omitted).
 */
export function maySubscribe(user: string, subPatterns: readonly string[] | undefined, channel: Channel, namespace?: Namespace): boolean {
  if (channel.kind === "user") return channel.id === user;
  if ((namespace ?? Namespaces.builtIn().get(channel.kind))?.open) return true;
  return matchesAny(subPatterns, channel);
}

/**
 * Direct client publishing: only in a namespace with `client_publish`, with an explicit
 * `pub_channels` grant, and never into another user's channel.
 */
export function mayPublish(user: string, pubPatterns: readonly string[] | undefined, channel: Channel, namespace: Namespace): boolean {
  if (!namespace.clientPublish) return false;
  if (channel.kind === "user" && channel.id !== user) return false;
  return matchesAny(pubPatterns, channel);
}
