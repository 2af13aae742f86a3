import { parseChannel, type Channel } from "../channel.ts";
import type { MaybePromise } from "../history/history.ts";
import type { Namespaces } from "../namespaces.ts";
import type { Peer, PeerListener } from "../peer.ts";
import type { Publisher } from "../publisher.ts";
import type { ChosenStatus, Presence, PresenceEntry, PresenceStatus } from "./presence.ts";
import type { ExpiredMember, MemberInfo, PresenceStore, StatusChange } from "./presence-store.ts";

export interface PresenceTimes {
  /** PRESENCE_AWAY_AFTER_MS */
  awayAfterMs: number;
  /** PRESENCE_LEAVE_GRACE_MS; 0 announces leaves at once. */
  leaveGraceMs: number;
  /** How long a live connection's entries last unless refreshed (a node that stops is forgotten after it). */
  memberTtlMs?: number;
  /** How often this node refreshes its live connections' entries (well under memberTtlMs). */
  refreshEveryMs?: number;
}

/** What this node keeps of a user with connections here (or in its leave grace): its activity here. */
interface LocalUser {
  name?: string;
  /**
   * Its connections on this node (see Clients); none while the user is in its leave grace. Most
   * users have one: a set is made only for a second (memory per idle connection).
   */
  clients: Clients;
  lastActivity: number;
  /** This node marked the user's entries idle (no frame on any of its connections here for the away time). */
  idle: boolean;
}

/** Connection ids: none (null), one (the usual case), or a set of two or more. */
type Clients = string | Set<string> | null;

function withClient(clients: Clients, client: string): Clients {
  if (clients === null || clients === client) return client;
  if (typeof clients === "string") return new Set([clients, client]);
  clients.add(client);
  return clients;
}

function withoutClient(clients: Clients, client: string): Clients {
  if (clients === null || clients === client) return null;
  if (typeof clients === "string") return clients;
  clients.delete(client);
  return clients.size === 1 ? clients.values().next().value! : clients.size === 0 ? null : clients;
}

function allClients(clients: Clients): string[] {
  if (clients === null) return [];
  return typeof clients === "string" ? [clients] : [...clients];
}

/** A connection of this node: the channels it is a member of (subscribes that completed), refreshed while it lives. */
interface LocalPeer {
  peer: Peer;
  /** Made at its first presence channel: most connections never join one (memory per idle connection). */
  channels: Map<string, Channel> | null;
}

/** The client of a user's grace entry in a scope (a connection id is never empty). */
const IN_GRACE = "";
const MEMBER_TTL_MS = 60_000;
const REFRESH_EVERY_MS = 25_000;

/**
 * Presence policy over a PresenceStore: keeps the guarantees of Presence (presence.ts), fed by
 * the peer events. Who is a member (of the tenant: its `presence` channel; of each channel of a
 * namespace with `presence` or `join_leave`) lives in the store, one entry per connection; when
 * a connection leaves, its user gets one grace entry that expires after the leave grace, so a
 * return within it continues the membership and the store's `expire` announces the leaves. The
 * status is the store's to decide over every node (PresenceStore's `mark`): this node marks its
 * connections' tenant entries active or idle (no frame here for the away time) and passes on a
 * chosen status; whoever's call changed the status publishes it, so each change goes out once.
 *
 * A subscribe that never completed (its connection closed or unsubscribed while the history was
 * read) is never `subscribed`, so it is never taken for a join nor a leave.
 */
export class PresenceService implements Presence, PeerListener {
  /** tenant -> user -> state, for users with connections on this node */
  private readonly tenants = new Map<string, Map<string, LocalUser>>();
  /** client -> its channels */
  private readonly peers = new Map<string, LocalPeer>();
  private readonly memberTtlMs: number;
  private readonly refreshEveryMs: number;
  private lastIdleCheck = 0;
  private lastRefresh = 0;
  /** One expiry pass at a time: a slow shared store must not pile sweeps up. */
  private expiring = false;

