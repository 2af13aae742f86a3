import { MongoClient, MongoParseError, type MongoClientOptions } from "mongodb";
import type { Registry } from "prom-client";
import type { Channel } from "../channel.ts";
import { ConfigError } from "../config.ts";
import type { Logger } from "../log.ts";
import type { Publisher } from "../publisher.ts";
import type { FeedStore } from "../store/feed-store.ts";
import type { ChannelTemplate, FeedConfig, MongoConfig } from "./feed-config.ts";
import { FeedMetrics } from "./feed-metrics.ts";
import { FeedWatcher } from "./feed-watcher.ts";
import { SnapshotCache } from "./snapshot-cache.ts";

export interface FeedServiceDeps {
  publisher: Publisher;
  positions: FeedStore;
  registry: Registry;
  logger: Logger;
}

interface Feed {
  config: FeedConfig;
  cache: SnapshotCache;
  watcher: FeedWatcher;
  /** Matches the channel names this feed's template can render. */
  matches: RegExp;
}

/** Without one in the URI: how long an operation waits for MongoDB before the feed counts as down. */
const DEFAULT_SERVER_SELECTION_TIMEOUT_MS = 5_000;

/**
 * The MongoDB feeds of this node: one client, one watcher and one snapshot cache per configured
 * feed. `start` never blocks and never throws (MongoDB may be down: watchers retry on their own);
 * `subscribeExtra` adds `snapshot` to subscribe replies on feed channels; `notReady` names the
 * feeds /ready reports.
 */
export class FeedService {
  private readonly client: MongoClient;
  private readonly feeds: Feed[];

  constructor(config: MongoConfig, deps: FeedServiceDeps) {
    this.client = createClient(config.uri);
    const metrics = new FeedMetrics(deps.registry);
    this.feeds = config.feeds.map((feed) => {
      const cache = new SnapshotCache();
      const watcher = new FeedWatcher({
        feed,
        client: this.client,
        publisher: deps.publisher,
        positions: deps.positions,
        cache,
        metrics,
        logger: deps.logger.child({ feed: feed.name }),
        retryMaxMs: config.retryMaxMs,
      });
      return { config: feed, cache, watcher, matches: templateRegExp(feed.channel) };
    });
  }

  start(): void {
    for (const feed of this.feeds) feed.watcher.start();
  }

  /** Stops every watcher (each saves its position) and closes the client. */
  async stop(): Promise<void> {
    const stopped = Promise.all(this.feeds.map((feed) => feed.watcher.stop()));
    // Closing the client at once aborts a connect or a getMore in flight, so a MongoDB that is
    // down or slow cannot hold up the shutdown for its server selection timeout.
    await this.client.close().catch(() => undefined);
    await stopped;
  }

  /** Names of the feeds whose stream is not open with a loaded snapshot. */
  notReady(): string[] {
    return this.feeds.filter((feed) => feed.watcher.state !== "up").map((feed) => feed.config.name);
  }

  /**
   * `snapshot` in the reply to a subscribe on a feed channel: the channel's current document (or
   * null when no document feeds it now), as of the offset in the same reply.
   */
  subscribeExtra(): (peer: unknown, channel: Channel) => { snapshot: unknown } | null {
    return (_peer, channel) => {
      let found = false;
      for (const feed of this.feeds) {
        if (!feedsChannel(feed, channel)) continue;
        const snapshot = feed.cache.get(channel.topic);
        if (snapshot !== undefined) return { snapshot };
        found = true;
      }
      return found ? { snapshot: null } : null;
    };
  }
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
