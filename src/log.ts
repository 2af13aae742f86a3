import pino, { type Logger } from "pino";

export type { Logger };

/** Fields that may carry credentials; pino replaces their values before anything is written. */
const REDACT = [
  "token",
  "*.token",
  "authorization",
  "*.authorization",
  "headers.authorization",
  "*.headers.authorization",
  "apiKey",
  "*.apiKey",
  "key",
  "*.key",
  "secret",
  "*.secret",
];

/**
 * JSON lines on stdout. pino transports (pino-pretty, pino/file) break in a `bun build --compile` binary: the
 * worker paths of the build machine are baked in, and exit then hangs 10 s (measured on bun 1.4.5, pino 10).
 */
export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      name: "sinal",
      level,
      redact: { paths: REDACT, censor: "[redacted]" },
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination ?? pino.destination({ dest: 1, sync: true }),
  );
}
