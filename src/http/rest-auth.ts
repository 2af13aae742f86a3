import type { ApiKeys } from "../auth/api-keys.ts";
import { bearerCredential, type Claims, type TokenVerifier } from "../auth/tokens.ts";
import { SinalError } from "../errors.ts";
import type { Metrics } from "../metrics.ts";
import type { InFlight } from "./in-flight.ts";

/** Who is calling the REST API, always bound to one tenant. */
export interface Principal {
  tenant: string;
  /** `key:<id>` for an API key, `jwt:<sub>` for a token. */
  actor: string;
  /** Which credential: a tenant's API key, a token with the admin role, or a user's own token (rooms they read). */
  via: "api_key" | "admin_token" | "user_token";
}

/**
 * A caller of a route that users may call too: a backend (`user` null: acts for any user of its
 * tenant) or a user's own token without the admin role (`user` set: acts for that user only).
 */
export interface Caller extends Principal {
  user: Claims | null;
}

/**
 * REST callers: `Authorization: Bearer sk_...` (a tenant API key) or `Bearer <jwt>` whose
 * `roles` include `admin` (acts for its `tid`). Anything else is 401/403, except on the routes a
 * user calls with their own token: `/v1/me/...` (authenticateUser) and a room's messages and
 * unread count (authenticateBackendOrUser).
 * Each authenticated request counts toward its credential's in-flight bound (InFlight): the API
 * key, or the token's tenant and subject.
 */
export class RestAuth {
  constructor(
    private readonly apiKeys: ApiKeys,
    private readonly verifier: TokenVerifier,
    private readonly metrics: Metrics,
    private readonly inFlight: InFlight,
  ) {}

  private credential(request: Request, what: string): string {
    const credential = bearerCredential(request.headers.get("authorization") ?? "");
    if (credential === null) {
      this.metrics.authFailed("rest_missing");
      throw new SinalError("unauthorized", `Authorization: Bearer <${what}> is required`);
    }
    return credential;
  }

  /** A user's own token (the `/v1/me` routes): any valid JWT, acting for its `sub` and `tid`. */
  authenticateUser(request: Request): Claims {
    const credential = this.credential(request, "user token");
    let claims: Claims;
    try {
      claims = this.verifier.verify(credential);
    } catch (err) {
      this.metrics.authFailed("rest_bad_token");
      throw err;
    }
    this.inFlight.enter(request, `${claims.tenant}\u0000jwt:${claims.user}`);
    return claims;
  }

  async authenticate(request: Request): Promise<Principal> {
    const { principal, claims } = await this.identify(request, "api key or admin token");
    if (claims !== null && !claims.roles.includes("admin")) {
      this.metrics.authFailed("rest_not_admin");
      throw new SinalError("forbidden", "the REST API needs an API key or a token with the admin role");
    }
    return this.admitted(request, principal);
  }

  /**
   * An API key, an admin token, or any user's own token (the routes a user may call for
   * themself, e.g. a room's history). The route decides what a user (`user` set) may see.
   */
  async authenticateBackendOrUser(request: Request): Promise<Caller> {
    const { principal, claims } = await this.identify(request, "api key or token");
    const isUser = claims !== null && !claims.roles.includes("admin");
    return { ...this.admitted(request, principal), user: isUser ? claims : null };
  }

  /** The credential's tenant and actor, with the token's claims when it is a JWT (null for an API key). */
  private async identify(request: Request, what: string): Promise<{ principal: Principal; claims: Claims | null }> {
    const credential = this.credential(request, what);
    const key = await this.apiKeys.resolve(credential);
    if (key !== null) return { principal: { tenant: key.tenant, actor: `key:${key.keyId}`, via: "api_key" }, claims: null };
    if (credential.split(".").length !== 3) {
      this.metrics.authFailed("rest_bad_key");
      throw new SinalError("unauthorized", "unknown or revoked API key");
    }
    let claims: Claims;
    try {
      claims = this.verifier.verify(credential);
    } catch (err) {
      this.metrics.authFailed("rest_bad_token");
      throw err;
    }
    const via = claims.roles.includes("admin") ? "admin_token" : "user_token";
    return { principal: { tenant: claims.tenant, actor: `jwt:${claims.user}`, via }, claims };
  }

  private admitted(request: Request, principal: Principal): Principal {
    this.inFlight.enter(request, `${principal.tenant}\u0000${principal.actor}`);
    return principal;
  }
}
