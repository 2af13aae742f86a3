import type { ApiKeys } from "../auth/api-keys.ts";
import { bearerCredential, type Claims, type TokenVerifier } from "../auth/tokens.ts";
import { SinalError } from "../errors.ts";
import type { Metrics } from "../metrics.ts";
import type { InFlight } from "./in-flight.ts";

/** Who is calling the REST API, always bound to one tenant. */
export interface Principal {
  tenant: string;
  /** `key:<id>` for an API key, `jwt:<sub>` for an admin token. */
  actor: string;
  /** Which credential: a tenant's API key, or a token with the admin role. */
  via: "api_key" | "admin_token";
}

/**
 * REST callers: `Authorization: Bearer sk_...` (a tenant API key) or `Bearer <jwt>` whose
 * `roles` include `admin` (acts for its `tid`). Anything else is 401/403.
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
    const credential = this.credential(request, "api key or admin token");
    const key = await this.apiKeys.resolve(credential);
    if (key !== null) return this.admitted(request, { tenant: key.tenant, actor: `key:${key.keyId}`, via: "api_key" });
    if (credential.split(".").length !== 3) {
      this.metrics.authFailed("rest_bad_key");
      throw new SinalError("unauthorized", "unknown or revoked API key");
    }
    let claims;
    try {
      claims = this.verifier.verify(credential);
    } catch (err) {
      this.metrics.authFailed("rest_bad_token");
      throw err;
    }
    if (!claims.roles.includes("admin")) {
      this.metrics.authFailed("rest_not_admin");
      throw new SinalError("forbidden", "the REST API needs an API key or a token with the admin role");
    }
    return this.admitted(request, { tenant: claims.tenant, actor: `jwt:${claims.user}`, via: "admin_token" });
  }

  private admitted(request: Request, principal: Principal): Principal {
    this.inFlight.enter(request, `${principal.tenant}\u0000${principal.actor}`);
    return principal;
  }
}
