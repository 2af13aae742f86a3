import { TokenError, type ChannelClaims, type Claims, type TokenVerifier } from "../auth/tokens.ts";
import { mayPublish, maySubscribe, parseChannel, type Channel } from "../channel.ts";
import type { ChannelAccess } from "../channel-access.ts";
import { SinalError } from "../errors.ts";
import type { LocalHub } from "../hub/local-hub.ts";
import type { Metrics } from "../metrics.ts";
import type { Position, Recovery } from "../history/history.ts";
import type { Publisher } from "../publisher.ts";
import type { Peer } from "../peer.ts";
import type { Connection } from "./connection.ts";
import type { AnyFrame, Frame, FrameType } from "./frames.ts";
import type { Listeners } from "./hooks.ts";
import type { Namespace, Namespaces } from "../namespaces.ts";
import { isCovered, type Replay } from "./slow-lane.ts";

/**
 * Events only the server publishes (chat, presence, notifications, locks, sync, conversations).
 * Apps trust them as the server's word, so a client's `publish` may not use their names.
 */
const SERVER_EVENTS: ReadonlySet<string> = new Set([
  "new_message",
  "message_read",
  "typing",
  "presence",
  "user_joined",
  "user_left",
  "notification",
  "lock",
  "unlock",
  "data_sync",
  "new_conversation",
  "conversation_updated",
]);

/** Result fields of a successful reply (flat beside type, id and ok: docs/protocol.md "Requests, replies and errors"). */
export type ReplyFields = Record<string, unknown>;

/** Returned by a handler that wrote its reply itself (subscribe: the reply, then replayed frames). */
export const REPLIED = Symbol("replied");
export type HandlerResult = ReplyFields | typeof REPLIED;
export type { ChannelAccess };

/** Handles one frame type; throws SinalError for the client to see. */
export type FrameHandler<T extends FrameType> = (conn: Connection, frame: Extract<AnyFrame, { type: T }>) => HandlerResult | Promise<HandlerResult>;
/** Handlers that features (chat, presence, locks) add for their frame types. */
export type FeatureHandlers = { [T in FrameType]?: FrameHandler<T> };

/** How handlers that answer themselves write to a socket (the Gateway, with its slow-consumer checks). */
export interface Responder {
  reply(conn: Connection, id: number | string | undefined, fields: ReplyFields): void;
  /** Frames that follow a reply, in order (written at the client's pace when many). */
  sendFrames(conn: Connection, frames: readonly string[]): void;
  /** Bytes the connection may still have queued before its bound (SLOW_CONSUMER_BYTES). */
  budget(conn: Connection): number;
  /** The connection went past its bound while frames were held for it: close it (4009). */
  overflow(conn: Connection): void;
  /** The rest of a recovery larger than one page, written page by page at the client's pace. */
  replay(conn: Connection, replay: Replay): void;
}

export interface HandlerDeps {
  respond: Responder;
  verifier: TokenVerifier;
  publisher: Publisher;
  hub: LocalHub;
  metrics: Metrics;
  namespaces: Namespaces;
  listeners: Listeners;
  maxSubscriptions: number;
  /** Extra reply fields for a subscribe (e.g. the presence snapshot), from the features. */
  subscribeExtras: readonly SubscribeExtra[];
  /** Who may subscribe and publish; the grant patterns alone (channel.ts) when omitted. */
  access?: ChannelAccess;
}

const GRANTS_ONLY: ChannelAccess = {
  maySubscribe: (claims, channel, namespace) => maySubscribe(claims.user, claims.subChannels, channel, namespace),
  mayPublish: () => true,
};

/** Adds fields to a subscribe reply for the channels a feature owns; null when not its channel. A Promise is awaited before the reply. */
export type SubscribeExtra = (peer: Peer, channel: Channel) => ReplyFields | null | Promise<ReplyFields | null>;