  constructor(
    private readonly store: PresenceStore,
    private readonly publisher: Publisher,
    private readonly namespaces: Namespaces,
    private readonly times: PresenceTimes,
  ) {
    this.memberTtlMs = times.memberTtlMs ?? MEMBER_TTL_MS;
    this.refreshEveryMs = times.refreshEveryMs ?? REFRESH_EVERY_MS;
  }

  snapshot(tenant: string): MaybePromise<PresenceEntry[]> {
    return then(this.store.members(tenantChannel(tenant)), (members) => members.map(({ user, info }) => entry(user, info)));
  }

  statusOf(tenant: string, users: readonly string[]): MaybePromise<PresenceEntry[]> {
    return then(this.store.find(tenantChannel(tenant), users), (found) =>
      users.map((user, i) => {
        const info = found[i];
        return info ? entry(user, info) : { user, status: "offline" as const };
      }),
    );
  }

  members(channel: Channel): MaybePromise<PresenceEntry[]> {
    return then(this.store.members(channel), (members) => this.statusOf(channel.tenant, members.map((m) => m.user)));
  }

  opened(peer: Peer): void {
    let users = this.tenants.get(peer.tenant);
    if (!users) {
      users = new Map();
      this.tenants.set(peer.tenant, users);
    }
    const now = Date.now();
    let state = users.get(peer.user);
    if (!state) {
      state = { clients: null, lastActivity: now, idle: false };
      users.set(peer.user, state);
    }
    state.clients = withClient(state.clients, peer.client);
    state.lastActivity = now;
    if (peer.name !== undefined) state.name = peer.name;
    this.peers.set(peer.client, { peer, channels: null });
    const tenant = tenantChannel(peer.tenant);
    this.after(this.store.add(tenant, peer, now + this.memberTtlMs, nameOf(state)), () => undefined);
    // Opening is activity: every connection of the user here is active again. A join is the
    // change from no status; back within its grace only a moved status is announced.
    const clients = state.idle ? allClients(state.clients) : [peer.client];
    state.idle = false;
    this.mark(tenant, peer.user, { clients, active: true });
  }

  closed(peer: Peer): void {
    const local = this.peers.get(peer.client);
    if (local === undefined) return;
    this.peers.delete(peer.client);
    const now = Date.now();
    // The channels first: a user's leaves go out before its offline when their graces end together.
    if (local.channels !== null) for (const channel of local.channels.values()) this.exit(peer, channel, now);
    const user = this.tenants.get(peer.tenant)?.get(peer.user);
    if (user !== undefined) user.clients = withoutClient(user.clients, peer.client);
    this.exit(peer, tenantChannel(peer.tenant), now);
  }

  subscribed(peer: Peer, channel: Channel): void {
    const ns = this.namespaces.get(channel.kind);
    // The tenant's `presence` channel holds who is connected (opened/closed), never its subscribers.
    if ((!ns?.presence && !ns?.joinLeave) || channel.kind === "presence") return;
    const local = this.peers.get(peer.client);
    if (local === undefined) return;
    (local.channels ??= new Map()).set(channel.topic, channel);
    this.after(this.store.add(channel, peer, Date.now() + this.memberTtlMs), (joined) => {
      if (joined && ns.joinLeave) this.publisher.publishEphemeral(channel, "user_joined", who(channel, peer.user));
    });
  }

  unsubscribed(peer: Peer, channel: Channel): void {
    if (this.peers.get(peer.client)?.channels?.delete(channel.topic)) this.exit(peer, channel, Date.now());
  }

  active(peer: Peer, now: number): void {
    const state = this.tenants.get(peer.tenant)?.get(peer.user);
    if (!state) return;
    state.lastActivity = now;
    if (!state.idle) return;
    // The store decides whether that moves the status (a chosen away or busy stays).
    state.idle = false;
    this.mark(tenantChannel(peer.tenant), peer.user, { clients: allClients(state.clients), active: true });
  }

