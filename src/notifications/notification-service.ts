import { userChannel, type Channel } from "../channel.ts";
import type { Position, Publisher } from "../publisher.ts";
import type { NotificationStore, StoredNotification } from "../store/notification-store.ts";
import type { Peer, PeerListener } from "../peer.ts";

export interface NotificationInput {
  category: string;
  title: string;
  message: string;
  data?: unknown;
  action?: string;
}

/** The `notification` data of docs/protocol.md "Events" (a stored one, with its id). */
export function notificationView(n: StoredNotification) {
  return {
    id: n.id,
    category: n.category,
    title: n.title,
    message: n.message,
    ...(n.data === undefined ? {} : { data: n.data }),
    ...(n.action === null ? {} : { action: n.action }),
    created_at: n.createdAt,
  };
}

export type DeliveryStatus = "pushed" | "pending" | "muted";

/**
 * Notifications to users: stored per user, then pushed on `user:<id>` as `notification` when the
 * user is connected; a user who is not gets the pending ones pushed once at the next connect.
 * A muted category is stored (listable) and never pushed.
 * Which users have pending notifications is asked of the store at each connect (one indexed
 * query), never kept in this process: any node a user connects to finds them, and a node that
 * restarts loads nothing first.
 */
export class NotificationService implements PeerListener {
  /** Users whose pending notifications are being pushed, so two tabs opening at once push once. */
  private readonly delivering = new Set<string>();
  constructor(
    private readonly store: NotificationStore,
    private readonly publisher: Publisher,
    /** On a cluster, asked of the shared connection counts: a user on another node is connected too. */
    private readonly isConnected: (tenant: string, user: string) => boolean | Promise<boolean>,
  ) {}

  async sendToUsers(tenant: string, users: readonly string[], input: NotificationInput): Promise<{ user: string; id: number; status: DeliveryStatus }[]> {
    const now = Date.now();
    const unique = [...new Set(users)];
    const muted = await Promise.all(unique.map(async (u) => (await this.store.mutedCategories(tenant, u)).includes(input.category)));
    const stored = await this.store.insert(
      tenant,
      unique.map((user, i) => ({
        user,
        category: input.category,
        title: input.title,
        message: input.message,
        data: input.data,
        action: input.action ?? null,
        createdAt: now,
        // Muted: kept for the list, never to be pushed.
        deliveredAt: muted[i] ? now : null,
      })),
    );
    const out: { user: string; id: number; status: DeliveryStatus }[] = [];
    for (const n of stored) {
      if (n.deliveredAt !== null) out.push({ user: n.user, id: n.id, status: "muted" });
      else if (await this.isConnected(tenant, n.user)) {
        await this.push(tenant, n.user, [n]);
        out.push({ user: n.user, id: n.id, status: "pushed" });
      } else out.push({ user: n.user, id: n.id, status: "pending" });
    }
    return out;
  }

  /** A notification to everyone on a channel (e.g. `dept:sales`): published, not stored per user. */
  sendToChannel(channel: Channel, input: NotificationInput): Promise<Position> {
    const view = { category: input.category, title: input.title, message: input.message, ...(input.data === undefined ? {} : { data: input.data }), ...(input.action ? { action: input.action } : {}), created_at: Date.now() };
    return this.publisher.publish(channel, "notification", view);
  }

  opened(peer: Peer): void {
    // Those not pushed stay pending and are pushed at the next connect.
    void this.deliverPending(peer.tenant, peer.user).catch((err) => this.publisher.backgroundFailed(err, "pending_notifications"));
  }

  private async deliverPending(tenant: string, user: string): Promise<void> {
    const key = `${tenant}\u0000${user}`;
    if (this.delivering.has(key)) return;
    this.delivering.add(key);
    try {
      for (;;) {
        const pending = await this.store.pending(tenant, user, 100);
        if (pending.length === 0) return;
        await this.push(tenant, user, pending);
      }
    } finally {
      this.delivering.delete(key);
    }
  }

  /** Marks delivered first: a notification another path already pushed is not pushed twice. */
  private async push(tenant: string, user: string, list: readonly StoredNotification[]): Promise<void> {
    const claimed = new Set(await this.store.markDelivered(tenant, user, list.map((n) => n.id), Date.now()));
    const channel = userChannel(tenant, user);
    for (const n of list) if (claimed.has(n.id)) await this.publisher.publish(channel, "notification", notificationView(n));
  }
}
