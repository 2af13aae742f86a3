import type { Redis } from "../redis/redis-client.ts";
import { RedisKeys, tenantOf } from "../redis/keys.ts";
import { keepsHistory, pageOf, randomEpoch, recoveryFrom, type Deliver, type DeliveredPositions, type FrameBuilder, type HistoryStore, type IdempotencyKey, type Kept, type Position, type Recovery, type Retention } from "./history.ts";

/**
 * The history of non-durable channels on a cluster, in Redis (see HistoryStore for the
 * guarantees), shared by every node: per topic a meta hash (`e` epoch, `o` last offset) and a
 * STREAM of kept publications whose ids are the offsets (`<offset>-1`), both under the tenant's
 * hash tag (src/redis/keys.ts). One Lua script per publication assigns the offset (HINCRBY), keeps
 * the frame (XADD with MAXLEN = the retention size), drops entries older than the retention age,
 * refreshes the TTLs (the meta outlives the stream: an idle channel loses its publications before
 * its epoch) and, with an idempotency key, stores the position under the key: a publication whose
 * key is already there is not made again (a feed change re-read after a leader handover). Redis
 * runs scripts one at a time, so offsets have no gap and no repeat whatever the number of nodes.
 *
 * Fan-out to the other nodes is the script's too, given `peers` (the RedisBroker): it PUBLISHes
 * the publication in the broker's envelope on the topic's pub/sub channel in the same step, so a
 * publication costs one round trip and its frame goes to Redis once, and publications leave Redis
 * in offset order. A publication whose key was already answered is not published again. This
 * node's own fan-out is `deliver` (with `sent`: the broker delivers it here only, ordering every
 * node's deliveries by offset, src/broker/redis-broker.ts). Without `peers` the script publishes
 * nothing and `deliver` leaves the sending to the broker. Positions a subscribe is told come from
 * what this node delivered (`positions`): read from Redis only for a topic this node does not
 * track yet, once its subscription to other nodes is active.
 *
 * Bounds: per topic the retention; per tenant at most `maxTopicsPerTenant` topics with state (a
 * sorted set of the tenant's topics by last use, in the same script: past it the least recently
 * used loses its meta and stream, so it starts again under a new epoch, as the memory history
 * evicts); every key has a TTL. Redis must run with `maxmemory-policy noeviction` (an evicted meta
 * would hand out offsets again under its epoch).
 */
export class RedisHistory implements HistoryStore {
  /** The connection, with the scripts defined on it. */
  private readonly scripts: Scripts;

  constructor(
    redis: Redis,
    private readonly keys: RedisKeys,
    private readonly positions: DeliveredPositions,
    private readonly options: { maxTopicsPerTenant: number; metaTtlMs: number; idempotencyTtlMs: number; peers?: Peers },
  ) {
    redis.defineCommand("sinalAppend", { numberOfKeys: 4, lua: APPEND });
    redis.defineCommand("sinalPosition", { numberOfKeys: 2, lua: POSITION });
    redis.defineCommand("sinalRead", { numberOfKeys: 2, lua: READ });
    redis.defineCommand("sinalReset", { numberOfKeys: 3, lua: RESET });
    this.scripts = redis as unknown as Scripts;
  }

  async append(topic: string, build: FrameBuilder, retention: Retention, deliver: Deliver, key?: IdempotencyKey): Promise<{ position: Position; frame: string }> {
    const { head, tail } = frameTemplate(build);
    const now = Date.now();
    const keep = keepsHistory(retention);
    const tenant = tenantOf(topic);
    const peers = this.options.peers?.envelope(topic);
    const reply = (await this.scripts.sinalAppend(
      this.keys.tenant(tenant, "meta", topic),
      this.keys.tenant(tenant, "stream", topic),
      this.keys.tenant(tenant, "topics"),
      key === undefined ? this.keys.tenant(tenant, "nokey") : this.keys.tenant(key.tenant, "key", key.key),
      head,
      tail,
      keep ? retention.size : 0,
      Math.max(1, retention.ttlMs),
      Math.max(this.options.metaTtlMs, retention.ttlMs),
      randomEpoch(),
      now,
      topic,
      this.options.maxTopicsPerTenant,
      key === undefined ? 0 : this.options.idempotencyTtlMs,
      peers?.channel ?? "",
      peers?.head ?? "",
    )) as [number, string, number];
    const [offset, epoch, duplicate] = reply;
    const position = { epoch, offset: Number(offset) };
    // A key already answered: published once before (maybe by another node); nothing to deliver.
    if (duplicate === 1) return { position, frame: "" };
    const frame = `${head}${position.offset},"epoch":"${epoch}"${tail}`;
    deliver(position, frame, peers !== undefined);
    return { position, frame };
  }

  /** Where `topic` stands as this node fanned it out (see the class comment). */
  position(topic: string): Position | Promise<Position> {
    return this.positions.get(topic) ?? this.load(topic);
  }

