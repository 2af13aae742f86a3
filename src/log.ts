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

/** JSON lines on stdout (PITFALLS.md: transports break in a compiled binary). */
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
