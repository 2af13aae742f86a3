import { parseChannel, type Channel } from "../channel.ts";
import { SinalError } from "../errors.ts";
import type { Publisher } from "../publisher.ts";
import type { ChatStore, RoomChange, StoredMessage, StoredRoom } from "../store/chat-store.ts";
import type { RoomAccess, RoomUser } from "./room-access.ts";
import type { RoomMembers } from "./room-members.ts";

/** A message as clients see it (the `new_message` data of docs/protocol.md "Events"). */
export interface MessageView {
  id: number;
  room: string;
  sender: string;
  content: string;
  created_at: number;
  client_msg_id?: string;
}

export function messageView(m: StoredMessage): MessageView {
  const view: MessageView = { id: m.id, room: m.room, sender: m.sender, content: m.content, created_at: m.createdAt };
  if (m.clientMsgId !== null) view.client_msg_id = m.clientMsgId;
  return view;
}

export function roomView(room: StoredRoom) {
  return {
    id: room.id,
    status: room.status,
    assigned_agent: room.assignedAgent,
    members: room.members,
    meta: room.meta,
    created_at: room.createdAt,
    updated_at: room.updatedAt,
  };
}

/**
 * Rooms and messages: every message is stored (batched, committed) before `new_message` is
 * published on `room:<id>`; a resend with the same client_msg_id returns the stored message and
 * publishes nothing.
 */
export class ChatService {
  constructor(
    private readonly store: ChatStore,
    private readonly publisher: Publisher,
    private readonly access: RoomAccess,
    private readonly members: RoomMembers,
    /** Tells the other nodes a room's members changed (the cluster's control channel). */
    private readonly roomChanged?: (room: Channel) => void,
  ) {}

  /** The channel of a room id, or bad_request when the id is not a valid channel id. */
  roomChannel(tenant: string, room: string): Channel {
    return parseChannel(tenant, `room:${room}`);
  }

  /** Stored and published in one group commit with the room's history (see Publisher.publishMessage). */
  async send(channel: Channel, sender: string, content: string, clientMsgId: string | null): Promise<MessageView> {
    const newMessage = { tenant: channel.tenant, room: channel.id!, sender, content, clientMsgId, createdAt: Date.now() };
    const { message } = await this.publisher.publishMessage(channel, newMessage, messageView);
    return messageView(message);
  }

  async list(channel: Channel, before: number | null, limit: number): Promise<MessageView[]> {
    return (await this.store.listMessages(channel.tenant, channel.id!, before, limit)).map(messageView);
  }

  /** Moves the user's receipt to `messageId` (never back) and publishes `message_read`; not_found for an id that is no message of the room. */
  async markRead(channel: Channel, user: string, messageId: number): Promise<number> {
    const furthest = await this.store.markRead(channel.tenant, channel.id!, user, messageId, Date.now());
    if (furthest === null) throw new SinalError("not_found", `no message ${messageId} in room "${channel.id}"`);
    await this.publisher.publish(channel, "message_read", { room: channel.id, message_id: furthest, user });
    return furthest;
  }

  unread(channel: Channel, user: string): Promise<number> {
    return this.store.unreadCount(channel.tenant, channel.id!, user);
  }

  getRoom(channel: Channel): Promise<StoredRoom | null> {
    return this.store.getRoom(channel.tenant, channel.id!);
  }

  /**
   * A backend creates or changes a conversation: stored, then announced as `new_conversation`
   * (when created) or `conversation_updated` on the room and on each of `notify` (e.g. an agents'
   * `dept:support` channel), as the old helpers did.
   */
  async announce(channel: Channel, change: RoomChange, notify: Channel[]): Promise<{ room: StoredRoom; created: boolean }> {
    const result = await this.store.upsertRoom(channel.tenant, channel.id!, change, Date.now());
    // Before anyone hears of the change: whoever reacts to it is judged on the new members.
    this.members.remember(channel, result.room.members);
    // Other nodes forget what they read of the members (best effort: their cache lasts 5 s at most).
    this.roomChanged?.(channel);
    const event = result.created ? "new_conversation" : "conversation_updated";
    const data = roomView(result.room);
    const targets = [channel, ...notify.filter((c) => c.topic !== channel.topic)];
    for (const target of targets) await this.publisher.publish(target, event, data);
    return result;
  }

  /**
   * The room a user acts in from a socket (the `message`, `typing` and `read` frames), or
   * `forbidden` unless it may use it (RoomAccess.mayUseOn). `heldByToken`: topics the connection
   * holds through a channel token.
   */
  roomFor(tenant: string, who: RoomUser, room: string, heldByToken: ReadonlySet<string> | null): Channel | Promise<Channel> {
    const channel = this.roomChannel(tenant, room);
    const admit = (allowed: boolean) => {
      if (!allowed) throw new SinalError("forbidden", `not a participant of room "${room}"`);
      return channel;
    };
    const allowed = this.access.mayUseOn(who, channel, heldByToken?.has(channel.topic) === true);
    return allowed instanceof Promise ? allowed.then(admit) : admit(allowed);
  }
}
