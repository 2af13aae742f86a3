import { maySubscribe, parseChannel, type Channel } from "../channel.ts";
import { SinalError } from "../errors.ts";
import type { Publisher } from "../publisher.ts";
import type { Connection } from "../ws/connection.ts";
import type { FeatureHandlers } from "../ws/handlers.ts";
import type { ConnectionListener } from "../ws/hooks.ts";
import type { Lock, Locks } from "./locks.ts";

/** The `lock`/`unlock` data of docs/protocol.md "Events" (`unlock` without `expires_at`). */
function lockView(lock: Lock, withExpiry: boolean) {
  return { resource: lock.resource, user: lock.user, since: lock.since, ...(withExpiry ? { expires_at: lock.expiresAt } : {}) };
}

/**
 * The `lock` and `unlock` frames. A lock is announced as `lock` on `sync:<module>` when taken and
 * as `unlock` when released, expired, or its holding connection closes; renewals are silent.
 */
export class LockService implements ConnectionListener {
  constructor(
    private readonly locks: Locks,
    private readonly publisher: Publisher,
    private readonly ttlMs: number,
    /** Locks one user may hold at once (MAX_LOCKS_PER_USER). */
    private readonly maxPerUser = 100,
  ) {}

  /** `customer:77` -> `sync:customer`; the user must be allowed on that channel. */
  private channelFor(conn: Connection, resource: string): Channel {
    const channel = parseChannel(conn.tenant, `sync:${resource.slice(0, resource.indexOf(":"))}`);
    if (!maySubscribe(conn.user, conn.claims.subChannels, channel)) {
      throw new SinalError("forbidden", `not allowed to lock resources of "${channel.name}"`);
    }
    return channel;
  }

  frameHandlers(): FeatureHandlers {
    return {
      lock: async (conn, frame) => {
        const channel = this.channelFor(conn, frame.resource);
        const result = await this.locks.acquire(conn.tenant, frame.resource, conn.user, conn.id, Date.now(), this.ttlMs, this.maxPerUser);
        if (!result.ok) {
          const { lock } = result;
          if (lock === null) throw new SinalError("quota_exceeded", `at most ${result.quota} locks per user; release one first`);
          throw new SinalError("locked", `${lock.resource} is locked by ${lock.user} since ${new Date(lock.since).toISOString()}`, {
            lock: lockView(lock, true),
          });
        }
        if (!result.renewed) await this.publisher.publish(channel, "lock", lockView(result.lock, true));
        return { lock: lockView(result.lock, true), renewed: result.renewed };
      },
      unlock: async (conn, frame) => {
        const channel = this.channelFor(conn, frame.resource);
        const { released, heldBy } = await this.locks.release(conn.tenant, frame.resource, conn.user);
        if (heldBy) throw new SinalError("forbidden", `${heldBy.resource} is held by ${heldBy.user}`, { lock: lockView(heldBy, true) });
        if (released) await this.publisher.publish(channel, "unlock", lockView(released, false));
        return { released: released !== null };
      },
    };
  }

  closed(conn: Connection): void {
    this.locks.releaseConnection(conn.tenant, conn.id).then(
      (released) => {
        for (const lock of released) this.announceUnlock(conn.tenant, lock);
      },
      (err: unknown) => this.publisher.backgroundFailed(err, "lock_release"),
    );
  }

  /** One expiry pass at a time: a slow shared store must not pile sweeps up. */
  private expiring = false;

  sweep(now: number): void {
    if (this.expiring) return;
    this.expiring = true;
    this.locks
      .expire(now)
      .then(
        (expired) => {
          for (const { tenant, lock } of expired) this.announceUnlock(tenant, lock);
        },
        (err: unknown) => this.publisher.backgroundFailed(err, "lock_expire"),
      )
      .finally(() => (this.expiring = false));
  }

  private announceUnlock(tenant: string, lock: Lock): void {
    const channel = parseChannel(tenant, `sync:${lock.resource.slice(0, lock.resource.indexOf(":"))}`);
    this.publisher.publishInBackground(channel, "unlock", lockView(lock, false), "lock_release");
  }
}
