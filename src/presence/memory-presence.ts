import { parseChannel } from "../channel.ts";
import type { Publisher } from "../publisher.ts";
import type { Connection } from "../ws/connection.ts";
import type { FeatureHandlers, SubscribeExtra } from "../ws/handlers.ts";
import type { ConnectionListener } from "../ws/hooks.ts";
import type { ChosenStatus, Presence, PresenceEntry, PresenceStatus } from "./presence.ts";

interface UserState {
  name?: string;
  connections: number;
  chosen: ChosenStatus;
  lastActivity: number;
  /** The status last published, so only changes go out. */
  published: PresenceStatus;
}

/** Presence kept in this process, fed by the gateway's connection events. */
export class MemoryPresence implements Presence, ConnectionListener {
  /** tenant -> user -> state */
  private readonly tenants = new Map<string, Map<string, UserState>>();
  private lastIdleCheck = 0;

  constructor(
    private readonly publisher: Publisher,
    private readonly awayAfterMs: number,
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
    state.connections++;
    state.lastActivity = now;
    if (conn.claims.name !== undefined) state.name = conn.claims.name;
    this.update(conn.tenant, conn.user, state, now);
  }

  closed(conn: Connection): void {
    const users = this.tenants.get(conn.tenant);
    const state = users?.get(conn.user);
    if (!users || !state) return;
    state.connections--;
    this.update(conn.tenant, conn.user, state, Date.now());
    if (state.connections <= 0) {
      users.delete(conn.user);
      if (users.size === 0) this.tenants.delete(conn.tenant);
    }
  }

  active(conn: Connection, now: number): void {
    const state = this.tenants.get(conn.tenant)?.get(conn.user);
    if (!state) return;
    state.lastActivity = now;
    // Only an idle-away user comes back by being active; a chosen away/busy stays until changed.
    if (state.published === "away" && state.chosen === "online") this.update(conn.tenant, conn.user, state, now);
  }

  sweep(now: number): void {
    // Idle-away needs no finer grain than a quarter of the away time (and at most a second):
    // this walks every connected user.
    if (now - this.lastIdleCheck < Math.min(1000, this.awayAfterMs / 4)) return;
    this.lastIdleCheck = now;
    for (const [tenant, users] of this.tenants) {
      for (const [user, state] of users) {
        if (state.published === "online" && now - state.lastActivity >= this.awayAfterMs) this.update(tenant, user, state, now);
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

  /** Subscribing to `presence` answers with the current snapshot. */
  subscribeExtra(): SubscribeExtra {
    return (conn, channel) => (channel.kind === "presence" ? { presence: this.snapshot(conn.tenant) } : null);
  }

  private update(tenant: string, user: string, state: UserState, now: number): void {
    const status = this.compute(state, now);
    if (status === state.published) return;
    state.published = status;
    this.publisher.publishEphemeral(parseChannel(tenant, "presence"), "presence", entry(user, state, status));
  }

  private compute(state: UserState, now: number): PresenceStatus {
    if (state.connections <= 0) return "offline";
    if (state.chosen !== "online") return state.chosen;
    return now - state.lastActivity >= this.awayAfterMs ? "away" : "online";
  }
}

function entry(user: string, state: UserState, status: PresenceStatus): PresenceEntry {
  return state.name === undefined ? { user, status } : { user, name: state.name, status };
}