/** The core frames (subscribe, unsubscribe, publish, refresh, ping) plus the features' ones. */
export class FrameHandlers {
  private readonly table: FeatureHandlers;
  private readonly access: ChannelAccess;

  constructor(
    private readonly deps: HandlerDeps,
    features: FeatureHandlers,
  ) {
    this.access = deps.access ?? GRANTS_ONLY;
    this.table = {
      subscribe: (conn, frame) => this.subscribe(conn, frame),
      unsubscribe: (conn, frame) => this.unsubscribe(conn, frame),
      publish: (conn, frame) => this.publish(conn, frame),
      refresh: (conn, frame) => this.refresh(conn, frame),
      ping: () => ({}),
      ...features,
    };
  }

  private namespaceOf(channel: Channel): Namespace {
    return this.deps.namespaces.get(channel.kind)!;
  }

  handle(conn: Connection, frame: AnyFrame): HandlerResult | Promise<HandlerResult> {
    const handler = this.table[frame.type] as FrameHandler<FrameType> | undefined;
    if (handler === undefined) throw new SinalError("unknown_type", `frame type "${frame.type}" is not served here`);
    return handler(conn, frame);
  }

  /**
   * Admits a subscribe, then joins (`subscribeAdmitted`). A `token` (a channel token) decides
   * alone: valid, for this user and tenant and exactly this channel, it admits whatever the
   * grants say; any fault is `forbidden` naming it. Without one, the access rule decides; when
   * that waits for a read (a room's members), an `unsubscribe` of the channel waits for it, so
   * subscribe then unsubscribe never ends subscribed.
   */
  private subscribe(conn: Connection, frame: Extract<AnyFrame, { type: "subscribe" }>): typeof REPLIED | Promise<typeof REPLIED> {
    const channel = parseChannel(conn.tenant, frame.channel, this.deps.namespaces);
    if (frame.token !== undefined) {
      this.checkChannelToken(conn, channel, frame.token);
      return this.subscribeAdmitted(conn, frame, channel, true);
    }
    const allowed = this.access.maySubscribe(conn.claims, channel, this.namespaceOf(channel));
    if (!(allowed instanceof Promise)) {
      if (!allowed) throw this.refuse(conn, channel);
      return this.subscribeAdmitted(conn, frame, channel, false);
    }
    // `{ result }`: settles once joined, not once a history read behind the join is done.
    const admission = allowed.then((ok): { result: typeof REPLIED | Promise<typeof REPLIED> } => {
      if (!ok) throw this.refuse(conn, channel);
      return { result: conn.closing ? REPLIED : this.subscribeAdmitted(conn, frame, channel, false) };
    });
    const admitting = (conn.admitting ??= new Map());
    const settled = admission.then(
      () => undefined,
      () => undefined,
    );
    admitting.set(channel.topic, settled);
    void settled.then(() => {
      if (admitting.get(channel.topic) === settled) admitting.delete(channel.topic);
    });
    return admission.then(({ result }) => result);
  }

  private refuse(conn: Connection, channel: Channel): SinalError {
    this.deps.listeners.denied(conn, channel.name, "forbidden");
    return new SinalError("forbidden", `not allowed to subscribe to "${channel.name}"`);
  }

  /** Throws `forbidden` with the reason unless `token` is a valid channel token for this connection's user and tenant and this channel. */
  private checkChannelToken(conn: Connection, channel: Channel, token: string): void {
    const refuse = (reason: string, why: string) => {
      this.deps.metrics.authFailed(`channel_token_${reason}`);
      this.deps.listeners.denied(conn, channel.name, "forbidden");
      return new SinalError("forbidden", `channel token refused: ${why}`);
    };
    let claims: ChannelClaims;
    try {
      claims = this.deps.verifier.verifyChannel(token);
    } catch (err) {
      if (err instanceof TokenError) throw refuse(err.reason, err.message);
      throw err;
    }
    if (claims.user !== conn.user) throw refuse("other_user", `it is for user "${claims.user}", this connection is "${conn.user}"`);
    if (claims.tenant !== conn.tenant) throw refuse("other_tenant", "it is for another tenant");
    if (claims.channel !== channel.name) throw refuse("other_channel", `it is for channel "${claims.channel}", not "${channel.name}"`);
    if (channel.kind === "user" && channel.id !== conn.user) throw refuse("other_channel", "no token grants another user's channel");
  }

