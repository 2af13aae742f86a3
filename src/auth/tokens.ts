import { createPublicKey } from "node:crypto";
import { createSigner, createVerifier as createJwtVerifier, TokenError as JwtError } from "fast-jwt";
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
  subChannels: readonly string[];
  pubChannels: readonly string[];
  roles: readonly string[];
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

/**
 * What a verified channel token grants: one channel to one user (a `subscribe` frame's `token`,
 * docs/protocol.md "Client frames"). It carries `channel` and no grants; a connection token never
 * carries `channel`, so neither kind passes for the other.
 */
export interface ChannelClaims {
  user: string;
  tenant: string;
  channel: string;
  /** Unix seconds. */
  expiresAt: number;
}

export interface TokenVerifier {
  /** A connection token: returns the claims or throws TokenError. Synchronous: it runs on every upgrade. */
  verify(token: string): Claims;
  /** A channel token (same keys and algorithms): returns its claims or throws TokenError. */
  verifyChannel(token: string): ChannelClaims;
}

/**
 * Builds the verifier for the configured HS256 secret or RS256/ES256 public key.
 * fast-jwt verifies synchronously with node:crypto; WebCrypto-based verification (jose) cost
 * about 1 MB more resident memory per 1,000 connections here (measured, see BENCHMARKS.md).
 */
export function createVerifier(jwt: Config["jwt"]): TokenVerifier {
  let key: string;
  let algorithms: ("HS256" | "RS256" | "ES256")[];
  if (jwt.kind === "dev") throw new Error("dev mode: read the secret with openDevSecret (auth/dev-secret.ts) and pass it as kind secret");
  if (jwt.kind === "secret") {
    key = jwt.secret;
    algorithms = ["HS256"];
  } else {
    key = jwt.pem;
    algorithms = createPublicKey(jwt.pem).asymmetricKeyType === "ec" ? ["ES256"] : ["RS256"];
  }
  // Pinning the algorithms refuses `alg: none` and algorithm-confusion tokens.
  const verify = createJwtVerifier({ key, algorithms, requiredClaims: ["exp"], cache: false });
  const payloadOf = (token: string): Record<string, unknown> => {
    try {
      return verify(token);
    } catch (err) {
      throw describeJwtError(err);
    }
  };
  return {
    verify: (token) => claimsOf(payloadOf(token)),
    verifyChannel: (token) => channelClaimsOf(payloadOf(token)),
  };
}

function describeJwtError(err: unknown): TokenError {
  const code = err instanceof JwtError ? err.code : "";
  switch (code) {
    case JwtError.codes.expired:
      return new TokenError("expired", "token expired");
    case JwtError.codes.inactive:
      return new TokenError("not_yet_valid", "token not yet valid");
    case JwtError.codes.invalidSignature:
      return new TokenError("bad_signature", "token signature is invalid");
    case JwtError.codes.invalidAlgorithm:
      return new TokenError("alg_not_allowed", "token algorithm not allowed");
    case JwtError.codes.missingSignature:
      return new TokenError("alg_not_allowed", "token is unsigned (alg none is not allowed)");
    case JwtError.codes.missingRequiredClaim:
    case JwtError.codes.invalidClaimType:
    case JwtError.codes.invalidClaimValue: {
      const claim = /\b(exp|nbf|iat|sub|aud|iss|jti|nonce)\b/.exec((err as Error).message)?.[1] ?? "?";
      return new TokenError("bad_claims", `token claim "${claim}" is invalid or missing`);
    }
    default:
      return new TokenError("malformed", "token is malformed");
  }
}

/**
 * Equal claim lists are shared between connections: most users of a tenant carry the same
 * `sub_channels`, `pub_channels` and `roles`, and 10,000 connections should not hold 30,000 arrays.
 * Bounded: past the limit the cache starts over (lists stay correct, only less shared).
 */
const internedLists = new Map<string, readonly string[]>();
const EMPTY: readonly string[] = Object.freeze([]);

function stringList(value: unknown, claim: string): readonly string[] {
  if (value === undefined) return EMPTY;
  if (!Array.isArray(value) || !value.every((v) => typeof v === "string")) {
    throw new TokenError("bad_claims", `token claim "${claim}" must be a list of strings`);
  }
  const key = JSON.stringify(value); // unambiguous, unlike a join: ["a,b"] and ["a","b"] differ
  let shared = internedLists.get(key);
  if (shared === undefined) {
    if (internedLists.size >= 10_000) internedLists.clear();
    shared = Object.freeze([...value]);
    internedLists.set(key, shared);
  }
  return shared;
}

