import type { Channel } from "../channel.ts";
import type { Plain, PlainDoc } from "./feed-document.ts";

/**
 * The current state of one feed's channels, answered in subscribe replies (`snapshot`).
 *
 * Guarantee: the watcher changes an entry in the same synchronous step as it publishes the change
 * (Publisher.publish assigns the offset and fans out before it returns), so a subscribe reply's
 * `offset` and `snapshot` always describe the same moment: the snapshot includes every
 * publication up to that offset and none after it.
 *
 * A channel may be fed by several documents (`strategy:{roulette_id}`); its snapshot is the most
 * recently changed one still present, or null when none is.
 */
/** Where a document is: the channel it feeds, and its `_id` (what a delete publishes). */
export interface Placement {
  channel: Channel;
  id: Plain;
}

/** Told of each change of a channel's snapshot (a cluster mirrors them: snapshot-mirror.ts). */
export interface SnapshotListener {
  changed(channel: Channel, snapshot: PlainDoc | null): void;
  /** A fresh load replaces everything: these are the channels fed before or now. */
  replacing(channels: readonly Channel[]): void;
  /** A document feeds another channel than before, or (null) none any more: told only when that changes. */
  placed(key: string, placement: Placement | null): void;
}

export class SnapshotCache {
  constructor(private readonly listener?: SnapshotListener) {}

  /** topic -> document key -> data, in order of last change (the last entry is the newest). */
  private readonly byTopic = new Map<string, Map<string, PlainDoc>>();
  /** document key -> the channel it currently feeds (for deletes, which carry only the _id). */
  private readonly channelOfDoc = new Map<string, Channel>();
  /** Every channel this feed has fed since the process started: the ones a lost position resets. */
  private readonly known = new Map<string, Channel>();

  /** The snapshot of a topic: undefined when this feed never fed it, null when it holds nothing now. */
  get(topic: string): PlainDoc | null | undefined {
    const docs = this.byTopic.get(topic);
    if (docs === undefined) return this.known.has(topic) ? null : undefined;
    let newest: PlainDoc | null = null;
    for (const data of docs.values()) newest = data;
    return newest;
  }

  channelOf(key: string): Channel | undefined {
    return this.channelOfDoc.get(key);
  }

  /** Records a document's new state; it leaves any channel it fed before. */
  set(key: string, channel: Channel, data: PlainDoc): void {
    const before = this.drop(key);
    let docs = this.byTopic.get(channel.topic);
    if (docs === undefined) {
      docs = new Map();
      this.byTopic.set(channel.topic, docs);
    }
    docs.set(key, data);
    this.channelOfDoc.set(key, channel);
    this.known.set(channel.topic, channel);
    this.listener?.changed(channel, this.get(channel.topic) ?? null);
    if (before?.topic !== channel.topic) this.listener?.placed(key, { channel, id: data._id ?? null });
  }

  /** Forgets a document; returns the channel it fed, if any. */
  remove(key: string): Channel | undefined {
    const channel = this.drop(key);
    if (channel !== undefined) this.listener?.placed(key, null);
    return channel;
  }

  /** Takes a document out of its channel (told as a snapshot change, not as a placement); the channel it fed. */
  private drop(key: string): Channel | undefined {
    const channel = this.channelOfDoc.get(key);
    if (channel === undefined) return undefined;
    this.channelOfDoc.delete(key);
    const docs = this.byTopic.get(channel.topic);
    docs?.delete(key);
    if (docs?.size === 0) this.byTopic.delete(channel.topic);
    this.listener?.changed(channel, this.get(channel.topic) ?? null);
    return channel;
  }

  /** Marks a channel as fed by this feed (a delete of a document it never held). */
  touch(channel: Channel): void {
    this.known.set(channel.topic, channel);
  }

  /**
   * Replaces the whole state with a fresh snapshot and returns every channel this feed has fed or
   * now feeds: their history is no longer continuous, so the caller gives them a new epoch.
   */
  replace(entries: Iterable<{ key: string; channel: Channel; data: PlainDoc }>): Channel[] {
    const list = [...entries];
    this.listener?.replacing([...this.known.values(), ...list.map((e) => e.channel)]);
    this.byTopic.clear();
    this.channelOfDoc.clear();
    for (const { key, channel, data } of list) this.set(key, channel, data);
    // Channels fed before and by nothing now hold null.
    for (const channel of this.known.values()) if (!this.byTopic.has(channel.topic)) this.listener?.changed(channel, null);
    return [...this.known.values()];
  }

  get size(): number {
    return this.channelOfDoc.size;
  }
}