  /** The `presence` frame: the client chooses online, away or busy (for all its connections, on every node); the status now in effect. */
  choose(peer: { tenant: string; user: string }, status: ChosenStatus): MaybePromise<PresenceStatus> {
    const state = this.tenants.get(peer.tenant)?.get(peer.user);
    if (!state) return status;
    state.lastActivity = Date.now();
    const change: StatusChange = state.idle ? { chosen: status, clients: allClients(state.clients), active: true } : { chosen: status };
    state.idle = false;
    return then(this.store.mark(tenantChannel(peer.tenant), peer.user, change), (result) => {
      if (result === null) return status;
      if (result.changed) this.publishStatus(peer.tenant, peer.user, result.info);
      return result.info.status ?? status;
    });
  }

  sweep(now: number): void {
    // Refreshed before expiring: a node whose sweeps stalled past the TTL does not drop its own live members.
    if (now - this.lastRefresh >= this.refreshEveryMs) {
      this.lastRefresh = now;
      this.refreshLive(now);
    }
    if (!this.expiring) {
      this.expiring = true;
      const done = () => (this.expiring = false);
      const expired = this.store.expire(now);
      if (expired instanceof Promise) {
        expired.then(
          (list) => {
            done();
            for (const expired of list) this.expired(expired);
          },
          (err: unknown) => {
            done();
            this.publisher.backgroundFailed(err, "presence");
          },
        );
      } else {
        done();
        for (const each of expired) this.expired(each);
      }
    }
    // Idle-away needs no finer grain than a quarter of the away time (and at most a second):
    // this walks every connected user.
    if (now - this.lastIdleCheck < Math.min(1000, this.times.awayAfterMs / 4)) return;
    this.lastIdleCheck = now;
    for (const [tenant, users] of this.tenants) {
      for (const [user, state] of users) {
        const idle = state.clients !== null && !state.idle && now - state.lastActivity >= this.times.awayAfterMs;
        if (!idle) continue;
        state.idle = true;
        this.mark(tenantChannel(tenant), user, { clients: allClients(state.clients), active: false });
      }
    }
  }

  /**
   * The subscribe reply's `presence`: the tenant's users on `presence`; a channel's members in a
   * namespace with `presence`, the subscriber included (it counts from right after the reply, which
   * its own `user_joined` follows). Answers at once over a store that does (the memory one); over
   * one that answers with a Promise, the subscribe waits for it before replying.
   */
  subscribeExtra(): (peer: Peer, channel: Channel) => MaybePromise<{ presence: PresenceEntry[] } | null> {
    return (peer, channel) => {
      if (channel.kind === "presence") return then(this.snapshot(peer.tenant), (presence) => ({ presence }));
      if (!this.namespaces.get(channel.kind)?.presence) return null;
      return then(this.members(channel), (members) => {
        if (members.some((m) => m.user === peer.user)) return { presence: members };
        return then(this.statusOf(peer.tenant, [peer.user]), (self) => ({ presence: [...members, ...self] }));
      });
    };
  }

  /**
   * One connection left a scope. Without a grace its entry goes now (the last one: a leave).
   * With one, the user's grace entry is set to end after it, then the connection's entry goes:
   * the user stays a member without a moment out, and a user coming and going holds one grace
   * entry, not one per connection it closed.
   */
  private exit(peer: Peer, channel: Channel, now: number): void {
    const end = () =>
      this.after(this.store.remove(channel, peer), (left) => {
        if (left) this.ended(channel, peer.user, this.tenants.get(peer.tenant)?.get(peer.user)?.name);
        // Its status may move without this connection (its other ones, here or elsewhere, are idle).
        else if (channel.kind === "presence") this.mark(channel, peer.user, {});
      });
    if (this.times.leaveGraceMs === 0) {
      end();
      return;
    }
    this.after(this.store.add(channel, { user: peer.user, client: IN_GRACE }, now + this.times.leaveGraceMs), () => undefined);
    end();
  }

  /** What an expiry changed: a membership ended, or a user's status moved (a node with its active entries died). */
  private expired({ channel, user, left, info }: ExpiredMember): void {
    if (left) this.ended(channel, user, info.name);
    else if (channel.kind === "presence") this.publishStatus(channel.tenant, user, info);
  }