  /**
   * Joins the channel and answers `{channel, epoch, offset, recovered}`; with `since`, the reply is
   * followed by the missed publications, then live ones, none twice (docs/protocol.md "History and recovery"). A history that
   * answers asynchronously (the durable one) reads while the hub holds this socket's live
   * frames of the channel; the held frames already replayed are dropped, the rest follow.
   * Memory stays bounded whatever the client sends: one history read per connection at a time (a
   * second subscribe waits for the first), a replay is read in pages that count toward the
   * connection's bound with everything else queued for it (the next page is read once the client
   * took the last), frames held during a read count too (past the bound: 4009), and a channel the
   * connection already holds is never replayed again (everything since its first subscribe was
   * sent on this connection, in order).
   */
  private subscribeAdmitted(conn: Connection, frame: Extract<AnyFrame, { type: "subscribe" }>, channel: Channel, byToken: boolean): typeof REPLIED | Promise<typeof REPLIED> {
    const joins = !conn.topics.includes(channel.topic);
    if (joins && conn.subscriptions >= this.deps.maxSubscriptions) {
      this.deps.listeners.denied(conn, channel.name, "too_many_subscriptions");
      throw new SinalError("too_many_subscriptions", `at most ${this.deps.maxSubscriptions} subscriptions per connection`);
    }
    const inFlight = conn.holding?.values().next().value;
    if (inFlight !== undefined) return inFlight.then(() => (conn.closing ? REPLIED : this.subscribeAdmitted(conn, frame, channel, byToken)));
    // The implicit own channel counts as held once the client subscribed to it itself (its first
    // subscribe, with `since` after a reconnect, is the one that recovers it).
    const isOwnFirst = !joins && channel.kind === "user" && channel.id === conn.user && !conn.ownChannelClaimed;
    if (!joins && !isOwnFirst) {
      if (byToken) (conn.tokenChannels ??= new Set()).add(channel.topic);
      return this.answerRepeat(conn, frame, channel);
    }
    if (isOwnFirst) conn.ownChannelClaimed = true;
    const { since } = frame;
    const history = this.deps.publisher.history;
    const budget = this.deps.respond.budget(conn);
    // The features' fields (the presence snapshot) are read with the history: a shared store's
    // answer comes while live frames are held, so what happened after it follows the reply.
    const read = withExtras(since === undefined ? history.position(channel) : history.recover(channel, since, budget), this.extras(conn, channel));
    // Marked with the join: a failed history read's `leave` takes the mark away with the subscription.
    if (byToken) (conn.tokenChannels ??= new Set()).add(channel.topic);
    if (!(read instanceof Promise)) {
      if (joins) this.join(conn, channel, null);
      this.answer(conn, frame.id, channel, read, since !== undefined, []);
      if (joins) this.deps.listeners.subscribed(conn, channel);
      return REPLIED;
    }
    const { hub } = this.deps;
    const held: string[] = [];
    let heldBytes = 0;
    let overflow = false;
    const hold = (frame: string) => {
      if (overflow) return;
      heldBytes += frame.length;
      if (heldBytes <= budget) {
        held.push(frame);
        return;
      }
      // Past the bound while reading: the client is closed (4009) and recovers when it reconnects.
      overflow = true;
      held.length = 0;
    };
    if (joins) this.join(conn, channel, hold);
    else hub.divert(conn.ws, channel.topic, hold);
    const holding = (conn.holding ??= new Map());
    const done = () => {
      holding.delete(channel.topic);
      hub.undivert(conn.ws, channel.topic);
    };
    const answered = read.then<typeof REPLIED>(
      (result) => {
        done();
        if (conn.closing) return REPLIED;
        if (overflow) {
          this.deps.respond.overflow(conn);
          return REPLIED;
        }
        conn.slow?.add(channel.topic);
        this.answer(conn, frame.id, channel, result, since !== undefined, held);
        // Not if the client unsubscribed while the history was read: no join without its leave.
        if (joins && conn.topics.includes(channel.topic)) this.deps.listeners.subscribed(conn, channel);
        return REPLIED;
      },
      (err: unknown) => {
        done();
        if (joins) this.leave(conn, channel);
        throw err;
      },
    );
    holding.set(channel.topic, answered.catch(() => undefined));
    return answered;
  }

