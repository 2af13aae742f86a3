import { Elysia } from "elysia";
import { parseChannel } from "../channel.ts";
import type { RoomOccupancy } from "../chat/room-occupancy.ts";
import { SinalError } from "../errors.ts";
import type { Presence } from "../presence/presence.ts";
import type { RestAuth } from "./rest-auth.ts";
import type { Namespaces } from "../namespaces.ts";

/** `GET /v1/presence`: the tenant's users who are not offline, or those in one room (or channel with join_leave), with status. */
export function presenceRoutes(auth: RestAuth, presence: Presence, occupancy: RoomOccupancy, namespaces: Namespaces) {
  return new Elysia({ name: "presence-routes" }).get("/v1/presence", async ({ request, query }) => {
    const { tenant } = await auth.authenticate(request);
    const channel = parseChannel(tenant, query.channel ?? "presence", namespaces);
    if (channel.kind === "presence") return { channel: channel.name, users: presence.snapshot(tenant) };
    if (namespaces.get(channel.kind)?.joinLeave) return { channel: channel.name, users: presence.statusOf(tenant, occupancy.users(channel)) };
    throw new SinalError("bad_request", "channel: who is in a channel is kept for `presence` and for namespaces with join_leave (rooms)");
  });
}
