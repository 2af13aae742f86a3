import type { Claims } from "../auth/tokens.ts";
import { matchesAny, maySubscribe, type Channel } from "../channel.ts";
import type { Namespace, Namespaces } from "../namespaces.ts";
import type { ChannelAccess } from "../channel-access.ts";
import { REFUSAL_MAX_AGE_MS, type RoomMembers } from "./room-members.ts";

/** What the room rule reads of a token. */
export type RoomUser = Pick<Claims, "user" | "subChannels" | "roles">;

/**
 * Who may use a room: subscribe to it, send, type and mark read in it, read its history and
 * unread count over REST with their own token (docs/protocol.md "Chat"). The one rule for all of them.
 *
 * - A private room admits its members, users whose `sub_channels` name it exactly (`room:conv-7`,
 *   not `room:*` nor `*`), and users with the `admin` role. A room is private when it has members,
 *   and every room is when the `room` namespace has `members_only`.
 * - Any other room: the subscribe rule of channel.ts (a `sub_channels` pattern covering it).
 * - On a socket, a connection holding the room through a channel token may use it as well, while
 *   it holds it (`mayUseOn`): the token said this user may be in this room.
 * - A client `publish` into a private room needs this right besides its `pub_channels` grant.
 *
 * Members come from RoomMembers (cached; its comment says how fresh).
 */
export class RoomAccess implements ChannelAccess {
  private readonly room: Namespace;

  constructor(
    private readonly members: RoomMembers,
    namespaces: Namespaces,
  ) {
    this.room = namespaces.get("room")!;
  }

  mayUseRoom(who: RoomUser, room: Channel): boolean | Promise<boolean> {
    return this.admits(who, room, matchesAny(who.subChannels, room));
  }

  /** The private-room rule, or `ifPublic` for a room that is not private. */
  private admits(who: RoomUser, room: Channel, ifPublic: boolean): boolean | Promise<boolean> {
    // An exact grant admits whether the room is private or not: no members needed.
    if (who.subChannels.includes(room.name)) return true;
    const admits = (members: ReadonlySet<string>) => {
      const isPrivate = this.room.membersOnly || members.size > 0;
      return isPrivate ? members.has(who.user) || who.roles.includes("admin") : ifPublic;
    };
    const cached = this.members.get(room);
    if (cached instanceof Promise) return cached.then(admits);
    if (admits(cached)) return true;
    // A refusal rests on a recent read: a member added on another node a moment ago gets in.
    const fresh = this.members.get(room, REFUSAL_MAX_AGE_MS);
    return fresh instanceof Promise ? fresh.then(admits) : admits(fresh);
  }

  /** The room rule on a socket: the token's claims, or `heldByToken` (the connection subscribed the room with a channel token). */
  mayUseOn(who: RoomUser, room: Channel, heldByToken: boolean): boolean | Promise<boolean> {
    return heldByToken || this.mayUseRoom(who, room);
  }

  /** ChannelAccess: rooms follow the room rule, every other channel the subscribe rule of channel.ts. */
  maySubscribe(claims: Claims, channel: Channel, namespace: Namespace): boolean | Promise<boolean> {
    if (channel.kind === "room") return this.mayUseRoom(claims, channel);
    return maySubscribe(claims.user, claims.subChannels, channel, namespace);
  }

  /**
   * ChannelAccess: a client's `publish` into a private room also needs the right to use it (a
   * `pub_channels` grant of `room:*` does not let a non-member write there); into any other room
   * the grant alone, as before.
   */
  mayPublish(claims: Claims, channel: Channel, heldByToken: boolean): boolean | Promise<boolean> {
    if (channel.kind !== "room" || heldByToken) return true;
    return this.admits(claims, channel, true);
  }
}
