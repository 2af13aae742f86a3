import { createHmac } from "node:crypto";
import type { DevSecret } from "../auth/dev-secret.ts";
import { mintToken } from "../auth/tokens.ts";
import type { Logger } from "../log.ts";

/** The users of the two ready links: two people (or two tabs) see each other type and read. */
const DEMO_USERS = [
  { user: "demo", name: "Demo" },
  { user: "demo2", name: "Demo 2" },
] as const;

/**
 * Dev mode's loud warning, on stderr and as one `warn` log line: where the secret is kept, a demo
 * token and API key for tenant `demo`, and two ready links to the page at `/` (users `demo` and
 * `demo2`, admins of tenant `demo`, 24 h), one per browser tab. The API key is derived from the
 * secret, so like the tokens it still works after a restart on the same data directory.
 */
export function announceDevMode(dev: DevSecret, apiKeys: { addEphemeral(tenant: string, key: string): void }, logger: Logger, page: string): void {
  const apiKey = `sk_dev_${createHmac("sha256", dev.secret).update("sinal dev-mode demo API key").digest("base64url")}`;
  apiKeys.addEphemeral("demo", apiKey);
  const [token, token2] = DEMO_USERS.map(({ user, name }) =>
    mintToken(dev.secret, { tenant: "demo", user, ttlSec: 86_400, name, subChannels: ["*"], pubChannels: ["*"], roles: ["admin"] }),
  ) as [string, string];
  const demoPage = `${page}#token=${token}`;
  const demo2Page = `${page}#token=${token2}`;
  const kept =
    dev.file === null
      ? "a random secret that dies with this process (DATABASE_URL=sqlite::memory: keeps no file)"
      : `the dev secret in ${dev.file} (${dev.created ? "made now" : "kept from an earlier start"}; anyone who can read it can sign tokens for this server)`;
  logger.warn(
    { dev_mode: true, dev_secret_file: dev.file, demo_tenant: "demo", demo_token: token, demo_api_key: apiKey, demo_page: demoPage, demo2_token: token2, demo2_page: demo2Page },
    `DEV MODE: no JWT_SECRET or JWT_PUBLIC_KEY set; tokens are signed with ${kept}. Never run like this in production.`,
  );
  const mint =
    dev.file === null
      ? "  sinal token cannot sign for this server: set JWT_SECRET on both to mint more users."
      : "  more users: sinal token --tenant demo --user <id> --sub-channels '*' --pub-channels '*' (same DATABASE_URL, no JWT_SECRET)";
  process.stderr.write(
    [
      "",
      "  ****************************************************************",
      "  *  sinal is in DEV MODE: no JWT_SECRET or JWT_PUBLIC_KEY is set  *",
      "  ****************************************************************",
      `  tokens are signed with ${kept}.`,
      "  Never run like this in production.",
      "",
      `  demo token (tenant demo, user demo, admin, 24 h): ${token}`,
      `  demo API key (tenant demo):                       ${apiKey}`,
      mint,
      "",
      `  live demo page (open in a browser):               ${demoPage}`,
      `  second user demo2 (open in another tab):          ${demo2Page}`,
      "",
    ].join("\n") + "\n",
  );
}