  /** A user's membership ended: `offline` for the tenant, `user_left` in a `join_leave` channel. */
  private ended(channel: Channel, user: string, name: string | undefined): void {
    if (channel.kind === "presence") {
      const users = this.tenants.get(channel.tenant);
      const state = users?.get(user);
      // A connection that came back after the store ended the membership keeps its state (its join follows).
      if (users && state && state.clients === null) {
        users.delete(user);
        if (users.size === 0) this.tenants.delete(channel.tenant);
      }
      const data: PresenceEntry = name === undefined ? { user, status: "offline" } : { user, name, status: "offline" };
      this.publisher.publishEphemeral(channel, "presence", data);
      return;
    }
    if (this.namespaces.get(channel.kind)?.joinLeave) this.publisher.publishEphemeral(channel, "user_left", who(channel, user));
  }

  /** Moves the expiry of every entry of this node's live connections to now + the TTL. */
  private refreshLive(now: number): void {
    const until = now + this.memberTtlMs;
    // An entry the store no longer has (a shared store that restarted empty, or this node was cut
    // off past the TTL and another expired it) is added back: the connection is live, so the user
    // is a member again, and its status is announced when that moved it (after an announced
    // `offline`, its return).
    for (const { peer, channels } of this.peers.values()) {
      const tenant = tenantChannel(peer.tenant);
      this.after(this.store.refresh(tenant, peer, until), (found) => {
        const state = this.tenants.get(peer.tenant)?.get(peer.user);
        if (found || state === undefined || !this.peers.has(peer.client)) return;
        this.after(this.store.add(tenant, peer, until, nameOf(state)), () => undefined);
        // Its status is decided again, and published if that moved it: another node may have
        // announced a change when this entry expired (this node was cut off past the TTL).
        this.mark(tenant, peer.user, { clients: [peer.client], active: !state.idle });
      });
      if (channels !== null) {
        for (const channel of channels.values()) {
          this.after(this.store.refresh(channel, peer, until), (found) => {
            if (!found && this.peers.get(peer.client)?.channels?.has(channel.topic)) this.after(this.store.add(channel, peer, until), () => undefined);
          });
        }
      }
    }
  }

  /** Marks the user's entries in the tenant's scope as told; publishes the status when that changed it. */
  private mark(tenant: Channel, user: string, change: StatusChange): void {
    this.after(this.store.mark(tenant, user, change), (result) => {
      if (result?.changed) this.publishStatus(tenant.tenant, user, result.info);
    });
  }

  private publishStatus(tenant: string, user: string, info: MemberInfo): void {
    this.publisher.publishEphemeral(tenantChannel(tenant), "presence", entry(user, info));
  }

  /** Runs `next` on a store's answer: at once when it answered at once, else when it does (a failure is logged and counted). */
  private after<T>(result: MaybePromise<T>, next: (value: T) => void): void {
    if (!(result instanceof Promise)) {
      next(result);
      return;
    }
    result.then(next).catch((err: unknown) => this.publisher.backgroundFailed(err, "presence"));
  }
}

/** `next` applied to a value that may still be coming: synchronous when it is at hand. */
function then<T, U>(value: MaybePromise<T>, next: (value: T) => MaybePromise<U>): MaybePromise<U> {
  return value instanceof Promise ? value.then(next) : next(value);
}

const tenantChannel = (tenant: string) => parseChannel(tenant, "presence");

function nameOf(state: LocalUser): MemberInfo | undefined {
  return state.name === undefined ? undefined : { name: state.name };
}

function entry(user: string, info: MemberInfo): PresenceEntry {
  const status = info.status ?? "online";
  return info.name === undefined ? { user, status } : { user, name: info.name, status };
}

/** The data of `user_joined` / `user_left`: `{room, user}` in a room, `{channel, user}` elsewhere. */
function who(channel: Channel, user: string): { room: string | null; user: string } | { channel: string; user: string } {
  return channel.kind === "room" ? { room: channel.id, user } : { channel: channel.name, user };
}