  async recover(topic: string, since: Position, retention: Retention, maxBytes: number): Promise<Recovery> {
    const position = await this.position(topic);
    const upToDate = since.epoch === position.epoch && since.offset === position.offset;
    if (upToDate || !keepsHistory(retention)) return recoveryFrom(position, since, [], retention, maxBytes);
    const replays = since.epoch === position.epoch && since.offset < position.offset;
    const kept = await this.read(topic, replays ? since.offset : 0, position, retention, replays ? maxBytes : 0);
    return recoveryFrom(position, since, kept, retention, maxBytes);
  }

  async page(topic: string, epoch: string, after: number, upTo: number, retention: Retention, maxBytes: number): Promise<Kept[] | null> {
    const position = await this.position(topic);
    if (position.epoch !== epoch) return null;
    const kept = await this.read(topic, after, { epoch, offset: upTo }, retention, maxBytes, position.offset);
    return kept[0]?.offset === after + 1 ? kept : null;
  }

  async reset(topic: string): Promise<Position> {
    const tenant = tenantOf(topic);
    const epoch = randomEpoch();
    await this.scripts.sinalReset(this.keys.tenant(tenant, "meta", topic), this.keys.tenant(tenant, "stream", topic), this.keys.tenant(tenant, "topics"), epoch, this.options.metaTtlMs, topic, Date.now());
    return this.positions.reset(topic, { epoch, offset: 0 });
  }

  /** Redis trims on append (size, age) and by TTL: nothing to do here. */
  trim(_now: number): void {}

  async close(): Promise<void> {}

  /** The shared position, read once this node receives every later publication of the topic. */
  private async load(topic: string): Promise<Position> {
    await this.positions.ready(topic);
    const known = this.positions.get(topic);
    if (known !== undefined) return known;
    return this.positions.seed(topic, await this.shared(topic));
  }

  /** Where `topic` stands in Redis now (a new epoch at 0 for a topic without state). */
  async shared(topic: string): Promise<Position> {
    const tenant = tenantOf(topic);
    const reply = await this.scripts.sinalPosition(this.keys.tenant(tenant, "meta", topic), this.keys.tenant(tenant, "topics"), randomEpoch(), this.options.metaTtlMs, topic, Date.now());
    const [epoch, offset] = reply as [string, number];
    return { epoch, offset: Number(offset) };
  }

  /**
   * Kept publications with `after < offset <= upTo.offset`, younger than the retention age and
   * among the last `retention.size` up to `top` (the stream is trimmed by the size it was appended
   * with: a smaller one asked now holds at once), at most `maxBytes` (at least one; with 0, only
   * the oldest kept).
   */
  private async read(topic: string, after: number, upTo: Position, retention: Retention, maxBytes: number, top = upTo.offset): Promise<Kept[]> {
    const tenant = tenantOf(topic);
    const minAt = Date.now() - retention.ttlMs;
    // Without a replay only the oldest kept one is read, for `history_from`.
    const count = maxBytes === 0 ? 1 : Math.min(retention.size, upTo.offset - after);
    const floor = Math.max(0, top - retention.size);
    const rows = (await this.scripts.sinalRead(
      this.keys.tenant(tenant, "meta", topic),
      this.keys.tenant(tenant, "stream", topic),
      after,
      upTo.offset,
      Math.max(1, count),
      minAt,
      floor,
    )) as [string, string][];
    const kept = rows.map(([offset, frame]) => ({ offset: Number(offset), frame }));
    return maxBytes === 0 ? kept : pageOf(kept, after, upTo.offset, maxBytes);
  }
}

/** Where the append script sends a publication to the other nodes (RedisBroker.envelope). */
export interface Peers {
  /** The topic's pub/sub channel, and the envelope before `<epoch>\n<offset>\n<frame>`. */
  envelope(topic: string): { channel: string; head: string };
}

interface Scripts {
  sinalAppend(...args: (string | number)[]): Promise<unknown>;
  sinalPosition(...args: (string | number)[]): Promise<unknown>;
  sinalRead(...args: (string | number)[]): Promise<unknown>;
  sinalReset(...args: (string | number)[]): Promise<unknown>;
}

const MARK = "\u0001";

/**
 * A frame builder's output around its position: `head` ends with `"offset":`, then come the
 * offset, `,"epoch":"<epoch>"` and `tail`. Every FrameBuilder writes the position that way
 * (Publisher's pubFrame): the script completes the frame once Redis has assigned the offset. A
 * control character cannot appear raw in serialized JSON, so the marker is found only where the
 * position goes.
 */
