import { BSON, type Document, type ResumeToken } from "mongodb";
import type { Logger } from "../log.ts";
import type { FeedStore } from "../store/feed-store.ts";

/**
 * A feed's saved place in its change stream: the resume token after the last published change,
 * kept in the store as canonical Extended JSON. The watcher hands a token over only after the
 * changes before it were published (FeedStore's guarantee). Every write carries `fence`, the
 * fencing token of the lease term this watcher runs in: once the store refuses one (a newer
 * leader wrote with a higher fence), this position writes nothing more, since every later write
 * would be refused too; the leader's next renewal ends the term. Store failures are logged, never
 * thrown: the feed keeps streaming, and a restart then repeats what was not saved.
 */
export class FeedPosition {
  private saved: string | null = null;
  /** The store refused a write: a newer leader's fence is stored. */
  private fenced = false;

  constructor(
    private readonly positions: FeedStore,
    private readonly feed: string,
    /** The watched `db.collection`: a position saved for another one is not resumed. */
    private readonly source: string,
    /** Fencing token of the lease term this position is written under. */
    private readonly fence: number,
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

  /** Saves the token unless it is the one saved last (or a newer leader's fence is stored). */
  async save(token: ResumeToken): Promise<void> {
    const text = BSON.EJSON.stringify(token as Document, { relaxed: false });
    if (text === this.saved || this.fenced) return;
    try {
      const saved = await this.positions.save({ feed: this.feed, source: this.source, token: text, updatedAt: Date.now(), fence: this.fence });
      if (saved) this.saved = text;
      else this.refused("save");
    } catch (err) {
      this.logger.error({ err }, "could not save the feed position");
    }
  }

  /** Forgets the position (it was lost): the next start begins from now. */
  clear(): void {
    this.saved = null;
    if (this.fenced) return;
    this.positions.clear(this.feed, this.fence).then(
      (cleared) => {
        if (!cleared) this.refused("clear");
      },
      (err: unknown) => this.logger.error({ err }, "could not clear the feed position"),
    );
  }

  private refused(write: "save" | "clear"): void {
    if (this.fenced) return;
    this.fenced = true;
    this.logger.warn({ code: "feed_position_fenced", fence: this.fence, write }, "a newer leader of the feed wrote its position: this node's writes are refused from now on");
  }
}
