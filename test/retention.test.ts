import { describe, expect, test } from "bun:test";
import { ConfigError, loadConfig } from "../src/config.ts";

// The retention settings. Pruning itself (ChatStore.prune, NotificationStore.prune, and Retention
// over a real store) is in the contract suites: test/contract/chat-store.contract.ts,
// notification-store.contract.ts and store.contract.ts.

describe("MESSAGE_RETENTION_DAYS and NOTIFICATION_RETENTION_DAYS", () => {
  const SECRET = "x".repeat(32);
  const load = (env: Record<string, string>) => loadConfig({ JWT_SECRET: SECRET, ...env });

  test("unset or empty keep everything; a whole number of days is taken", () => {
    expect(load({}).retention).toEqual({ messageDays: null, notificationDays: null });
    expect(load({ MESSAGE_RETENTION_DAYS: "", NOTIFICATION_RETENTION_DAYS: "" }).retention).toEqual({ messageDays: null, notificationDays: null });
    expect(load({ MESSAGE_RETENTION_DAYS: "90", NOTIFICATION_RETENTION_DAYS: "1" }).retention).toEqual({ messageDays: 90, notificationDays: 1 });
  });

  for (const variable of ["MESSAGE_RETENTION_DAYS", "NOTIFICATION_RETENTION_DAYS"]) {
    test(`${variable} refuses 0, fractions, words and more than 3650, naming the variable`, () => {
      for (const bad of ["0", "1.5", "-3", "30d", "forever", "3651"]) {
        let error: unknown = null;
        try {
          load({ [variable]: bad });
        } catch (err) {
          error = err;
        }
        expect(error).toBeInstanceOf(ConfigError);
        expect((error as ConfigError).variable).toBe(variable);
        expect((error as Error).message.startsWith(`${variable}: `)).toBe(true);
      }
    });
  }

  test("refuses messages kept for less time than room history, which recovery would replay", () => {
    expect(() => load({ MESSAGE_RETENTION_DAYS: "1", HISTORY_ROOM: "1000,48h" })).toThrow(/^MESSAGE_RETENTION_DAYS: 1 day\(s\) is shorter than the age room history keeps \(48 h/);
    expect(load({ MESSAGE_RETENTION_DAYS: "2", HISTORY_ROOM: "1000,48h" }).retention.messageDays).toBe(2);
    expect(load({ MESSAGE_RETENTION_DAYS: "1", HISTORY_ROOM: "off" }).retention.messageDays).toBe(1);
    // The default room history (24 h) fits the shortest retention.
    expect(load({ MESSAGE_RETENTION_DAYS: "1" }).retention.messageDays).toBe(1);
  });
});
