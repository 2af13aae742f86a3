import { Elysia } from "elysia";
import { SinalError } from "../errors.ts";
import type { RestAuth } from "./rest-auth.ts";

/** User ids as tokens carry them (`sub`). */
const USER_RE = /^[A-Za-z0-9_.@-]{1,128}$/;

/**
 * `POST /v1/users/:user/disconnect` (a backend's API key, or an admin token): closes every
 * connection of the user in the caller's tenant, on every node (4001: it must come back with a new
 * token, which the backend may refuse). Answers 202 once the request is on its way to every node.
 */
export function userRoutes(auth: RestAuth, disconnect: (tenant: string, user: string) => Promise<void>) {
  return new Elysia({ name: "user-routes" }).post("/v1/users/:user/disconnect", async ({ request, params, set }) => {
    const { tenant } = await auth.authenticate(request);
    if (!USER_RE.test(params.user)) throw new SinalError("bad_request", "user: expected 1 to 128 of A-Z a-z 0-9 _ . @ -");
    try {
      await disconnect(tenant, params.user);
    } catch {
      throw new SinalError("unavailable", "the other nodes could not be reached; try again");
    }
    set.status = 202;
    return { user: params.user, disconnect: "sent" };
  });
}