  /** A subscribe to a channel the connection already holds: its position, nothing replayed. */
  private answerRepeat(conn: Connection, frame: Extract<AnyFrame, { type: "subscribe" }>, channel: Channel): typeof REPLIED | Promise<typeof REPLIED> {
    const reply = ({ read: position, extras }: WithExtras<Position>) =>
      this.answer(conn, frame.id, channel, { read: frame.since === undefined ? position : heldRecovery(position, frame.since), extras }, frame.since !== undefined, []);
    const read = withExtras(this.deps.publisher.history.position(channel), this.extras(conn, channel));
    if (!(read instanceof Promise)) {
      reply(read);
      return REPLIED;
    }
    return read.then((position) => {
      if (!conn.closing) reply(position);
      return REPLIED;
    });
  }

  /** Subscribes the socket; with `hold`, its live frames go there until the caller undiverts. */
  private join(conn: Connection, channel: Channel, hold: ((frame: string) => void) | null): void {
    if (hold) this.deps.hub.divert(conn.ws, channel.topic, hold);
    else if (conn.slow !== null) conn.slow.add(channel.topic);
    else this.deps.hub.subscribe(conn.ws, channel.topic);
    conn.topics.push(channel.topic);
    this.deps.metrics.tenant(conn.tenant).subscriptions++;
  }

  private leave(conn: Connection, channel: Channel): void {
    const at = conn.topics.indexOf(channel.topic);
    if (at < 0) return;
    this.deps.hub.unsubscribe(conn.ws, channel.topic);
    conn.slow?.forget(channel.topic);
    conn.topics.splice(at, 1);
    conn.tokenChannels?.delete(channel.topic);
    this.deps.metrics.tenant(conn.tenant).subscriptions--;
  }

  /**
   * Writes the subscribe reply, the replayed publications, then the held live frames not replayed.
   * A recovery larger than its first page goes on page by page in the connection's lane.
   */
  private answer(conn: Connection, id: number | string | undefined, channel: Channel, { read, extras }: WithExtras<Recovery | Position>, withSince: boolean, held: readonly string[]): void {
    const recovery = "position" in read ? read : null;
    const position = recovery?.position ?? (read as Position);
    const live = held.filter((frame) => !isCovered(frame, position));
    const reply: ReplyFields = { channel: channel.name, epoch: position.epoch, offset: position.offset, recovered: recovery?.recovered ?? false };
    if (withSince && recovery !== null && !recovery.recovered) {
      reply.reason = recovery.reason;
      reply.history_from = recovery.historyFrom;
    }
    Object.assign(reply, extras);
    this.deps.respond.reply(conn, id, reply);
    if (recovery?.recovered && recovery.through < position.offset) {
      const { history } = this.deps.publisher;
      this.deps.respond.sendFrames(conn, recovery.publications);
      this.deps.respond.replay(conn, {
        topic: channel.topic,
        epoch: position.epoch,
        last: recovery.through,
        upTo: position.offset,
        held: live,
        fetch: (after, maxBytes) => history.page(channel, position.epoch, after, position.offset, maxBytes),
      });
      return;
    }
    const after = recovery?.recovered ? [...recovery.publications, ...live] : live;
    if (after.length > 0) this.deps.respond.sendFrames(conn, after);
  }

