import { createPublicKey, type KeyObject } from "node:crypto";
import { errors as joseErrors, jwtVerify, SignJWT, type JWTPayload } from "jose";
import type { Config } from "../config.ts";
import { TENANT_RE } from "../config.ts";
import { SinalError } from "../errors.ts";

/** What a verified token grants. */
export interface Claims {
  user: string;
  tenant: string;
  /** Unix seconds. */
  expiresAt: number;
  name?: string;
  subChannels: string[];
  pubChannels: string[];
  roles: string[];
}

/** A refused token: `unauthorized` for the client, plus a short `reason` for the auth failure metric. */
export class TokenError extends SinalError {
  constructor(
    readonly reason: "expired" | "not_yet_valid" | "bad_signature" | "alg_not_allowed" | "bad_claims" | "malformed",
    message: string,
  ) {
    super("unauthorized", message);
  }
}

export interface TokenVerifier {
  /** Resolves the claims or throws TokenError. */
  verify(token: string): Promise<Claims>;
}

/** Builds the verifier for the configured HS256 secret or RS256/ES256 public key. */
export function createVerifier(jwt: Config["jwt"]): TokenVerifier {
  let key: Uint8Array | KeyObject;
  let algorithms: string[];
  if (jwt.kind === "secret") {
    key = new TextEncoder().encode(jwt.secret);
    algorithms = ["HS256"];
  } else {
    const publicKey = createPublicKey(jwt.pem);
    key = publicKey;
    algorithms = publicKey.asymmetricKeyType === "ec" ? ["ES256"] : ["RS256"];
  }
  return {
    async verify(token: string): Promise<Claims> {
      let payload: JWTPayload;
      try {
        // Pinning the algorithms refuses `alg: none` and algorithm-confusion tokens.
        ({ payload } = await jwtVerify(token, key, { algorithms, requiredClaims: ["exp"] }));
      } catch (err) {
        throw describeJoseError(err);
      }
      return claimsOf(payload);
    },
  };
}

function describeJoseError(err: unknown): TokenError {
  if (err instanceof joseErrors.JWTExpired) return new TokenError("expired", "token expired");
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    if (err.claim === "nbf") return new TokenError("not_yet_valid", "token not yet valid");
    return new TokenError("bad_claims", `token claim "${err.claim}" is invalid or missing`);
  }
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return new TokenError("alg_not_allowed", "token algorithm not allowed");
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return new TokenError("bad_signature", "token signature is invalid");
  return new TokenError("malformed", "token is malformed");
}

function stringList(value: unknown, claim: string): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || !value.every((v) => typeof v === "string")) {
    throw new TokenError("bad_claims", `token claim "${claim}" must be a list of strings`);
  }
  return value;
}

function claimsOf(payload: JWTPayload): Claims {
  const { sub, tid, exp, name } = payload as JWTPayload & { tid?: unknown; name?: unknown };
  if (typeof sub !== "string" || sub === "" || sub.length > 128 || !/^[A-Za-z0-9_.@-]+$/.test(sub)) {
    throw new TokenError("bad_claims", 'token claim "sub" is missing or not a valid user id');
  }
  if (typeof tid !== "string" || !TENANT_RE.test(tid)) {
    throw new TokenError("bad_claims", 'token claim "tid" is missing or not a valid tenant id');
  }
  return {
    user: sub,
    tenant: tid,
    expiresAt: exp as number,
    name: typeof name === "string" ? name : undefined,
    subChannels: stringList(payload.sub_channels, "sub_channels"),
    pubChannels: stringList(payload.pub_channels, "pub_channels"),
    roles: stringList(payload.roles, "roles"),
  };
}

export interface MintOptions {
  tenant: string;
  user: string;
  ttlSec: number;
  name?: string;
  subChannels?: string[];
  pubChannels?: string[];
  roles?: string[];
}

/** Signs an HS256 token (CLI `token`, dev mode, tests). */
export async function mintToken(secret: string, opts: MintOptions): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const claims: Record<string, unknown> = { tid: opts.tenant };
  if (opts.name) claims.name = opts.name;
  if (opts.subChannels) claims.sub_channels = opts.subChannels;
  if (opts.pubChannels) claims.pub_channels = opts.pubChannels;
  if (opts.roles) claims.roles = opts.roles;
  return new SignJWT(claims)
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setSubject(opts.user)
    .setIssuedAt(now)
    .setExpirationTime(now + opts.ttlSec)
    .sign(new TextEncoder().encode(secret));
}

/**
 * Reads the token from its three carriers in PROTOCOL.md order: Authorization header,
 * `bearer.<jwt>` subprotocol entry, `?token=`. The first carrier present wins.
 */
export function tokenFromRequest(request: Request, url: URL): string | null {
  const auth = request.headers.get("authorization");
  if (auth !== null) return auth.startsWith("Bearer ") ? auth.slice(7).trim() : "";
  const protocols = request.headers.get("sec-websocket-protocol");
  if (protocols !== null) {
    for (const entry of protocols.split(",")) {
      const p = entry.trim();
      if (p.startsWith("bearer.")) return p.slice(7);
    }
  }
  return url.searchParams.get("token");
}
