import type { Channel } from "../channel.ts";
import type { Namespace, Namespaces } from "../namespaces.ts";
import type { CommittedEntry } from "../store/channel-log-store.ts";
import type { NewMessage, StoredMessage } from "../store/chat-store.ts";
import type { Deliver, FrameBuilder, HistoryStore, IdempotencyKey, Kept, MaybePromise, Position, Recovery, Retention } from "./history.ts";

/** A history that can also store the chat message a room publication announces (durable-history.ts). */
export interface MessageHistoryStore extends HistoryStore {
  appendMessage(topic: string, message: NewMessage, build: (position: Position, stored: StoredMessage) => string, deliver: Deliver): Promise<CommittedEntry>;
}

/**
 * The history of every channel, by namespace: durable ones (rooms) in the store, the rest in
 * memory, each with its namespace's retention. The Publisher and the subscribe path go through
 * this one object.
 */
export class ChannelHistory {
  constructor(
    private readonly memory: HistoryStore,
    private readonly durable: MessageHistoryStore,
    private readonly namespaces: Namespaces,
  ) {}

  private namespaceOf(channel: Channel): Namespace {
    const ns = this.namespaces.get(channel.kind);
    // A Channel is only made by parseChannel, against these namespaces or the built-ins they extend.
    if (ns === undefined) throw new Error(`no namespace "${channel.kind}"`);
    return ns;
  }

  private storeFor(channel: Channel): HistoryStore {
    return this.namespaceOf(channel).durable ? this.durable : this.memory;
  }

  /** True for channels whose history is in the store (and takes idempotency keys in the same commit). */
  isDurable(channel: Channel): boolean {
    return this.namespaceOf(channel).durable;
  }

  append(channel: Channel, build: FrameBuilder, deliver: Deliver, key?: IdempotencyKey): MaybePromise<{ position: Position; frame: string }> {
    return this.storeFor(channel).append(channel.topic, build, this.namespaceOf(channel).history, deliver, key);
  }

  /** A chat message and its `new_message` publication on a room, stored in one commit. */
  appendMessage(channel: Channel, message: NewMessage, build: (position: Position, stored: StoredMessage) => string, deliver: Deliver): Promise<CommittedEntry> {
    if (!this.isDurable(channel)) throw new Error(`${channel.kind} channels keep no messages`);
    return this.durable.appendMessage(channel.topic, message, build, deliver);
  }

  position(channel: Channel): MaybePromise<Position> {
    return this.storeFor(channel).position(channel.topic);
  }

  recover(channel: Channel, since: Position, maxBytes: number): MaybePromise<Recovery> {
    return this.storeFor(channel).recover(channel.topic, since, this.namespaceOf(channel).history, maxBytes);
  }

  /** The next page of a recovery (see HistoryStore.page). */
  page(channel: Channel, epoch: string, after: number, upTo: number, maxBytes: number): MaybePromise<Kept[] | null> {
    return this.storeFor(channel).page(channel.topic, epoch, after, upTo, this.namespaceOf(channel).history, maxBytes);
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
