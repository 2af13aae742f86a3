import { parseChannel, type Channel } from "../channel.ts";
import { Namespaces } from "../namespaces.ts";
import type { Publisher } from "../publisher.ts";
import type { Connection } from "../ws/connection.ts";
import type { ConnectionListener } from "../ws/hooks.ts";

/**
 * Who is in which room (or channel of a namespace with `join_leave`) on this node, counted per user
 * (not per tab): the first connection of a user that subscribes publishes `user_joined`, the last
 * one to leave `user_left`.
 * Both are ephemeral, like typing: no offset, never in history (a page reload costs no commit,
 * recovery never replays a stale join, and real messages are not pushed out of the history).
 */
export class RoomOccupancy implements ConnectionListener {
  /** topic -> user -> number of that user's connections subscribed. */
  private readonly rooms = new Map<string, Map<string, number>>();

  constructor(
    private readonly publisher: Publisher,
    private readonly namespaces: Namespaces = Namespaces.builtIn(),
  ) {}

  /** Channels whose namespace announces joins and leaves (`join_leave`; built-in: rooms). */
  private announces(channel: Channel): boolean {
    return this.namespaces.get(channel.kind)?.joinLeave === true;
  }

  /** Users currently in the room on this node. */
  users(channel: Channel): string[] {
    return [...(this.rooms.get(channel.topic)?.keys() ?? [])];
  }

  subscribed(conn: Connection, channel: Channel): void {
    if (!this.announces(channel)) return;
    let users = this.rooms.get(channel.topic);
    if (users === undefined) {
      users = new Map();
      this.rooms.set(channel.topic, users);
    }
    const count = users.get(conn.user) ?? 0;
    users.set(conn.user, count + 1);
    if (count === 0) this.publisher.publishEphemeral(channel, "user_joined", who(channel, conn.user));
  }

  unsubscribed(conn: Connection, channel: Channel): void {
    if (this.announces(channel)) this.leave(conn, channel);
  }

  closed(conn: Connection): void {
    const prefix = `${conn.tenant}/`;
    for (const topic of conn.topics) {
      const ns = this.namespaces.ofTopic(topic);
      if (ns?.joinLeave) this.leave(conn, parseChannel(conn.tenant, topic.slice(prefix.length), this.namespaces));
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
    this.publisher.publishEphemeral(channel, "user_left", who(channel, conn.user));
  }
}

/** The data of `user_joined` / `user_left`: `{room, user}` in a room, `{channel, user}` elsewhere. */
function who(channel: Channel, user: string): { room: string | null; user: string } | { channel: string; user: string } {
  return channel.kind === "room" ? { room: channel.id, user } : { channel: channel.name, user };
}
