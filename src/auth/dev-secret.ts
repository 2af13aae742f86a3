import { randomBytes } from "node:crypto";
import { linkSync, mkdirSync, readFileSync, unlinkSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { ConfigError } from "../config.ts";

/**
 * Dev mode's HS256 secret (neither JWT_SECRET nor JWT_PUBLIC_KEY set). It lives in a file beside
 * the sqlite file (`<dir>/dev-secret`, mode 0600, see config.ts), so tokens signed before a
 * restart still verify after it, and `sinal token` signs with the same secret as the server.
 * `file` null (`sqlite::memory:`): a random secret that lives as long as the process.
 */
export interface DevSecret {
  secret: string;
  file: string | null;
  /** Made by this call (false: read from an earlier start, or random per process). */
  created: boolean;
}

const MIN_LENGTH = 32;

/** The dev secret of `file` for `serve`: read, or made and written on first use. */
export function openDevSecret(file: string | null): DevSecret {
  if (file === null) return { secret: newSecret(), file: null, created: false };
  const existing = readIfPresent(file);
  if (existing !== null) return { secret: existing, file, created: false };
  const secret = newSecret();
  mkdirSync(dirname(file), { recursive: true });
  // Written whole under a temporary name, then linked into place: the link fails if another
  // process made the file meanwhile, and nobody ever reads a half-written secret.
  const temporary = `${file}.${process.pid}.tmp`;
  try {
    writeFileSync(temporary, `${secret}\n`, { mode: 0o600 });
    linkSync(temporary, file);
  } catch (err) {
    if ((err as { code?: string }).code === "EEXIST") return { secret: readDevSecret(file), file, created: false };
    throw new ConfigError("JWT_SECRET", `dev mode keeps its secret in ${file}, which cannot be written (${describe(err)}); set JWT_SECRET, or let this user write there`);
  } finally {
    try {
      unlinkSync(temporary);
    } catch {
      // never made
    }
  }
  return { secret, file, created: true };
}

/** The dev secret of `file` for `sinal token`; a ConfigError naming JWT_SECRET when there is none. */
export function readDevSecret(file: string | null): string {
  if (file === null) {
    throw new ConfigError("JWT_SECRET", "not set, and DATABASE_URL=sqlite::memory: keeps no dev secret (a dev-mode server's secret then lives in its process only); set the same JWT_SECRET here and on the server");
  }
  const secret = readIfPresent(file);
  if (secret === null) {
    throw new ConfigError("JWT_SECRET", `not set, and there is no dev secret at ${file} yet: start \`sinal serve\` in dev mode with this DATABASE_URL first (it makes one), or set JWT_SECRET`);
  }
  return secret;
}

/** The secret in `file`, or null when there is no such file. */
function readIfPresent(file: string): string | null {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    if ((err as { code?: string }).code === "ENOENT") return null;
    throw new ConfigError("JWT_SECRET", `not set, and the dev secret in ${file} cannot be read (${describe(err)})`);
  }
  const secret = text.trim();
  if (secret.length < MIN_LENGTH) {
    throw new ConfigError("JWT_SECRET", `not set, and the dev secret in ${file} is shorter than ${MIN_LENGTH} characters; delete the file (the next dev-mode start makes a new one) or set JWT_SECRET`);
  }
  return secret;
}

function newSecret(): string {
  return randomBytes(32).toString("base64url");
}

function describe(err: unknown): string {
  return (err as { code?: string }).code ?? (err instanceof Error ? err.message : String(err));
}