  /** The features' fields for a subscribe reply, in the order of `subscribeExtras`; a Promise when one of them waits for a store. */
  private extras(conn: Connection, channel: Channel): ReplyFields | Promise<ReplyFields> {
    const all = this.deps.subscribeExtras.map((extra) => extra(conn, channel));
    const merge = (fields: readonly (ReplyFields | null)[]) => Object.assign({}, ...fields) as ReplyFields;
    return all.some((fields) => fields instanceof Promise) ? Promise.all(all).then(merge) : merge(all as (ReplyFields | null)[]);
  }

  private unsubscribe(conn: Connection, frame: Frame<"unsubscribe">): ReplyFields | Promise<ReplyFields> {
    const channel = parseChannel(conn.tenant, frame.channel, this.deps.namespaces);
    const admitting = conn.admitting?.get(channel.topic);
    if (admitting !== undefined) return admitting.then(() => this.unsubscribe(conn, frame));
    if (channel.name !== `user:${conn.user}` && conn.topics.includes(channel.topic)) {
      this.leave(conn, channel);
      this.deps.listeners.unsubscribed(conn, channel);
    }
    return { channel: channel.name };
  }

  /** A client's publication: its `pub` frame says who sent it (`from`), and server events are not the client's to send. */
  private async publish(conn: Connection, frame: Frame<"publish">): Promise<ReplyFields> {
    const channel = parseChannel(conn.tenant, frame.channel, this.deps.namespaces);
    if (SERVER_EVENTS.has(frame.event)) throw new SinalError("forbidden", `event "${frame.event}" is reserved for the server`);
    const namespace = this.namespaceOf(channel);
    if (!namespace.clientPublish) throw new SinalError("forbidden", `clients may not publish on "${channel.kind}" channels (its namespace has no client_publish)`);
    if (!mayPublish(conn.user, conn.claims.pubChannels, channel, namespace) || !(await this.access.mayPublish(conn.claims, channel, conn.tokenChannels?.has(channel.topic) === true))) {
      throw new SinalError("forbidden", `not allowed to publish to "${channel.name}"`);
    }
    if (frame.data === undefined) throw new SinalError("bad_request", "data: required");
    const from = { user: conn.user, client: conn.id, name: conn.claims.name };
    const { offset, epoch } = await this.deps.publisher.publish(channel, frame.event, frame.data, { from });
    return { offset, epoch };
  }

  private refresh(conn: Connection, frame: Frame<"refresh">): ReplyFields {
    const claims = this.deps.verifier.verify(frame.token);
    if (claims.user !== conn.user || claims.tenant !== conn.tenant) {
      throw new SinalError("forbidden", "a refresh token must be for the same sub and tid");
    }
    conn.claims = claims;
    return { expires_at: claims.expiresAt };
  }
}

/** A history read with the features' reply fields, both at hand or both awaited. */
interface WithExtras<T> {
  read: T;
  extras: ReplyFields;
}

function withExtras<T>(read: T | Promise<T>, extras: ReplyFields | Promise<ReplyFields>): WithExtras<T> | Promise<WithExtras<T>> {
  if (!(read instanceof Promise) && !(extras instanceof Promise)) return { read, extras };
  return Promise.all([read, extras]).then(([read, extras]) => ({ read, extras }));
}

/** `since` on a channel the connection holds: nothing to replay, unless the epoch changed or since is ahead. */
function heldRecovery(position: Position, since: Position): Recovery {
  const fail = (reason: "epoch_changed" | "ahead"): Recovery => ({ position, recovered: false, publications: [], through: since.offset, reason, historyFrom: position.offset + 1 });
  if (since.epoch !== position.epoch) return fail("epoch_changed");
  if (since.offset > position.offset) return fail("ahead");
  return { position, recovered: true, publications: [], through: position.offset, historyFrom: position.offset + 1 };
}

