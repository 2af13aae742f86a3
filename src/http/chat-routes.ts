import { Type } from "@sinclair/typebox";
import { Elysia } from "elysia";
import { parseChannel } from "../channel.ts";
import { roomView, type ChatService } from "../chat/chat-service.ts";
import type { RoomAccess } from "../chat/room-access.ts";
import { SinalError } from "../errors.ts";
import { validator } from "../validate.ts";
import { RoomId, UserId } from "../ids.ts";
import { checkDataSize } from "../data-size.ts";
import type { BodyReader } from "./json-body.ts";
import { pageQuery } from "./page-query.ts";
import type { RestAuth } from "./rest-auth.ts";
import type { Namespaces } from "../namespaces.ts";

const checkMessage = validator(
  Type.Object({
    sender: UserId,
    content: Type.String({ minLength: 1, maxLength: 16_000 }),
    client_msg_id: Type.Optional(Type.String({ minLength: 1, maxLength: 128 })),
  }),
);
const checkRoomChange = validator(
  Type.Object({
    status: Type.Optional(Type.Union([Type.Literal("open"), Type.Literal("closed")])),
    assigned_agent: Type.Optional(Type.Union([UserId, Type.Null()])),
    members: Type.Optional(Type.Array(UserId, { maxItems: 1000 })),
    meta: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    notify: Type.Optional(Type.Array(Type.String({ maxLength: 256 }), { maxItems: 50 })),
  }),
);
const checkRoomId = validator(RoomId);
const checkUserId = validator(UserId);


/**
 * Rooms for backends (API key or admin token): messages, history pages, announcements, unread
 * counts. A user with their own token may read the history and their own unread count of a room
 * they may use (RoomAccess.mayUseRoom: a private room's members, exact grants, admins), in their token's tenant.
 */
export function chatRoutes(auth: RestAuth, chat: ChatService, access: RoomAccess, bodies: BodyReader, maxDataBytes: number, namespaces: Namespaces) {
  const room = async (request: Request, id: string) => {
    const principal = await auth.authenticate(request);
    return { principal, channel: chat.roomChannel(principal.tenant, checkRoomId(id, "room")) };
  };
  const readableRoom = async (request: Request, id: string) => {
    const caller = await auth.authenticateBackendOrUser(request);
    const channel = chat.roomChannel(caller.tenant, checkRoomId(id, "room"));
    if (caller.user !== null && !(await access.mayUseRoom(caller.user, channel))) throw new SinalError("forbidden", `not a participant of room "${channel.id}"`);
    return { caller, channel };
  };
  return new Elysia({ name: "chat-routes" })
    .post(
      "/v1/rooms/:room/messages",
      async ({ request, params }) => {
        const { channel } = await room(request, params.room);
        const body = checkMessage(await bodies.json(request));
        return chat.send(channel, body.sender, body.content, body.client_msg_id ?? null);
      },
      { parse: "none" },
    )
    .get("/v1/rooms/:room/messages", async ({ request, params, query }) => {
      const { channel } = await readableRoom(request, params.room);
      const { before, limit } = pageQuery(query, { defaultLimit: 50, maxLimit: 200, idName: "a message id" });
      const messages = await chat.list(channel, before, limit);
      // A full page may have more behind it: `next_before` is the id to pass as `before`.
      return { messages, next_before: messages.length === limit ? messages[messages.length - 1]!.id : null };
    })
    .get("/v1/rooms/:room", async ({ request, params }) => {
      const { channel } = await room(request, params.room);
      const stored = await chat.getRoom(channel);
      if (stored === null) throw new SinalError("not_found", `no room "${channel.id}"`);
      return roomView(stored);
    })
    .put(
      "/v1/rooms/:room",
      async ({ request, params }) => {
        const { principal, channel } = await room(request, params.room);
        const body = checkRoomChange(await bodies.json(request));
        // `meta` is published in new_conversation/conversation_updated: bounded like any publication's data, before the room is stored.
        checkDataSize(body.meta, maxDataBytes, "meta");
        const notify = (body.notify ?? []).map((name, i) => {
          try {
            return parseChannel(principal.tenant, name, namespaces);
          } catch (err) {
            throw err instanceof SinalError ? new SinalError(err.code, `notify[${i}]: ${err.message}`) : err;
          }
        });
        const { room: stored, created } = await chat.announce(
          channel,
          { status: body.status, assignedAgent: body.assigned_agent, members: body.members, meta: body.meta },
          notify,
        );
        return { created, room: roomView(stored) };
      },
      { parse: "none" },
    )
    .get("/v1/rooms/:room/unread", async ({ request, params, query }) => {
      const { caller, channel } = await readableRoom(request, params.room);
      // A user's own count only: without `user` it is theirs, naming anyone else is refused.
      const me = caller.user?.user;
      const user = me !== undefined && query.user === undefined ? me : checkUserId(query.user, "user");
      if (me !== undefined && user !== me) throw new SinalError("forbidden", "a user token reads its own unread count only");
      return { room: channel.id, user, unread: await chat.unread(channel, user) };
    });
}
