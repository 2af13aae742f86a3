import { BSON, type Document, type ResumeToken } from "mongodb";
import type { Logger } from "../log.ts";
import type { FeedStore } from "../store/feed-store.ts";

/**
 * A feed's saved place in its change stream: the resume token after the last published change,
 * kept in the store as canonical Extended JSON. The watcher hands a token over only after the
 * changes before it were published (FeedStore's guarantee). Store failures are logged, never
 * thrown: the feed keeps streaming, and a restart then repeats what was not saved.
 */
export class FeedPosition {
  private saved: string | null = null;

  constructor(
    private readonly positions: FeedStore,
    private readonly feed: string,
    /** The watched `db.collection`: a position saved for another one is not resumed. */
    private readonly source: string,
    private readonly logger: Logger,
  ) {}

  /** The saved token, or null (none saved, saved for another collection, unreadable). */
  async load(): Promise<ResumeToken | null> {
    try {
      const row = await this.positions.get(this.feed);
      if (row === null) return null;
      if (row.source !== this.source) {
        this.logger.warn({ saved: row.source, source: this.source }, "ignoring a feed position saved for another collection");
        return null;
      }
      this.saved = row.token;
      return BSON.EJSON.parse(row.token, { relaxed: false }) as ResumeToken;
    } catch (err) {
      this.logger.error({ err }, "could not read the feed position; starting from now");
      return null;
    }
  }

  /** Saves the token unless it is the one saved last. */
  async save(token: ResumeToken): Promise<void> {
    const text = BSON.EJSON.stringify(token as Document, { relaxed: false });
    if (text === this.saved) return;
    try {
      await this.positions.save({ feed: this.feed, source: this.source, token: text, updatedAt: Date.now() });
      this.saved = text;
    } catch (err) {
      this.logger.error({ err }, "could not save the feed position");
    }
  }

  /** Forgets the position (it was lost): the next start begins from now. */
  clear(): void {
    this.saved = null;
    this.positions.clear(this.feed).catch((err: unknown) => this.logger.error({ err }, "could not clear the feed position"));
  }
}
