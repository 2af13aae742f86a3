import type { Channel } from "../channel.ts";
import type { ExpiredMember, MarkResult, MemberInfo, MemberKey, PresenceStore, StatusChange, StoredMember } from "../presence/presence-store.ts";
import type { RedisKeys } from "./keys.ts";
import type { Redis } from "./redis-client.ts";
import { PRELUDE, SCRIPTS, type PresenceCommands } from "./redis-presence-scripts.ts";

/**
 * PresenceStore shared by every node, in Redis; keeps the guarantees of presence-store.ts. Each
 * call is one Lua script (atomic), sent on the node's one connection: ioredis writes commands in
 * the order they are made and Redis runs them in that order, so a node's calls take effect in
 * order. (ioredis sends a script's full text the first time on each socket, so a reconnect never
 * meets NOSCRIPT; only a SCRIPT FLUSH would make it resend one call out of order.)
 *
 * Keys of a channel (`<prefix>:{<tenant>}:presence:<kind>:<channel name>`):
 * - `info`    HASH  user -> its info (JSON)
 * - `order`   ZSET  user by join seq: the listing order; kept while any entry of the user is
 * - `clients` HASH  `user\0client` -> the entry's seq (16 hex digits); `user` -> its entry count
 *                   (user ids carry no NUL: a token's `sub` is [A-Za-z0-9_.@-])
 * - `expiry`  ZSET  `<seq><user>\0<client>` by expiry time: ties in score go by member, so by seq
 * - `marks`   HASH  `user\0client` -> `a` (active) or `i` (idle) for each marked entry;
 *                   `user\0\0m` -> how many of the user's entries are marked, `user\0\0a` -> how
 *                   many active (a client id carries no NUL either), each gone at zero
 * Global (`<prefix>:{sinal}:presence:<kind>`):
 * - `due`     ZSET  `<seq><topic>` of each channel's first entry (by time, then seq), by its time:
 *                   its head is the next entry to expire among all channels
 * - `seq`     the counter behind every seq; an entry's seq is set anew each time its expiry is,
 *             so ties of time go in the order they were set (by one node, or by several)
 * Redis deletes an emptied HASH/ZSET itself; a channel's index entry goes with its last entry and
 * `seq` with the last channel: what is held is the live entries.
 *
 * `expire` merges the channels of every tenant in one script (the global order asks for it), so
 * this store needs one Redis (standalone or behind Sentinel), not a Redis Cluster.
 */
export class RedisPresenceStore implements PresenceStore {
  private readonly redis: Redis & PresenceCommands;
  /** `keys.tenant(tenant, "presence")` split around the tenant, for the expire script to name any channel's keys. */
  private readonly channelKeyParts: [string, string];

  /** `expireBatch`: at most this many entries go per script run, so a dead node's thousands do not stall Redis. */
  constructor(
    redis: Redis,
    private readonly keys: RedisKeys,
    private readonly expireBatch = 500,
  ) {
    for (const [name, lua] of Object.entries(SCRIPTS)) redis.defineCommand(name, { numberOfKeys: lua.keys, lua: PRELUDE + lua.body });
    this.redis = redis as Redis & PresenceCommands;
    const [before, after] = keys.tenant("\u0001", "presence").split("\u0001");
    this.channelKeyParts = [before!, after!];
  }

  async add(channel: Channel, member: MemberKey, expiresAt: number, info?: MemberInfo): Promise<boolean> {
    // Names are well-formed (tokens.ts): JSON.stringify writes no lone-surrogate escape, which cjson refuses.
    const infoArgs = info === undefined ? ["0", ""] : ["1", JSON.stringify(info)];
    return (await this.redis.sinalPresenceAdd(...this.channelKeys(channel), channel.topic, member.user, member.client, expiresAt, ...infoArgs)) === 1;
  }

  async refresh(channel: Channel, member: MemberKey, expiresAt: number): Promise<boolean> {
    return (await this.redis.sinalPresenceRefresh(...this.channelKeys(channel), channel.topic, member.user, member.client, expiresAt)) === 1;
  }

  async remove(channel: Channel, member: MemberKey): Promise<boolean> {
    return (await this.redis.sinalPresenceRemove(...this.channelKeys(channel), channel.topic, member.user, member.client)) === 1;
  }

  async mark(channel: Channel, user: string, change: StatusChange): Promise<MarkResult | null> {
    const mark = change.clients === undefined || change.active === undefined ? "" : change.active ? "a" : "i";
    const clients = mark === "" ? [] : change.clients!;
    const found = await this.redis.sinalPresenceMark(this.channelKey(channel, "info"), this.channelKey(channel, "clients"), this.channelKey(channel, "marks"), user, mark, change.chosen ?? "", ...clients);
    if (found === null) return null;
    return { changed: found[0] === 1, info: JSON.parse(found[1]) as MemberInfo };
  }

