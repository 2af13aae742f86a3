import { parseChannel, type Channel } from "../channel.ts";
import type { Publisher } from "../publisher.ts";
import type { Connection } from "../ws/connection.ts";
import type { ConnectionListener } from "../ws/hooks.ts";

/**
 * Who is in which room on this node, counted per user (not per tab): the first connection of a
 * user that subscribes to `room:<id>` publishes `user_joined`, the last one to leave `user_left`.
 * Both are ephemeral, like typing: no offset, never in history (a page reload costs no commit,
 * recovery never replays a stale join, and real messages are not pushed out of the history).
 */
export class RoomOccupancy implements ConnectionListener {
  /** topic -> user -> number of that user's connections subscribed. */
  private readonly rooms = new Map<string, Map<string, number>>();

  constructor(private readonly publisher: Publisher) {}

  /** Users currently in the room on this node. */
  users(channel: Channel): string[] {
    return [...(this.rooms.get(channel.topic)?.keys() ?? [])];
  }

  subscribed(conn: Connection, channel: Channel): void {
    if (channel.kind !== "room") return;
    let users = this.rooms.get(channel.topic);
    if (users === undefined) {
      users = new Map();
      this.rooms.set(channel.topic, users);
    }
    const count = users.get(conn.user) ?? 0;
    users.set(conn.user, count + 1);
    if (count === 0) this.publisher.publishEphemeral(channel, "user_joined", { room: channel.id, user: conn.user });
  }

  unsubscribed(conn: Connection, channel: Channel): void {
    if (channel.kind === "room") this.leave(conn, channel);
  }

  closed(conn: Connection): void {
    const roomPrefix = `${conn.tenant}/room:`;
    for (const topic of conn.topics) {
      if (topic.startsWith(roomPrefix)) this.leave(conn, parseChannel(conn.tenant, topic.slice(conn.tenant.length + 1)));
    }
  }

  private leave(conn: Connection, channel: Channel): void {
    const users = this.rooms.get(channel.topic);
    const count = users?.get(conn.user) ?? 0;
    if (users === undefined || count === 0) return;
    if (count > 1) {
      users.set(conn.user, count - 1);
      return;
    }
    users.delete(conn.user);
    if (users.size === 0) this.rooms.delete(channel.topic);
    this.publisher.publishEphemeral(channel, "user_left", { room: channel.id, user: conn.user });
  }
}
