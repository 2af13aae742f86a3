import type { Channel } from "../channel.ts";
import type { Logger } from "../log.ts";
import type { RedisKeys } from "../redis/keys.ts";
import type { Redis } from "../redis/redis-client.ts";
import type { PlainDoc } from "./feed-document.ts";
import type { Placement } from "./snapshot-cache.ts";

/**
 * A feed's snapshots where every node of a cluster can read them: the node leading the feed
 * writes each channel's snapshot as its cache changes, and the others answer subscribes from it.
 *
 * Order: the leader writes a channel's snapshot before it publishes the change that made it, on
 * the connection its publications' scripts go through, so Redis never holds a snapshot older than
 * a publication it has stored. A node that reads one after telling a subscriber its position may
 * hand out a snapshot that already includes the next publications; they follow as usual, and
 * since each carries the whole document the client ends where the snapshot stands.
 */
export interface SnapshotMirror {
  /** The channel's snapshot now (null: no document feeds it). */
  write(feed: string, channel: Channel, snapshot: PlainDoc | null): void;
  /** A fresh load is about to be written: forget what was mirrored for these channels' tenants, and every placement. */
  clear(feed: string, channels: readonly Channel[]): void;
  /** Where a document of the feed is now (null: nowhere), for the next leader (FeedWatcher's handover). */
  place(feed: string, key: string, placement: Placement | null): void;
  /** Every document's placement, as the leader left them: document key -> placement. */
  placements(feed: string): Promise<Map<string, Placement>>;
  /** The channel's mirrored snapshot; undefined when the feed never fed it. */
  read(feed: string, channel: Channel): Promise<PlainDoc | null | undefined>;
}

/**
 * Per tenant and feed a hash: topic -> the snapshot as JSON ("null" when nothing feeds it now);
 * per feed a hash: document key -> its placement as JSON (one field per document of the collection
 * that feeds a channel).
 */
export class RedisSnapshotMirror implements SnapshotMirror {
  constructor(
    private readonly redis: Redis,
    private readonly keys: RedisKeys,
    private readonly logger?: Logger,
  ) {}

  write(feed: string, channel: Channel, snapshot: PlainDoc | null): void {
    this.redis.hset(this.key(feed, channel.tenant), channel.topic, JSON.stringify(snapshot)).catch((err: unknown) => this.failed(err, feed));
  }

  clear(feed: string, channels: readonly Channel[]): void {
    const keys = [...new Set(channels.map((c) => this.key(feed, c.tenant))), this.placementKey(feed)];
    this.redis.del(...keys).catch((err: unknown) => this.failed(err, feed));
  }

  place(feed: string, key: string, placement: Placement | null): void {
    const done = placement === null ? this.redis.hdel(this.placementKey(feed), key) : this.redis.hset(this.placementKey(feed), key, JSON.stringify(placement));
    done.catch((err: unknown) => this.failed(err, feed));
  }

  async placements(feed: string): Promise<Map<string, Placement>> {
    const all = await this.redis.hgetall(this.placementKey(feed));
    return new Map(Object.entries(all).map(([key, json]) => [key, JSON.parse(json) as Placement]));
  }

  async read(feed: string, channel: Channel): Promise<PlainDoc | null | undefined> {
    const json = await this.redis.hget(this.key(feed, channel.tenant), channel.topic);
    return json === null ? undefined : (JSON.parse(json) as PlainDoc | null);
  }

  private key(feed: string, tenant: string): string {
    return this.keys.tenant(tenant, "feedsnap", feed);
  }

  private placementKey(feed: string): string {
    return this.keys.cluster("feeddocs", feed);
  }

  private failed(err: unknown, feed: string): void {
    // The next change of the channel writes it again; a subscribe elsewhere meanwhile gets an older snapshot.
    this.logger?.warn({ err, code: "feed_snapshot_mirror_failed", feed }, "a feed snapshot could not be written to Redis");
  }
}