export function frameTemplate(build: FrameBuilder): { head: string; tail: string } {
  const probe = build({ epoch: MARK, offset: 0 });
  const marker = `0,"epoch":"${MARK}"`;
  const at = probe.indexOf(marker);
  if (at < 0 || probe.indexOf(marker, at + 1) >= 0) throw new Error("a frame builder must write the position once, as \"offset\":N,\"epoch\":\"E\"");
  return { head: probe.slice(0, at), tail: probe.slice(at + marker.length) };
}

// KEYS: meta, stream, tenant topics, idempotency key. ARGV: head, tail, size (0: keep nothing),
// stream ttl ms, meta ttl ms, epoch if new, now, topic, max topics per tenant, key ttl ms (0: no key),
// pub/sub channel ("": publish nothing), envelope head (RedisBroker.envelope).
// Returns {offset, epoch, duplicate}.
const APPEND = `
local keyTtl = tonumber(ARGV[10])
if keyTtl > 0 then
  local answered = redis.call('GET', KEYS[4])
  if answered then
    local sep = string.find(answered, ':', 1, true)
    return {tonumber(string.sub(answered, sep + 1)), string.sub(answered, 1, sep - 1), 1}
  end
end
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[6]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch, 'o', 0)
end
local offset = redis.call('HINCRBY', KEYS[1], 'o', 1)
local now = tonumber(ARGV[7])
local size = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local frame = ARGV[1] .. offset .. ',"epoch":"' .. epoch .. '"' .. ARGV[2]
if size > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', size, offset .. '-1', 'f', frame, 't', now)
  -- The oldest entry only, and the next while it is past the age (at most 8 a publication):
  -- reading one entry is a third of a publication's Redis time (BENCHMARKS.md, "Several nodes").
  for _ = 1, 8 do
    local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
    if oldest == nil or tonumber(oldest[2][4]) >= now - ttl then break end
    redis.call('XDEL', KEYS[2], oldest[1])
  end
  redis.call('PEXPIRE', KEYS[2], ttl)
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('ZADD', KEYS[3], now, ARGV[8])
redis.call('PEXPIRE', KEYS[3], ARGV[5])
local over = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[9])
if over > 0 then
  local prefix = string.sub(KEYS[1], 1, #KEYS[1] - #ARGV[8])
  local streamPrefix = string.sub(KEYS[2], 1, #KEYS[2] - #ARGV[8])
  for _, evicted in ipairs(redis.call('ZRANGE', KEYS[3], 0, over - 1)) do
    redis.call('DEL', prefix .. evicted, streamPrefix .. evicted)
    redis.call('ZREM', KEYS[3], evicted)
  end
end
if keyTtl > 0 then
  redis.call('SET', KEYS[4], epoch .. ':' .. offset, 'PX', keyTtl)
end
if ARGV[11] ~= '' then
  -- The broker's envelope: the head (node, except) given, then epoch, offset and frame on their lines.
  redis.call('PUBLISH', ARGV[11], ARGV[12] .. epoch .. '\\n' .. offset .. '\\n' .. frame)
end
return {offset, epoch, 0}
`;

// KEYS: meta, tenant topics. ARGV: epoch if new, meta ttl ms, topic, now. Returns {epoch, offset}.
const POSITION = `
local meta = redis.call('HMGET', KEYS[1], 'e', 'o')
if meta[1] then return {meta[1], tonumber(meta[2])} end
redis.call('HSET', KEYS[1], 'e', ARGV[1], 'o', 0)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return {ARGV[1], 0}
`;

// KEYS: meta, stream. ARGV: after, upTo, count, minAt, floor. Returns {offset, frame} pairs: those
// after \`after\` (or, when nothing after it is kept, from the oldest kept), above floor (offsets
// at or below it count as trimmed), younger than minAt, oldest first.
const READ = `
local rows = {}
local after, floor = tonumber(ARGV[1]), tonumber(ARGV[5])
local entries = {}
if after >= floor then
  entries = redis.call('XRANGE', KEYS[2], '(' .. ARGV[1] .. '-1', ARGV[2] .. '-1', 'COUNT', ARGV[3])
end
if #entries == 0 or tonumber(string.match(entries[1][1], '^(%d+)')) ~= after + 1 then
  local oldest = '-'
  -- From the arguments' text: Lua would write a number past 1e14 as 1.2e+14.
  if floor > 0 then oldest = '(' .. ARGV[5] .. '-1' end
  entries = redis.call('XRANGE', KEYS[2], oldest, ARGV[2] .. '-1', 'COUNT', ARGV[3])
end
local minAt = tonumber(ARGV[4])
for _, entry in ipairs(entries) do
  if tonumber(entry[2][4]) >= minAt then
    rows[#rows + 1] = {string.match(entry[1], '^(%d+)'), entry[2][2]}
  end
end
return rows
`;

// KEYS: meta, stream, tenant topics. ARGV: new epoch, meta ttl ms, topic, now.
const RESET = `
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'e', ARGV[1], 'o', 0)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
return 1
`;
