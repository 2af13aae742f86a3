import type { Channel } from "../channel.ts";
import type { ChatService } from "../chat/chat-service.ts";
import type { Typing } from "../chat/typing.ts";
import type { LockService } from "../locks/lock-service.ts";
import type { ChosenStatus, PresenceStatus } from "../presence/presence.ts";
import type { MaybePromise } from "../history/history.ts";
import type { FeatureHandlers } from "./handlers.ts";

/** What the `presence` frame asks of presence: the client chooses its status; the status now in effect. */
export interface StatusChoice {
  choose(peer: { tenant: string; user: string }, status: ChosenStatus): MaybePromise<PresenceStatus>;
}

export interface Features {
  chat: ChatService;
  typing: Typing;
  presence: StatusChoice;
  locks: LockService;
}

/**
 * The features' frames (docs/protocol.md "Client frames"): this edge reads what they need of the
 * connection (its user, grants, the channels it holds by token) and calls the services with
 * plain values; the services never see a socket.
 */
export function featureFrames({ chat, typing, presence, locks }: Features): FeatureHandlers {
  return {
    message: async (conn, frame) => {
      const room = await chat.roomFor(conn.tenant, conn.claims, frame.room, conn.tokenChannels);
      return { message: await chat.send(room, conn.user, frame.content, frame.client_msg_id ?? null) };
    },
    typing: (conn, frame) => {
      const update = (room: Channel) => {
        typing.update(conn, room, frame.typing, Date.now());
        return {};
      };
      const room = chat.roomFor(conn.tenant, conn.claims, frame.room, conn.tokenChannels);
      return room instanceof Promise ? room.then(update) : update(room);
    },
    read: async (conn, frame) => {
      const room = await chat.roomFor(conn.tenant, conn.claims, frame.room, conn.tokenChannels);
      return { message_id: await chat.markRead(room, conn.user, frame.message_id) };
    },
    presence: (conn, frame) => {
      const status = presence.choose(conn, frame.status);
      return status instanceof Promise ? status.then((chosen) => ({ status: chosen })) : { status };
    },
    lock: (conn, frame) => locks.lock(conn, conn.claims.subChannels, frame.resource),
    unlock: (conn, frame) => locks.unlock(conn, conn.claims.subChannels, frame.resource),
  };
}
