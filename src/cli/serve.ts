import { createApp } from "../app.ts";
import { openDevSecret, type DevSecret } from "../auth/dev-secret.ts";
import { ConfigError, type Config } from "../config.ts";
import type { Logger } from "../log.ts";
import { announceDevMode } from "../dev/dev-banner.ts";
import { DemoFeed } from "../dev/demo-feed.ts";
import { createBackends, databaseLabel } from "../backends.ts";

/** Runs the server until SIGTERM/SIGINT, then drains and exits 0 (1 if draining overran). */
export async function serveCommand(config: Config, logger: Logger): Promise<void> {
  const backends = await createBackends(config, logger);
  const { store } = backends;
  let devSecret: DevSecret | null = null;
  try {
    if (config.jwt.kind === "dev") devSecret = openDevSecret(config.jwt.secretFile);
  } catch (err) {
    await store.close();
    throw err;
  }
  const jwt = devSecret === null ? config.jwt : { kind: "secret" as const, secret: devSecret.secret };
  const sinal = createApp({ ...backends, config: { ...config, jwt }, logger });

  try {
    sinal.app.listen({ port: config.port, hostname: config.host, reusePort: false });
  } catch (err) {
    await store.close();
    throw listenError(err, config.host, config.port);
  }
  // The last line of defence: every background task handles its own failure (Publisher.
  // publishInBackground and friends); one that slips through is logged and counted, and Bun does
  // not exit on it, dropping every connection.
  process.on("unhandledRejection", (err) => {
    sinal.metrics.backgroundFailed("unhandled");
    logger.error({ err, code: "unhandled_rejection" }, "a promise nobody awaited failed; the server keeps running");
  });
  // Before anything announces the server: a SIGTERM from then on drains instead of killing.
  let demoFeed: DemoFeed | null = null;
  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal, connections: sinal.gateway.size }, "draining");
    // prevents a stuck drain from outliving the orchestrator's grace period
    setTimeout(() => {
      logger.error("drain did not finish in time; exiting");
      logger.flush();
      process.exit(1);
    }, config.shutdownTimeoutMs).unref();
    demoFeed?.stop();
    await sinal.stop();
    await store.close();
    await backends.cluster?.close();
    logger.info("stopped");
    logger.flush();
    process.exit(0);
  };
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));

  const server = sinal.app.server!;
  logger.info({ port: server.port, host: config.host, database: databaseLabel(config.database) }, "listening");

  // Dev mode: the banner needs the port (PORT=0 picks one), and the page at / gets a moving demo.
  if (devSecret !== null) {
    announceDevMode(devSecret, sinal.apiKeys, logger, pageUrl(config.host, server.port!));
    demoFeed = new DemoFeed(sinal.publisher, logger.child({ component: "demo-feed" }));
    demoFeed.start();
  }
}

/** A failed listen as a ConfigError: a port in use or not allowed names PORT, any other failure HOST. */
function listenError(err: unknown, host: string, port: number): unknown {
  const code = (err as { code?: unknown }).code;
  if (typeof code !== "string") return err;
  if (code === "EADDRINUSE") {
    return new ConfigError("PORT", `${host}:${port} is already in use (EADDRINUSE): another sinal or another program listens there; stop it or choose another PORT`);
  }
  if (code === "EACCES") {
    return new ConfigError("PORT", `${host}:${port} is not allowed for this user (EACCES): choose a PORT from 1024 up, or grant the binary CAP_NET_BIND_SERVICE`);
  }
  return new ConfigError(
    "HOST",
    `cannot listen on HOST=${host} PORT=${port} (${code}): HOST must be an address of this machine (0.0.0.0 for all of them, 127.0.0.1, ::) or a name that resolves to one`,
  );
}

/** The address a person on this machine opens; a wildcard bind is reached as localhost. */
function pageUrl(host: string, port: number): string {
  const isWildcard = host === "0.0.0.0" || host === "::" || host === "";
  const shown = isWildcard ? "localhost" : host.includes(":") ? `[${host}]` : host;
  return `http://${shown}:${port}/`;
}
