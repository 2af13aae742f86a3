import { Connection, type SinalClientOptions } from "./connection.ts";
import { RestClient, restBaseOf } from "./rest.ts";
import { Subscription, type SubscriptionHost } from "./subscription.ts";
import type { ChatMessage, Lock, MessagePage, PresenceStatus, Publication, Reply } from "./types.ts";

export type { SinalClientOptions, ConnectionState, CloseInfo, ClientEvents } from "./connection.ts";

/** The reply to `publish`: where the publication landed. */
export interface PublishResult extends Reply {
  offset: number;
  epoch: string;
}

/** The reply to `lock`: the lock, and whether it was already this user's (a renewal). */
export interface LockResult extends Reply {
  lock: Lock;
  renewed: boolean;
}

/**
 * A sinal connection that stays up: it reconnects with backoff, keeps its token fresh,
 * resubscribes with `since` and tells each subscription whether it `recovered` or has a `gap`.
 *
 * @example
 * import { SinalClient } from "@sinal/client";
 *
 * const client = new SinalClient({
 *   url: "wss://rt.example.com/ws",
 *   getToken: () => fetch("/api/sinal-token").then((r) => r.text()),
 * });
 * const room = client.subscribe("room:42");
 * room.on("publication", (pub) => console.log(pub.event, pub.data));
 * await client.connect();
 * await client.sendMessage("42", "hello");
 */
export class SinalClient extends Connection {
  private readonly subs = new Map<string, Subscription>();
  private readonly host: SubscriptionHost;
  private readonly rest: RestClient;