/** The `sub` and `tid` every token carries, checked for form. */
function subjectOf(payload: Record<string, unknown>): { user: string; tenant: string } {
  const { sub, tid } = payload;
  if (typeof sub !== "string" || sub === "" || sub.length > 128 || !/^[A-Za-z0-9_.@-]+$/.test(sub)) {
    throw new TokenError("bad_claims", 'token claim "sub" is missing or not a valid user id');
  }
  if (typeof tid !== "string" || !TENANT_RE.test(tid)) {
    throw new TokenError("bad_claims", 'token claim "tid" is missing or not a valid tenant id');
  }
  return { user: sub, tenant: tid };
}

function claimsOf(payload: Record<string, unknown>): Claims {
  const { exp, name } = payload;
  // A channel token handed to a browser for one room must not open connections (or call REST) on its own.
  if (payload.channel !== undefined) {
    throw new TokenError("bad_claims", 'token claim "channel" marks a channel token: it is sent with subscribe, it cannot authenticate a connection');
  }
  return {
    ...subjectOf(payload),
    expiresAt: exp as number,
    // Well-formed: half an emoji (a name cut by UTF-16 length) would reach stores and frames as a lone surrogate.
    name: typeof name === "string" ? name.toWellFormed() : undefined,
    subChannels: stringList(payload.sub_channels, "sub_channels"),
    pubChannels: stringList(payload.pub_channels, "pub_channels"),
    roles: stringList(payload.roles, "roles"),
  };
}

function channelClaimsOf(payload: Record<string, unknown>): ChannelClaims {
  const { channel, exp } = payload;
  if (typeof channel !== "string" || channel === "") {
    throw new TokenError("bad_claims", 'token claim "channel" is missing: a connection token is no channel token');
  }
  return { ...subjectOf(payload), channel, expiresAt: exp as number };
}

export interface MintOptions {
  tenant: string;
  user: string;
  ttlSec: number;
  name?: string;
  subChannels?: string[];
  pubChannels?: string[];
  roles?: string[];
  /** Makes a channel token for this one channel (then give no grants or roles). */
  channel?: string;
}

/** Signs an HS256 token (CLI `token`, dev mode, tests): a connection token, or with `channel` a channel token. */
export function mintToken(secret: string, opts: MintOptions): string {
  const now = Math.floor(Date.now() / 1000);
  const claims: Record<string, unknown> = { sub: opts.user, tid: opts.tenant, exp: now + opts.ttlSec };
  if (opts.name) claims.name = opts.name;
  if (opts.subChannels) claims.sub_channels = opts.subChannels;
  if (opts.pubChannels) claims.pub_channels = opts.pubChannels;
  if (opts.roles) claims.roles = opts.roles;
  if (opts.channel) claims.channel = opts.channel;
  return createSigner({ key: secret, algorithm: "HS256", clockTimestamp: now * 1000 })(claims);
}

/**
 * Reads the token from its three carriers in the order of docs/protocol.md "Connecting": Authorization header,
 * `bearer.<jwt>` subprotocol entry, `?token=`. The first carrier present wins.
 */
export function tokenFromRequest(request: Request, url: URL): string | null {
  const auth = request.headers.get("authorization");
  if (auth !== null) return bearerCredential(auth) ?? "";
  const protocols = request.headers.get("sec-websocket-protocol");
  if (protocols !== null) {
    for (const entry of protocols.split(",")) {
      const p = entry.trim();
      if (p.startsWith("bearer.")) return p.slice(7);
    }
  }
  return url.searchParams.get("token");
}

/**
 * The credential of an `Authorization: Bearer <credential>` header, or null for another scheme or
 * a malformed value. The scheme is case-insensitive (RFC 9110 11.1): `bearer x` is as good as
 * `Bearer x`, on the upgrade as on REST.
 *
 * @example
 * bearerCredential("bearer eyJ..."); // "eyJ..."
 * bearerCredential("Basic dTpw"); // null
 */
export function bearerCredential(header: string): string | null {
  return /^bearer +(\S+)\s*$/i.exec(header)?.[1] ?? null;
}
