import type { Channel, ChannelKind } from "../channel.ts";
import type { CommittedEntry } from "../store/channel-log-store.ts";
import type { NewMessage, StoredMessage } from "../store/chat-store.ts";
import type { Deliver, FrameBuilder, HistoryStore, IdempotencyKey, Kept, MaybePromise, Position, Recovery, Retention } from "./history.ts";

/** Which history each kind of channel keeps, and whether it must survive a restart. */
export type HistoryPolicy = Record<ChannelKind, Retention>;

/** A history that can also store the chat message a room publication announces (durable-history.ts). */
export interface MessageHistoryStore extends HistoryStore {
  appendMessage(topic: string, message: NewMessage, build: (position: Position, stored: StoredMessage) => string, deliver: Deliver): Promise<CommittedEntry>;
}

/** Kinds whose history lives in the store: chat rooms keep epoch and offsets across restarts. */
const DURABLE_KINDS: ReadonlySet<ChannelKind> = new Set(["room"]);

/**
 * The history of every channel, by kind: rooms in the durable history, the rest in memory, each
 * with its kind's retention. The Publisher and the subscribe path go through this one object.
 */
export class ChannelHistory {
  constructor(
    private readonly memory: HistoryStore,
    private readonly durable: MessageHistoryStore,
    readonly policy: HistoryPolicy,
  ) {}

  private storeFor(channel: Channel): HistoryStore {
    return DURABLE_KINDS.has(channel.kind) ? this.durable : this.memory;
  }

  /** True for channels whose history is in the store (and takes idempotency keys in the same commit). */
  isDurable(channel: Channel): boolean {
    return DURABLE_KINDS.has(channel.kind);
  }

  append(channel: Channel, build: FrameBuilder, deliver: Deliver, key?: IdempotencyKey): MaybePromise<{ position: Position; frame: string }> {
    return this.storeFor(channel).append(channel.topic, build, this.policy[channel.kind], deliver, key);
  }

  /** A chat message and its `new_message` publication on a room, stored in one commit. */
  appendMessage(channel: Channel, message: NewMessage, build: (position: Position, stored: StoredMessage) => string, deliver: Deliver): Promise<CommittedEntry> {
    if (!DURABLE_KINDS.has(channel.kind)) throw new Error(`${channel.kind} channels keep no messages`);
    return this.durable.appendMessage(channel.topic, message, build, deliver);
  }

  position(channel: Channel): MaybePromise<Position> {
    return this.storeFor(channel).position(channel.topic);
  }

  recover(channel: Channel, since: Position, maxBytes: number): MaybePromise<Recovery> {
    return this.storeFor(channel).recover(channel.topic, since, this.policy[channel.kind], maxBytes);
  }

  /** The next page of a recovery (see HistoryStore.page). */
  page(channel: Channel, epoch: string, after: number, upTo: number, maxBytes: number): MaybePromise<Kept[] | null> {
    return this.storeFor(channel).page(channel.topic, epoch, after, upTo, this.policy[channel.kind], maxBytes);
  }

  reset(channel: Channel): MaybePromise<Position> {
    return this.storeFor(channel).reset(channel.topic);
  }

  trim(now: number): void {
    this.memory.trim(now);
    this.durable.trim(now);
  }

  async close(): Promise<void> {
    await Promise.all([this.memory.close(), this.durable.close()]);
  }
}
