import { parseArgs as nodeParseArgs, type ParseArgsConfig } from "node:util";
import { createApiKey } from "../auth/api-keys.ts";
import { readDevSecret } from "../auth/dev-secret.ts";
import { mintToken } from "../auth/tokens.ts";
import { parseChannel } from "../channel.ts";
import { ConfigError, TENANT_RE, type Config } from "../config.ts";
import { SinalError } from "../errors.ts";
import { Namespaces } from "../namespaces.ts";
import { databaseLabel, openConfiguredStore } from "../backends.ts";

/** Output of a CLI command (never the logger: these lines are the command's answer). */
const out = (line: string) => process.stdout.write(`${line}\n`);

const ENV_NOTE = "Configuration is read from the environment: see README.md.";

export const HELP = `sinal: realtime WebSocket gateway

Usage: sinal [command] [options]

Commands:
  serve                               run the server (default)
  migrate                             bring the database schema up to date
  keys create --tenant <t>            create an API key (printed alone on the last line)
  keys list --tenant <t>              list a tenant's keys (ids, never secrets)
  keys revoke --id <id>               revoke an API key
  token --tenant <t> --user <u> [--ttl 1h] [--name <n>] [--sub-channels 'room:*,dept:sales']
        [--pub-channels 'room:*'] [--roles admin]
                                      print a JWT signed with JWT_SECRET, or in dev mode with the
                                      server's dev secret (development and tests)
  token --tenant <t> --user <u> --channel <name> [--ttl 1h]
                                      print a channel token: subscribe carries it to join that one
                                      channel (a private room) without a grant
  health                              GET /health on this node (PORT, HOST); exit 0 when it answers 200
                                      (the container HEALTHCHECK: the image has no curl)
  <command> --help                    that command's usage
  --help, --version

${ENV_NOTE}`;

/** What `sinal <command> --help` prints (exit 0, no configuration read). */
export const USAGE: Record<string, string> = {
  serve: `Usage: sinal serve

Runs the server until SIGTERM or SIGINT, then drains (clients get 1001) and exits 0.
Without JWT_SECRET and JWT_PUBLIC_KEY it starts in dev mode. ${ENV_NOTE}`,
  migrate: `Usage: sinal migrate

Creates or brings up to date the schema of the sqlite file of DATABASE_URL (serve does it too).`,
  keys: `Usage: sinal keys create --tenant <t>     create an API key (printed alone on the last line)
       sinal keys list --tenant <t>       list a tenant's keys (ids, never secrets)
       sinal keys revoke --id <id>        revoke an API key

Keys live in the sqlite file of DATABASE_URL; a running server sees changes at once.`,
  token: `Usage: sinal token --tenant <t> --user <u> [options]
       sinal token --tenant <t> --user <u> --channel <name> [--ttl 1h]

Prints a JWT signed with JWT_SECRET (development and tests). Without JWT_SECRET it signs with
the dev secret a dev-mode server keeps beside the sqlite file of DATABASE_URL (<dir>/dev-secret),
so a dev-mode server accepts it; it says so on stderr.

With --channel it prints a channel token instead (claims sub, tid, channel, exp): a subscribe
frame carries it as "token" to join that one channel (a private room) without a grant. It
cannot open a connection, and it takes no grants, roles or name.

Options:
  --tenant <t>            tenant id (claim tid), required
  --user <u>              user id (claim sub), required
  --ttl <duration>        lifetime: 90s, 15m, 1h (default), 7d
  --name <n>              display name (claim name)
  --sub-channels <list>   channels it may subscribe to, comma separated ('room:*,dept:sales')
  --pub-channels <list>   channels it may publish to ('room:*')
  --roles <list>          roles ('admin' may use the REST API)
  --channel <name>        a channel token for this channel ('room:conv-7')`,
  health: `Usage: sinal health

GET /health on this node (PORT, HOST); exit 0 when it answers 200 within 2 s, else 1 with the
reason. The container HEALTHCHECK runs it (the image has no curl).`,
};

/** Commands without arguments refuse any, rather than ignore a mistyped option. */
export function expectNoArguments(command: string, args: string[]): void {
  if (args.length > 0) throw new ConfigError("arguments", `sinal ${command} takes no arguments, got "${args[0]}"; see sinal ${command} --help`);
}

/** node:util parseArgs, with its TypeError for an unknown or malformed option turned into a ConfigError. */
function parseArgs<T extends ParseArgsConfig>(config: T) {
  try {
    return nodeParseArgs(config);
  } catch (err) {
    throw new ConfigError("arguments", err instanceof Error ? err.message : String(err));
  }
}

export async function migrateCommand(config: Config): Promise<void> {
  const store = await openConfiguredStore(config.database);
  await store.close();
  out(`database ${databaseLabel(config.database)} is up to date`);
}

