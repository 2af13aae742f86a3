import type { Position, Publication } from "./types.ts";

/** What a cursor made of one publication. */
export interface Offer {
  /** Publications to hand to the app now, in offset order (the offered one and held ones it unblocked). */
  deliver: Publication[];
  /** The offered publication repeats an offset already seen: dropped. */
  duplicate: boolean;
  /** Offsets are missing before it (and it is not `conflated`): held until they come. */
  jumped: boolean;
  /** It belongs to another epoch than the cursor's: the channel's history was reset. */
  epochChanged: boolean;
}

const NOTHING: Offer = { deliver: [], duplicate: false, jumped: false, epochChanged: false };

/**
 * The last `{epoch, offset}` seen on one channel, and the publications that came too early.
 * Delivers each offset once and in order: repeats are dropped, a publication after a hole is
 * held until the hole is filled (or the cursor is reset), and a `conflated` one closes the hole
 * on purpose. Publications without an offset are not the cursor's business.
 */
export class Cursor {
  private pos: Position | null = null;
  private readonly held = new Map<number, Publication>();

  get position(): Position | null {
    return this.pos === null ? null : { ...this.pos };
  }

  /** Moves to `position` (a subscribe reply's); returns held publications that now follow it. */
  reset(position: Position): Publication[] {
    if (this.pos !== null && this.pos.epoch !== position.epoch) this.held.clear();
    this.pos = { ...position };
    return this.drain();
  }

  /** Forgets held publications (the connection that carried them is gone). */
  clearHeld(): void {
    this.held.clear();
  }

  /** Whether publications wait for a hole to be filled. */
  get holding(): boolean {
    return this.held.size > 0;
  }

  offer(pub: Publication): Offer {
    if (pub.offset === undefined || pub.epoch === undefined) return { ...NOTHING, deliver: [pub] };
    if (this.pos === null) {
      // Before the first subscribe reply: it will say where the stream starts.
      this.held.set(pub.offset, pub);
      return NOTHING;
    }
    if (pub.epoch !== this.pos.epoch) return { ...NOTHING, epochChanged: true };
    if (pub.offset <= this.pos.offset || this.held.has(pub.offset)) return { ...NOTHING, duplicate: true };
    const isNext = pub.offset === this.pos.offset + 1;
    const skippedOnPurpose = typeof pub.conflated === "number" && pub.conflated > 0;
    if (!isNext && !skippedOnPurpose) {
      this.held.set(pub.offset, pub);
      return { ...NOTHING, jumped: true };
    }
    this.pos.offset = pub.offset;
    return { ...NOTHING, deliver: [pub, ...this.drain()] };
  }

  private drain(): Publication[] {
    const out: Publication[] = [];
    const pos = this.pos!;
    for (const offset of [...this.held.keys()]) if (offset <= pos.offset) this.held.delete(offset);
    for (let next = this.held.get(pos.offset + 1); next !== undefined; next = this.held.get(pos.offset + 1)) {
      this.held.delete(pos.offset + 1);
      pos.offset++;
      out.push(next);
    }
    return out;
  }
}