  async members(channel: Channel): Promise<StoredMember[]> {
    const flat = await this.redis.sinalPresenceMembers(this.channelKey(channel, "order"), this.channelKey(channel, "info"));
    const members: StoredMember[] = [];
    for (let i = 0; i < flat.length; i += 2) members.push({ user: flat[i]!, info: JSON.parse(flat[i + 1]!) as MemberInfo });
    return members;
  }

  async find(channel: Channel, users: readonly string[]): Promise<(MemberInfo | null)[]> {
    if (users.length === 0) return [];
    // The info is there exactly while the user is a member: one HMGET answers.
    const found = await this.redis.hmget(this.channelKey(channel, "info"), ...users);
    return found.map((info) => (info === null ? null : (JSON.parse(info) as MemberInfo)));
  }

  async expire(now: number): Promise<ExpiredMember[]> {
    const expired: ExpiredMember[] = [];
    const channels = new Map<string, Channel>();
    for (;;) {
      const [more, ...flat] = await this.redis.sinalPresenceExpire(this.keys.cluster("presence", "due"), this.keys.cluster("presence", "seq"), now, this.expireBatch, ...this.channelKeyParts);
      for (let i = 0; i < flat.length; i += 4) {
        const topic = flat[i]!;
        let channel = channels.get(topic);
        if (channel === undefined) {
          channel = channelOfTopic(topic);
          channels.set(topic, channel);
        }
        expired.push({ channel, user: flat[i + 1]!, left: flat[i + 2] === "l", info: JSON.parse(flat[i + 3]!) as MemberInfo });
      }
      // Each run is atomic; a later one takes what came due after (or was left by the batch limit).
      if (more !== "1") return expired;
    }
  }

  /**
   * What the keys under the prefix hold, counted from Redis itself (SCAN): channels with any key,
   * entries, and as timers the due index's members plus the counter. Throws on a key it does not
   * know, so a leaked one fails the bounds test. For tests (it walks the whole keyspace).
   */
  async held(): Promise<{ channels: number; entries: number; timers: number }> {
    const channelPrefix = this.channelKeyParts[0];
    const due = this.keys.cluster("presence", "due");
    const seq = this.keys.cluster("presence", "seq");
    // SCAN may return a key twice (while Redis rehashes): each is counted once.
    const found = new Set<string>();
    let cursor = "0";
    do {
      const [next, keys] = await this.redis.scan(cursor, "MATCH", `${this.keys.prefix}:*`, "COUNT", 1000);
      cursor = next;
      for (const key of keys) found.add(key);
    } while (cursor !== "0");
    const channels = new Set<string>();
    let entries = 0;
    let timers = 0;
    for (const key of found) {
      if (key === due) timers += await this.redis.zcard(key);
      else if (key === seq) timers += 1;
      else {
        const [, tenant, kind, name] = CHANNEL_KEY.exec(key.startsWith(channelPrefix) ? key.slice(channelPrefix.length) : "") ?? [];
        if (tenant === undefined) throw new Error(`unexpected key ${key}`);
        channels.add(`${tenant}/${name}`);
        if (kind === "expiry") entries += await this.redis.zcard(key);
      }
    }
    return { channels: channels.size, entries, timers };
  }

  private channelKey(channel: Channel, kind: "info" | "order" | "clients" | "expiry" | "marks"): string {
    return this.keys.tenant(channel.tenant, "presence", kind, channel.name);
  }

  /** The keys of a channel script (add, refresh, remove), in their order in KEYS. */
  private channelKeys(channel: Channel): [string, string, string, string, string, string, string] {
    return [
      this.channelKey(channel, "info"),
      this.channelKey(channel, "order"),
      this.channelKey(channel, "clients"),
      this.channelKey(channel, "expiry"),
      this.keys.cluster("presence", "due"),
      this.keys.cluster("presence", "seq"),
      this.channelKey(channel, "marks"),
    ];
  }
}

/** A channel's key after `<prefix>:{`: its tenant, kind and channel name. */
const CHANNEL_KEY = /^([^}]*)\}:presence:(info|order|clients|expiry|marks):(.*)$/;

/** A channel from its topic (`<tenant>/<kind>[:<id>]`, CHANNEL_RE): the namespaces were checked when it was parsed first. */
function channelOfTopic(topic: string): Channel {
  const slash = topic.indexOf("/");
  const name = topic.slice(slash + 1);
  const colon = name.indexOf(":");
  return { tenant: topic.slice(0, slash), kind: colon < 0 ? name : name.slice(0, colon), id: colon < 0 ? null : name.slice(colon + 1), name, topic };
}