export async function keysCommand(config: Config, args: string[]): Promise<void> {
  const [action, ...rest] = args;
  const { values } = parseArgs({ args: rest, options: { tenant: { type: "string" }, id: { type: "string" } }, strict: true });
  const store = await openConfiguredStore(config.database);
  try {
    if (action === "create") {
      const tenant = requireTenant(values.tenant);
      const { id, key } = await createApiKey(store, tenant);
      out(`created API key ${id} for tenant ${tenant}; it is shown once, store it now:`);
      out(key);
    } else if (action === "list") {
      const tenant = requireTenant(values.tenant);
      for (const k of await store.listApiKeys(tenant)) {
        out(`${k.id}\tcreated ${new Date(k.createdAt).toISOString()}\t${k.revokedAt ? `revoked ${new Date(k.revokedAt).toISOString()}` : "active"}`);
      }
    } else if (action === "revoke") {
      if (!values.id) throw new ConfigError("--id", "keys revoke needs --id <key id>");
      if (!(await store.revokeApiKey(values.id, Date.now()))) throw new ConfigError("--id", `no API key ${values.id}`);
      out(`revoked API key ${values.id}`);
    } else {
      throw new ConfigError("keys", "expected keys create|list|revoke");
    }
  } finally {
    await store.close();
  }
}

export async function tokenCommand(config: Config, args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      tenant: { type: "string" },
      user: { type: "string" },
      ttl: { type: "string", default: "1h" },
      name: { type: "string" },
      "sub-channels": { type: "string" },
      "pub-channels": { type: "string" },
      roles: { type: "string" },
      channel: { type: "string" },
    },
    strict: true,
  });
  const tenant = requireTenant(values.tenant);
  if (!values.user) throw new ConfigError("--user", "token needs --user <id>");
  if (values.channel !== undefined) {
    const extra = (["name", "sub-channels", "pub-channels", "roles"] as const).find((o) => values[o] !== undefined);
    if (extra !== undefined) throw new ConfigError("--channel", `a channel token carries only sub, tid, channel and exp: drop --${extra}`);
    const channel = checkChannel(tenant, values.channel, config);
    out(mintToken(signingSecret(config.jwt), { tenant, user: values.user, ttlSec: parseDuration(values.ttl), channel }));
    return;
  }
  const list = (v: string | undefined) => (v === undefined ? undefined : v.split(",").map((s) => s.trim()).filter(Boolean));
  out(
    mintToken(signingSecret(config.jwt), {
      tenant,
      user: values.user,
      ttlSec: parseDuration(values.ttl),
      name: values.name,
      subChannels: list(values["sub-channels"]),
      pubChannels: list(values["pub-channels"]),
      roles: list(values.roles),
    }),
  );
}

/** JWT_SECRET, or in dev mode the server's dev secret (said on stderr: stdout is the token alone). */
function signingSecret(jwt: Config["jwt"]): string {
  if (jwt.kind === "secret") return jwt.secret;
  if (jwt.kind === "public-key") {
    throw new ConfigError("JWT_PUBLIC_KEY", "a public key cannot sign: mint tokens where the private key is, or set JWT_SECRET instead");
  }
  const secret = readDevSecret(jwt.secretFile);
  process.stderr.write(`sinal: no JWT_SECRET: signing with the dev-mode secret in ${jwt.secretFile}; only a dev-mode server on this DATABASE_URL accepts the token\n`);
  return secret;
}

/** A channel of this deployment's namespaces (SINAL_NAMESPACES included), or a ConfigError naming --channel. */
function checkChannel(tenant: string, name: string, config: Config): string {
  try {
    return parseChannel(tenant, name, new Namespaces(config.namespaces)).name;
  } catch (err) {
    if (err instanceof SinalError) throw new ConfigError("--channel", err.message);
    throw err;
  }
}

function requireTenant(tenant: string | undefined): string {
  if (!tenant || !TENANT_RE.test(tenant)) throw new ConfigError("--tenant", "expected a tenant id matching ^[a-z0-9][a-z0-9_-]{0,63}$");
  return tenant;
}

/** `90`, `90s`, `15m`, `1h`, `7d` to seconds. */
export function parseDuration(raw: string): number {
  const match = /^(\d+)([smhd]?)$/.exec(raw.trim());
  if (!match) throw new ConfigError("--ttl", `expected a duration like 90s, 15m, 1h or 7d, got "${raw}"`);
  const unit = { "": 1, s: 1, m: 60, h: 3600, d: 86_400 }[match[2] as "" | "s" | "m" | "h" | "d"];
  return Number(match[1]) * unit;
}

/** `sinal health`: exit 0 when this node's /health answers 200 within 2 s, else 1 with the reason. */
export async function healthCommand(config: Config): Promise<void> {
  const host = config.host === "0.0.0.0" || config.host === "::" ? "127.0.0.1" : config.host;
  const url = `http://${host.includes(":") ? `[${host}]` : host}:${config.port}/health`;
  let status: number;
  try {
    status = (await fetch(url, { signal: AbortSignal.timeout(2000) })).status;
  } catch (err) {
    throw new HealthError(`${url}: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (status !== 200) throw new HealthError(`${url} answered ${status}`);
  process.stdout.write("ok\n");
}

export class HealthError extends Error {
  override name = "HealthError";
}
