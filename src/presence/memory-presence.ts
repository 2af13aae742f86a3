import { parseChannel, type Channel } from "../channel.ts";
import type { Namespaces } from "../namespaces.ts";
import type { Publisher } from "../publisher.ts";
import type { Connection } from "../ws/connection.ts";
import type { FeatureHandlers, SubscribeExtra } from "../ws/handlers.ts";
import type { ConnectionListener } from "../ws/hooks.ts";
import type { ChosenStatus, Presence, PresenceEntry, PresenceStatus } from "./presence.ts";

interface UserState {
  name?: string;
  /** Open connections; 0 while the user is in its leave grace. */
  connections: number;
  chosen: ChosenStatus;
  lastActivity: number;
  /** The status last published, so only changes go out. */
  published: PresenceStatus;
}

/** One channel's members: user -> its connections subscribed (none while the user is in its leave grace). */
interface ChannelMembers {
  channel: Channel;
  users: Map<string, Set<Connection>>;
}

export interface PresenceTimes {
  /** PRESENCE_AWAY_AFTER_MS */
  awayAfterMs: number;
  /** PRESENCE_LEAVE_GRACE_MS; 0 announces leaves at once. */
  leaveGraceMs: number;
}

/**
 * Presence kept in this process, fed by the gateway's connection events: it keeps the guarantees
 * of Presence (presence.ts) for one node. Channels are those of namespaces with `presence` or
 * `join_leave`; a member is counted by its connections, so a subscribe that never completed (its
 * connection closed or unsubscribed while the history was read) is never taken for a leave.
 */
export class MemoryPresence implements Presence, ConnectionListener {
  /** tenant -> user -> state */
  private readonly tenants = new Map<string, Map<string, UserState>>();
  /** topic -> members */
  private readonly channels = new Map<string, ChannelMembers>();
  /**
   * Memberships in their leave grace, by key (tenantKey / channelKey), with when it started and
   * what ends it. Every grace is as long, so insertion order is expiry order (a new grace is
   * always added last).
   */
  private readonly leaving = new Map<string, { since: number; end: () => void }>();
  private lastIdleCheck = 0;

  constructor(
    private readonly publisher: Publisher,
    private readonly namespaces: Namespaces,
    private readonly times: PresenceTimes,
  ) {}

  snapshot(tenant: string): PresenceEntry[] {
    const users = this.tenants.get(tenant);
    if (!users) return [];
    return [...users].map(([user, s]) => entry(user, s, s.published));
  }

  statusOf(tenant: string, users: readonly string[]): PresenceEntry[] {
    const known = this.tenants.get(tenant);
    return users.map((user) => {
      const s = known?.get(user);
      return s ? entry(user, s, s.published) : { user, status: "offline" as const };
    });
  }

  members(channel: Channel): PresenceEntry[] {
    const members = this.channels.get(channel.topic);
    return members ? this.statusOf(channel.tenant, [...members.users.keys()]) : [];
  }

  opened(conn: Connection): void {
    let users = this.tenants.get(conn.tenant);
    if (!users) {
      users = new Map();
      this.tenants.set(conn.tenant, users);
    }
    const now = Date.now();
    let state = users.get(conn.user);
    if (!state) {
      state = { connections: 0, chosen: "online", lastActivity: now, published: "offline" };
      users.set(conn.user, state);
    }
    // Back within its grace: the user never went offline.
    if (state.connections === 0) this.leaving.delete(tenantKey(conn.tenant, conn.user));
    state.connections++;
    state.lastActivity = now;
    if (conn.claims.name !== undefined) state.name = conn.claims.name;
    this.update(conn.tenant, conn.user, state, now);
  }

  closed(conn: Connection): void {
    // The channels first: a user's leaves go out before its offline when their graces end together.
    for (const topic of conn.topics) {
      const members = this.channels.get(topic);
      if (members) this.exit(conn, members);
    }
    const state = this.tenants.get(conn.tenant)?.get(conn.user);
    if (!state || --state.connections > 0) return;
    this.afterGrace(tenantKey(conn.tenant, conn.user), () => this.offline(conn.tenant, conn.user));
  }

  subscribed(conn: Connection, channel: Channel): void {
    const ns = this.namespaces.get(channel.kind);
    if (!ns?.presence && !ns?.joinLeave) return;
    let members = this.channels.get(channel.topic);
    if (!members) {
      members = { channel, users: new Map() };
      this.channels.set(channel.topic, members);
    }
    let connections = members.users.get(conn.user);
    const joins = connections === undefined;
    if (connections === undefined) {
      connections = new Set();
      members.users.set(conn.user, connections);
    } else if (connections.size === 0) {
      // Back within its grace: the user never left.
      this.leaving.delete(channelKey(channel, conn.user));
    }
    connections.add(conn);
    if (joins && ns.joinLeave) this.publisher.publishEphemeral(channel, "user_joined", who(channel, conn.user));
  }

  unsubscribed(conn: Connection, channel: Channel): void {
    const members = this.channels.get(channel.topic);
    if (members) this.exit(conn, members);
  }