  /**
   * Makes a client; nothing is opened before `connect()`.
   *
   * @example
   * const client = new SinalClient({ url: "ws://localhost:3000/ws", token: jwt, backoff: { minMs: 250, maxMs: 10_000 } });
   */
  constructor(options: SinalClientOptions) {
    super(options);
    const client = this;
    this.host = {
      get connectionId() {
        return client.connectionId;
      },
      retryDelayMs: this.opts.retryDelayMs,
      sendNow: (frame, callback) => this.sendNow(frame, this.opts.requestTimeoutMs, callback),
      remove: (sub, tellServer) => this.removeSubscription(sub, tellServer),
      delivered: (pub) => this.emit("publication", pub),
    };
    const httpUrl = options.httpUrl ?? restBaseOf(options.url);
    if (!/^https?:\/\//.test(httpUrl)) throw new TypeError(`httpUrl must be an http:// or https:// URL, got ${httpUrl}`);
    const tokens = { token: (refused?: string) => this.tokenForHttp(refused), canRenew: this.canRenewToken };
    this.rest = new RestClient(httpUrl.replace(/\/$/, ""), tokens, this.opts.requestTimeoutMs);
  }

  /**
   * Subscribes to a channel (or returns the existing subscription). Works before `connect()`:
   * subscriptions are sent at every `welcome`.
   *
   * @example
   * const sub = client.subscribe("room:42");
   * sub.on("publication", (pub) => console.log(pub.offset, pub.event, pub.data));
   * sub.on("recovered", ({ replayed }) => console.log("caught up,", replayed, "missed"));
   * sub.on("gap", () => reloadRoom());
   */
  subscribe(channel: string): Subscription {
    const existing = this.subs.get(channel);
    if (existing !== undefined) return existing;
    const sub = new Subscription(channel, this.host);
    this.subs.set(channel, sub);
    if (this.state === "connected") sub.send();
    return sub;
  }

  /**
   * The subscription to `channel`, if there is one.
   *
   * @example
   * client.getSubscription("room:42")?.unsubscribe();
   */
  getSubscription(channel: string): Subscription | undefined {
    return this.subs.get(channel);
  }

  /**
   * Publishes on a channel the token's `pub_channels` allow; resolves with its `{offset, epoch}`.
   *
   * @example
   * const { offset } = await client.publish("dept:sales", "deal_closed", { id: 9 });
   */
  publish(channel: string, event: string, data: unknown): Promise<PublishResult> {
    return this.request<PublishResult>("publish", { channel, event, data });
  }

  /**
   * Sends a chat message to `room` (the id, without `room:`); resolves with the stored message.
   * A `clientMsgId` is made when none is given: sending again with the same one after a
   * `disconnected` error cannot make a copy.
   *
   * @example
   * const message = await client.sendMessage("42", "hello", crypto.randomUUID());
   */
  async sendMessage(room: string, content: string, clientMsgId: string = newClientMsgId()): Promise<ChatMessage> {
    const reply = await this.request("message", { room, content, client_msg_id: clientMsgId });
    return reply.message as ChatMessage;
  }

  /**
   * Says the user is (or stopped) typing in `room`.
   *
   * @example
   * input.addEventListener("input", () => client.typing("42", true).catch(() => {}));
   */
  async typing(room: string, typing = true): Promise<void> {
    await this.request("typing", { room, typing });
  }

  /**
   * Marks messages of `room` read up to `messageId`; resolves with the furthest id read.
   *
   * @example
   * await client.read("42", message.id);
   */
  async read(room: string, messageId: number): Promise<number> {
    const reply = await this.request("read", { room, message_id: messageId });
    return reply.message_id as number;
  }

  /**
   * A page of `room`'s messages (the id, without `room:`), newest first, read over HTTP with the
   * client's token, whose grants must cover `room:<id>` (else code `forbidden`). Pass a page's
   * `next_before` as `before` for the older ones (`limit` 1 to 200, default 50). Needs no open
   * socket: a late joiner shows the conversation so far.
   *
   * @example
   * const { messages, next_before } = await client.roomMessages("42", { limit: 30 });
   * for (const m of messages.reverse()) render(m);
   * if (next_before !== null) olderButton.onclick = () => client.roomMessages("42", { before: next_before });
   */
  roomMessages(room: string, options: { before?: number; limit?: number } = {}): Promise<MessagePage> {
    return this.rest.get<MessagePage>(`/v1/rooms/${encodeURIComponent(room)}/messages`, { before: options.before, limit: options.limit });
  }

  /**
   * How many messages of `room` the user has not read yet: others' messages after the user's
   * receipt (see `read`). Read over HTTP with the client's token.
   *
   * @example
   * badge.textContent = String(await client.unread("42"));
   */
  async unread(room: string): Promise<number> {
    const answer = await this.rest.get<{ unread: number }>(`/v1/rooms/${encodeURIComponent(room)}/unread`);
    return answer.unread;
  }

  /**
   * Sets the user's presence status.
   *
   * @example
   * await client.setPresence("busy");
   */
  async setPresence(status: PresenceStatus): Promise<void> {
    await this.request("presence", { status });
  }

  /**
   * Takes (or renews) the edit lock on `resource`. A lock held by someone else rejects with
   * code `locked` and `details.lock` naming the holder.
   *
   * @example
   * const { lock } = await client.lock("customer:77");
   */
  lock(resource: string): Promise<LockResult> {
    return this.request<LockResult>("lock", { resource });
  }

  /**
   * Releases the edit lock on `resource`; resolves with whether a lock was released.
   *
   * @example
   * await client.unlock("customer:77");
   */
  async unlock(resource: string): Promise<boolean> {
    const reply = await this.request("unlock", { resource });
    return reply.released === true;
  }

  protected override resume(): void {
    for (const sub of this.subs.values()) sub.send();
  }

  protected override suspend(): void {
    for (const sub of this.subs.values()) sub.connectionLost();
  }

  protected override onPublication(pub: Publication): void {
    const sub = this.subs.get(pub.channel);
    if (sub !== undefined) sub.publication(pub);
    else this.emit("publication", pub);
  }

  private removeSubscription(sub: Subscription, tellServer: boolean): Promise<void> {
    if (this.subs.get(sub.channel) === sub) this.subs.delete(sub.channel);
    if (!tellServer) return Promise.resolve();
    return new Promise((resolve) => {
      if (!this.sendNow({ type: "unsubscribe", channel: sub.channel }, this.opts.requestTimeoutMs, () => resolve())) resolve();
    });
  }
}

/** A unique `client_msg_id`; randomUUID needs a secure context in browsers, hence the fallback. */
function newClientMsgId(): string {
  const crypto = (globalThis as { crypto?: { randomUUID?: () => string } }).crypto;
  if (typeof crypto?.randomUUID === "function") return crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 12)}`;
}
