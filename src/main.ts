#!/usr/bin/env bun
import pkg from "../package.json" with { type: "json" };
import { expectNoArguments, HELP, healthCommand, HealthError, keysCommand, migrateCommand, tokenCommand, USAGE } from "./cli/commands.ts";
import { serveCommand } from "./cli/serve.ts";
import { ConfigError, loadConfig } from "./config.ts";
import { createLogger } from "./log.ts";
import { gitCommit } from "./cli/version.macro.ts" with { type: "macro" };

async function main(argv: string[]): Promise<void> {
  const [command = "serve", ...args] = argv;
  if (command === "--help" || command === "-h" || command === "help") {
    process.stdout.write(`${HELP}\n`);
    return;
  }
  if (command === "--version" || command === "-v") {
    process.stdout.write(`sinal ${pkg.version} (commit ${gitCommit()})\n`);
    return;
  }
  const usage = Object.hasOwn(USAGE, command) ? USAGE[command] : undefined;
  if (usage !== undefined && (args.includes("--help") || args.includes("-h"))) {
    process.stdout.write(`${usage}\n`);
    return;
  }
  if (command === "serve" || command === "migrate" || command === "health") expectNoArguments(command, args);
  const config = loadConfig();
  switch (command) {
    case "serve":
      return serveCommand(config, createLogger(config.logLevel));
    case "migrate":
      return migrateCommand(config);
    case "keys":
      return keysCommand(config, args);
    case "token":
      return tokenCommand(config, args);
    case "health":
      return healthCommand(config);
    default:
      throw new ConfigError("command", `unknown command "${command}"; see sinal --help`);
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  const message = err instanceof ConfigError || err instanceof HealthError ? err.message : err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  process.stderr.write(`sinal: ${message}\n`);
  process.exit(1);
});
