import { randomUUID } from "node:crypto";
import { MongoClient, MongoParseError, type MongoClientOptions } from "mongodb";
import type { Registry } from "prom-client";
import type { Channel } from "../channel.ts";
import type { Leases } from "../cluster/lease.ts";
import { MemoryLeases } from "../cluster/memory-leases.ts";
import { ConfigError } from "../config.ts";
import type { Logger } from "../log.ts";
import type { Publisher } from "../publisher.ts";
import type { FeedStore } from "../store/feed-store.ts";
import type { ChannelTemplate, FeedConfig, MongoConfig } from "./feed-config.ts";
import { FeedLeader } from "./feed-leader.ts";
import { FeedMetrics } from "./feed-metrics.ts";
import { FeedWatcher } from "./feed-watcher.ts";
import { SnapshotCache } from "./snapshot-cache.ts";
import type { SnapshotMirror } from "./snapshot-mirror.ts";

export interface FeedServiceDeps {
  publisher: Publisher;
  positions: FeedStore;
  registry: Registry;
  logger: Logger;
  /** Who watches each feed in a cluster (one node per feed). Default: MemoryLeases, this node always. */
  leases?: Leases;
  /** Where the leader's snapshots are mirrored for the other nodes (a cluster); none on one node. */
  mirror?: SnapshotMirror;
  /** This node's id, the holder of the leases it takes (unique in the cluster). Default: a random UUID. */
  nodeId?: string;
  /** TTL of a feed's lease in ms: at most how long a feed goes unwatched after its leader died. Default 10 s. */
  leaseTtlMs?: number;
}

interface Feed {
  config: FeedConfig;
  cache: SnapshotCache;
  leader: FeedLeader;
  /** Matches the channel names this feed's template can render. */
  matches: RegExp;
}

const DEFAULT_LEASE_TTL_MS = 10_000;

/** Without one in the URI: how long an operation waits for MongoDB before the feed counts as down. */
const DEFAULT_SERVER_SELECTION_TIMEOUT_MS = 5_000;

/**
 * The MongoDB feeds of this node: one client, and per configured feed one snapshot cache and one
 * FeedLeader, which runs the feed's watcher while this node holds the feed's lease (always, on
 * one node). `start` never blocks and never throws (MongoDB or Redis may be down: leaders and
 * watchers retry on their own); `subscribeExtra` adds `snapshot` to subscribe replies on feed
 * channels; `notReady` names the feeds /ready reports; `leading` those this node publishes.
 */
export class FeedService {
  private readonly client: MongoClient;
  private readonly feeds: Feed[];
  private readonly mirror: SnapshotMirror | undefined;

  constructor(config: MongoConfig, deps: FeedServiceDeps) {
    this.client = createClient(config.uri);
    this.mirror = deps.mirror;
    const metrics = new FeedMetrics(deps.registry);
    const leases = deps.leases ?? new MemoryLeases();
    const holder = deps.nodeId ?? randomUUID();
    const ttlMs = deps.leaseTtlMs ?? DEFAULT_LEASE_TTL_MS;
    const mirror = deps.mirror;
    this.feeds = config.feeds.map((feed) => {
      // On a cluster the leader's cache is mirrored to Redis for the other nodes' subscribes.
      const cache = new SnapshotCache(
        mirror === undefined
          ? undefined
          : {
              changed: (channel, snapshot) => mirror.write(feed.name, channel, snapshot),
              replacing: (channels) => mirror.clear(feed.name, channels),
              placed: (key, placement) => mirror.place(feed.name, key, placement),
            },
      );
      const logger = deps.logger.child({ feed: feed.name });
      // A watcher per term of leadership: each starts from the token saved in the shared store.
      const newWatcher = (fence: number) =>
        new FeedWatcher({
          feed,
          client: this.client,
          publisher: deps.publisher,
          positions: deps.positions,
          fence,
          cache,
          placements: mirror === undefined ? undefined : () => mirror.placements(feed.name),
          metrics,
          logger,
          retryMaxMs: config.retryMaxMs,
        });
      const leader = new FeedLeader({ feed: feed.name, leases, holder, ttlMs, newWatcher, metrics, logger });
      return { config: feed, cache, leader, matches: templateRegExp(feed.channel) };
    });
  }

