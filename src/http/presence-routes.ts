import { Elysia } from "elysia";
import { parseChannel } from "../channel.ts";
import { SinalError } from "../errors.ts";
import type { Presence } from "../presence/presence.ts";
import type { RestAuth } from "./rest-auth.ts";
import type { Namespaces } from "../namespaces.ts";

/** `GET /v1/presence`: the tenant's users who are not offline, or the members of one channel of a namespace with `presence` (rooms), with status. */
export function presenceRoutes(auth: RestAuth, presence: Presence, namespaces: Namespaces) {
  return new Elysia({ name: "presence-routes" }).get("/v1/presence", async ({ request, query }) => {
    const { tenant } = await auth.authenticate(request);
    const channel = parseChannel(tenant, query.channel ?? "presence", namespaces);
    if (channel.kind === "presence") return { channel: channel.name, users: await presence.snapshot(tenant) };
    if (namespaces.get(channel.kind)?.presence) return { channel: channel.name, users: await presence.members(channel) };
    throw new SinalError("bad_request", `channel: who is in a channel is kept for \`presence\` and for namespaces with the presence option (rooms); "${channel.kind}" has none`);
  });
}
