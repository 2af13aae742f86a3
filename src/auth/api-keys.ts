import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import type { Store } from "../store/store.ts";

/**
 * Tenant API keys: `sk_<16 hex id>_<secret>`. The id is looked up, the secret's SHA-256 is
 * compared in constant time. Keys carry 256 random bits, so a fast hash is the right tool here
 * (a password hash like argon2 would only slow every REST call down without adding safety).
 */
export interface ApiKeyPrincipal {
  tenant: string;
  /** Stored key id, or `env:<n>` for a key from SINAL_API_KEYS. */
  keyId: string;
}

const KEY_RE = /^sk_([0-9a-f]{16})_([A-Za-z0-9_-]{20,})$/;

function sha256(value: string): Buffer {
  return createHash("sha256").update(value).digest();
}

/** Creates and stores a new key for `tenant`; the returned key is shown once and never stored. */
export async function createApiKey(store: Store, tenant: string): Promise<{ id: string; key: string }> {
  const id = randomBytes(8).toString("hex");
  const secret = randomBytes(32).toString("base64url");
  await store.insertApiKey({ id, tenant, secretHash: sha256(secret).toString("hex"), createdAt: Date.now(), revokedAt: null });
  return { id, key: `sk_${id}_${secret}` };
}

export class ApiKeys {
  private readonly envKeys: { tenant: string; hash: Buffer }[];

  constructor(
    private readonly store: Store,
    envKeys: { tenant: string; key: string }[],
  ) {
    this.envKeys = envKeys.map(({ tenant, key }) => ({ tenant, hash: sha256(key) }));
  }

  /** Adds a key accepted for this process only (dev mode's demo key). */
  addEphemeral(tenant: string, key: string): void {
    this.envKeys.push({ tenant, hash: sha256(key) });
  }

  /** The tenant a presented key belongs to, or null for unknown, malformed or revoked keys. */
  async resolve(presented: string): Promise<ApiKeyPrincipal | null> {
    const presentedHash = sha256(presented);
    for (let i = 0; i < this.envKeys.length; i++) {
      if (timingSafeEqual(presentedHash, this.envKeys[i]!.hash)) return { tenant: this.envKeys[i]!.tenant, keyId: `env:${i + 1}` };
    }
    const match = KEY_RE.exec(presented);
    if (!match) return null;
    const stored = await this.store.findApiKey(match[1]!);
    if (!stored || stored.revokedAt !== null) return null;
    const secretHash = sha256(match[2]!);
    const expected = Buffer.from(stored.secretHash, "hex");
    if (expected.length !== secretHash.length || !timingSafeEqual(secretHash, expected)) return null;
    return { tenant: stored.tenant, keyId: stored.id };
  }
}