  start(): void {
    for (const feed of this.feeds) feed.leader.start();
  }

  /** Stops every watcher (each saves its position), releases the leases and closes the client. */
  async stop(): Promise<void> {
    const stopped = Promise.all(this.feeds.map((feed) => feed.leader.stop()));
    // Closing the client at once aborts a connect or a getMore in flight, so a MongoDB that is
    // down or slow cannot hold up the shutdown for its server selection timeout.
    await this.client.close().catch(() => undefined);
    await stopped;
  }

  /**
   * Names of the feeds this node should be publishing and is not: led here with a stream not open
   * with a loaded snapshot, or not known yet whether led here (the first lease attempt has not
   * answered). A feed another node leads is that node's to report.
   */
  notReady(): string[] {
    return this.feeds.filter((feed) => isNotReady(feed.leader)).map((feed) => feed.config.name);
  }

  /** Names of the feeds this node leads (holds the lease of and publishes). */
  leading(): string[] {
    return this.feeds.filter((feed) => feed.leader.leadership === "leading").map((feed) => feed.config.name);
  }

  /**
   * `snapshot` in the reply to a subscribe on a feed channel: the channel's current document (or
   * null when no document feeds it now), as of the offset in the same reply. A node that does not
   * lead the feed answers from the leader's mirror (see SnapshotMirror for what it may include);
   * without a mirror, not at all.
   */
  subscribeExtra(): (peer: unknown, channel: Channel) => { snapshot: unknown } | null | Promise<{ snapshot: unknown } | null> {
    return (_peer, channel) => {
      let found = false;
      const elsewhere: Feed[] = [];
      for (const feed of this.feeds) {
        if (!feedsChannel(feed, channel)) continue;
        // Another node leads it: its snapshot is in the mirror (on a cluster), or unknown here.
        if (feed.leader.leadership !== "leading") {
          elsewhere.push(feed);
          continue;
        }
        const snapshot = feed.cache.get(channel.topic);
        if (snapshot !== undefined) return { snapshot };
        found = true;
      }
      const mirror = this.mirror;
      if (elsewhere.length === 0 || mirror === undefined) return found ? { snapshot: null } : null;
      return (async () => {
        for (const feed of elsewhere) {
          const snapshot = await mirror.read(feed.config.name, channel);
          if (snapshot !== undefined) return { snapshot };
        }
        return { snapshot: null };
      })();
    };
  }
}

function isNotReady(leader: FeedLeader): boolean {
  if (leader.leadership === "unknown") return true;
  return leader.leadership === "leading" && leader.watcher?.state !== "up";
}

function feedsChannel(feed: Feed, channel: Channel): boolean {
  const tenant = feed.config.tenant;
  if (tenant.kind === "fixed" && tenant.tenant !== channel.tenant) return false;
  return feed.matches.test(channel.name);
}

function templateRegExp(template: ChannelTemplate): RegExp {
  const body = template.parts.map((p) => ("literal" in p ? p.literal.replace(/[.*+?^${}()|[\]\\]/g, "\\$&") : "[A-Za-z0-9_.@-]+")).join("");
  return new RegExp(`^${body}$`);
}

function createClient(uri: string): MongoClient {
  const options: MongoClientOptions = { appName: "sinal" };
  if (!/[?&]serverSelectionTimeoutMS=/i.test(uri)) options.serverSelectionTimeoutMS = DEFAULT_SERVER_SELECTION_TIMEOUT_MS;
  try {
    // Parses the URI and its options at once; nothing connects before the first operation.
    return new MongoClient(uri, options);
  } catch (err) {
    if (err instanceof MongoParseError) throw new ConfigError("MONGODB_URI", err.message);
    throw err;
  }
}