  active(conn: Connection, now: number): void {
    const state = this.tenants.get(conn.tenant)?.get(conn.user);
    if (!state) return;
    state.lastActivity = now;
    // Only an idle-away user comes back by being active; a chosen away/busy stays until changed.
    if (state.published === "away" && state.chosen === "online") this.update(conn.tenant, conn.user, state, now);
  }

  sweep(now: number): void {
    const at = performance.now();
    for (const [key, grace] of this.leaving) {
      if (at - grace.since < this.times.leaveGraceMs) break;
      this.leaving.delete(key);
      grace.end();
    }
    // Idle-away needs no finer grain than a quarter of the away time (and at most a second):
    // this walks every connected user.
    if (now - this.lastIdleCheck < Math.min(1000, this.times.awayAfterMs / 4)) return;
    this.lastIdleCheck = now;
    for (const [tenant, users] of this.tenants) {
      for (const [user, state] of users) {
        const idle = state.connections > 0 && state.published === "online" && now - state.lastActivity >= this.times.awayAfterMs;
        if (idle) this.update(tenant, user, state, now);
      }
    }
  }

  /** The `presence` frame: the client chooses online, away or busy. */
  frameHandlers(): FeatureHandlers {
    return {
      presence: (conn, frame) => {
        const state = this.tenants.get(conn.tenant)?.get(conn.user);
        if (state) {
          state.chosen = frame.status;
          state.lastActivity = Date.now();
          this.update(conn.tenant, conn.user, state, state.lastActivity);
        }
        return { status: state?.published ?? frame.status };
      },
    };
  }

  /**
   * The subscribe reply's `presence`: the tenant's users on `presence`; a channel's members in a
   * namespace with `presence`, the subscriber included (it counts from right after the reply, which
   * its own `user_joined` follows).
   */
  subscribeExtra(): SubscribeExtra {
    return (conn, channel) => {
      if (channel.kind === "presence") return { presence: this.snapshot(conn.tenant) };
      if (!this.namespaces.get(channel.kind)?.presence) return null;
      const members = this.members(channel);
      if (!members.some((m) => m.user === conn.user)) members.push(...this.statusOf(conn.tenant, [conn.user]));
      return { presence: members };
    };
  }

  /** One connection of a member left the channel; its last one starts the user's grace. */
  private exit(conn: Connection, members: ChannelMembers): void {
    const connections = members.users.get(conn.user);
    // Not counted (its subscribe never completed), or the user has other connections here.
    if (!connections?.delete(conn) || connections.size > 0) return;
    this.afterGrace(channelKey(members.channel, conn.user), () => this.leave(members, conn.user));
  }

  private leave(members: ChannelMembers, user: string): void {
    const { channel } = members;
    members.users.delete(user);
    if (members.users.size === 0) this.channels.delete(channel.topic);
    if (this.namespaces.get(channel.kind)?.joinLeave) this.publisher.publishEphemeral(channel, "user_left", who(channel, user));
  }

  private offline(tenant: string, user: string): void {
    const users = this.tenants.get(tenant);
    const state = users?.get(user);
    if (!users || !state) return;
    users.delete(user);
    if (users.size === 0) this.tenants.delete(tenant);
    state.published = "offline";
    this.publisher.publishEphemeral(parseChannel(tenant, "presence"), "presence", entry(user, state, "offline"));
  }

  /** Ends a membership once the leave grace passed (on the sweep), unless the user came back (see `leaving`). */
  private afterGrace(key: string, end: () => void): void {
    if (this.times.leaveGraceMs === 0) {
      end();
      return;
    }
    // Delete first so the key goes last even if it were still there: expiry order is insertion order.
    this.leaving.delete(key);
    this.leaving.set(key, { since: performance.now(), end });
  }

  private update(tenant: string, user: string, state: UserState, now: number): void {
    const status = this.compute(state, now);
    if (status === state.published) return;
    state.published = status;
    this.publisher.publishEphemeral(parseChannel(tenant, "presence"), "presence", entry(user, state, status));
  }

  /** The status of a connected user (offline comes only when its grace ends). */
  private compute(state: UserState, now: number): ChosenStatus {
    if (state.chosen !== "online") return state.chosen;
    return now - state.lastActivity >= this.times.awayAfterMs ? "away" : "online";
  }
}

// A tenant id never holds "/" and a topic always does (`<tenant>/<channel>`): the keys never meet.
const tenantKey = (tenant: string, user: string) => `${tenant}\u0000${user}`;
const channelKey = (channel: Channel, user: string) => `${channel.topic}\u0000${user}`;

function entry(user: string, state: UserState, status: PresenceStatus): PresenceEntry {
  return state.name === undefined ? { user, status } : { user, name: state.name, status };
}

/** The data of `user_joined` / `user_left`: `{room, user}` in a room, `{channel, user}` elsewhere. */
function who(channel: Channel, user: string): { room: string | null; user: string } | { channel: string; user: string } {
  return channel.kind === "room" ? { room: channel.id, user } : { channel: channel.name, user };
}
