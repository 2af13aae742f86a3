/**
 * A second node for the store contract suites (test/contract/): a Store opened in a process of its
 * own on the database the parent names, driven over IPC by `openPeer` (test/contract/subjects.ts).
 * Its own process, so that its writes really run at the same time as the parent's (bun:sqlite
 * calls are synchronous: two stores in one process only take turns).
 *
 *   bun test/support/store-peer.ts sqlite <file> | postgres <url>
 *
 * Each message `{ id, path, args }` calls `store[path[0]]...[path[n]](...args)` and answers
 * `{ id, ok, value }` or `{ id, ok: false, error }`; calls run as they arrive, without waiting for
 * the previous one. A call of `close` answers, then the process exits.
 */
import { openPgStore } from "../../src/store/pg-store.ts";
import { openSqliteStore } from "../../src/store/sqlite-store.ts";
import type { Store } from "../../src/store/store.ts";

export interface PeerCall {
  id: number;
  path: string[];
  args: unknown[];
}

export type PeerAnswer = { id: number; ok: true; value: unknown } | { id: number; ok: false; error: { message: string; code?: unknown } };

const [kind, target] = process.argv.slice(2);
if ((kind !== "sqlite" && kind !== "postgres") || target === undefined) throw new Error("usage: store-peer.ts sqlite <file> | postgres <url>");
const store: Store = kind === "sqlite" ? openSqliteStore(target) : await openPgStore(target);

async function call({ path, args }: PeerCall): Promise<unknown> {
  let owner: Record<string, unknown> = store as unknown as Record<string, unknown>;
  for (const name of path.slice(0, -1)) owner = owner[name] as Record<string, unknown>;
  const method = owner[path.at(-1)!];
  if (typeof method !== "function") throw new Error(`no method ${path.join(".")}`);
  return (method as (...a: unknown[]) => unknown).apply(owner, args);
}

process.on("message", (message: PeerCall) => {
  void call(message).then(
    (value) => {
      process.send!({ id: message.id, ok: true, value } satisfies PeerAnswer);
      if (message.path.length === 1 && message.path[0] === "close") process.exit(0);
    },
    (err: unknown) => {
      const error = err as { message?: string; code?: unknown; cause?: { message?: string } };
      process.send!({ id: message.id, ok: false, error: { message: `${error.message ?? String(err)}${error.cause?.message ? `: ${error.cause.message}` : ""}`, code: error.code } } satisfies PeerAnswer);
    },
  );
});
process.send!("ready");
