import { maySubscribe, parseChannel, type Channel } from "../channel.ts";
import { SinalError } from "../errors.ts";
import type { Publisher } from "../publisher.ts";
import type { Peer, PeerListener } from "../peer.ts";
import type { Lock, Locks } from "./locks.ts";

/** The `lock`/`unlock` data of docs/protocol.md "Events" (`unlock` without `expires_at`). */
function lockView(lock: Lock, withExpiry: boolean) {
  return { resource: lock.resource, user: lock.user, since: lock.since, ...(withExpiry ? { expires_at: lock.expiresAt } : {}) };
}

/**
 * The `lock` and `unlock` frames (taken per connection: a peer's client). A lock is announced as `lock` on `sync:<module>` when taken and
 * as `unlock` when released, expired, or its holding connection closes; renewals are silent.
 */
export class LockService implements PeerListener {
  constructor(
    private readonly locks: Locks,
    private readonly publisher: Publisher,
    private readonly ttlMs: number,
    /** Locks one user may hold at once (MAX_LOCKS_PER_USER). */
    private readonly maxPerUser = 100,
  ) {}

  /** `customer:77` -> `sync:customer`; the user must be allowed on that channel (`subChannels`: its grants). */
  private channelFor(peer: Peer, subChannels: readonly string[], resource: string): Channel {
    const channel = parseChannel(peer.tenant, `sync:${resource.slice(0, resource.indexOf(":"))}`);
    if (!maySubscribe(peer.user, subChannels, channel)) {
      throw new SinalError("forbidden", `not allowed to lock resources of "${channel.name}"`);
    }
    return channel;
  }

  /** The `lock` frame: takes or renews the lock for this peer (the lock is its connection's); the reply's fields. */
  async lock(peer: Peer, subChannels: readonly string[], resource: string): Promise<{ lock: ReturnType<typeof lockView>; renewed: boolean }> {
    const channel = this.channelFor(peer, subChannels, resource);
    const result = await this.locks.acquire(peer.tenant, resource, peer.user, peer.client, Date.now(), this.ttlMs, this.maxPerUser);
    if (!result.ok) {
      const { lock } = result;
      if (lock === null) throw new SinalError("quota_exceeded", `at most ${result.quota} locks per user; release one first`);
      throw new SinalError("locked", `${lock.resource} is locked by ${lock.user} since ${new Date(lock.since).toISOString()}`, {
        lock: lockView(lock, true),
      });
    }
    if (!result.renewed) await this.publisher.publish(channel, "lock", lockView(result.lock, true));
    return { lock: lockView(result.lock, true), renewed: result.renewed };
  }

  /** The `unlock` frame: releases the user's lock on `resource`; the reply's fields. */
  async unlock(peer: Peer, subChannels: readonly string[], resource: string): Promise<{ released: boolean }> {
    const channel = this.channelFor(peer, subChannels, resource);
    const { released, heldBy } = await this.locks.release(peer.tenant, resource, peer.user);
    if (heldBy) throw new SinalError("forbidden", `${heldBy.resource} is held by ${heldBy.user}`, { lock: lockView(heldBy, true) });
    if (released) await this.publisher.publish(channel, "unlock", lockView(released, false));
    return { released: released !== null };
  }

  closed(peer: Peer): void {
    this.locks.releaseConnection(peer.tenant, peer.client).then(
      (released) => {
        for (const lock of released) this.announceUnlock(peer.tenant, lock);
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
