import { Database } from "bun:sqlite";
import { afterEach, beforeEach, test as bunTest } from "bun:test";
import { SQL, type Subprocess } from "bun";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openPgStore } from "../../src/store/pg-store.ts";
import { openSqliteStore } from "../../src/store/sqlite-store.ts";
import type { Store } from "../../src/store/store.ts";
import { postgresTests, startDatabase, type Postgres } from "../support/postgres.ts";
import type { PeerAnswer, PeerCall } from "../support/store-peer.ts";

/**
 * What a contract suite (test/contract/*.contract.ts) runs its cases on: one implementation of the
 * Store interfaces, with a fresh, empty database for every test. There is no memory Store: sqlite
 * (a real file) and PostgreSQL (a throwaway server) are the implementations.
 */
export interface StoreSubject {
  readonly name: string;
  /** bun's `test`, or a skipping one when the subject cannot run here (PostgreSQL missing, by hand). */
  readonly test: typeof bunTest;
  /** Registers the hooks of the enclosing describe: a fresh database per test, everything opened closed after it. */
  hooks(): void;
  /** Opens a node on this test's database, in this process (again after a close: a restart). */
  open(): Promise<Store>;
  /**
   * Opens a second node on this test's database, in a process of its own, so that its writes run at
   * the same time as this process's (test/support/store-peer.ts). Results come back by structured
   * clone: the same values a local store returns.
   */
  openPeer(): Promise<Store>;
  /**
   * Writes `count` rows straight into `table` in one statement, past the store (a prune of tens of
   * thousands of rows would otherwise spend seconds seeding them): messages in `room` from `u1`,
   * or pending notifications for `u1`.
   */
  seed(table: "messages" | "notifications", rows: { tenant: string; room?: string; count: number; createdAt: number }): Promise<void>;
}

/** Every Store implementation; each test file runs its contract over all of them. */
export function storeSubjects(): StoreSubject[] {
  return [sqliteSubject(), postgresSubject()];
}

const PEER = join(import.meta.dir, "../support/store-peer.ts");

/** Closes what a test opened: stores of this process, then peers (their close ends their process). */
class Opened {
  private readonly stores: Store[] = [];
  private readonly peers: Peer[] = [];

  add(store: Store): Store {
    this.stores.push(store);
    return store;
  }

  addPeer(peer: Peer): Store {
    this.peers.push(peer);
    return peer.store;
  }

  async closeAll(): Promise<void> {
    for (const store of this.stores.splice(0)) await store.close();
    for (const peer of this.peers.splice(0)) await peer.stop();
  }
}

function sqliteSubject(): StoreSubject {
  let dir = "";
  let path = "";
  const opened = new Opened();
  return {
    name: "sqlite",
    test: bunTest,
    hooks() {
      beforeEach(() => {
        dir = mkdtempSync(join(tmpdir(), "sinal-contract-"));
        path = join(dir, "sinal.db");
      });
      afterEach(async () => {
        await opened.closeAll();
        rmSync(dir, { recursive: true, force: true });
      });
    },
    open: async () => opened.add(openSqliteStore(path)),
    openPeer: async () => opened.addPeer(await startPeer("sqlite", path)),
    async seed(table, { tenant, room = "1", count, createdAt }) {
      const db = new Database(path);
      try {
        db.run("PRAGMA busy_timeout = 5000");
        const numbers = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)";
        if (table === "messages") {
          db.run(`INSERT INTO messages (tenant, room, sender, content, created_at) ${numbers} SELECT ?, ?, 'u1', 'seeded', ? FROM n`, [count, tenant, room, createdAt]);
        } else {
          db.run(`INSERT INTO notifications (tenant, user, category, title, message, created_at) ${numbers} SELECT ?, 'u1', 'general', 'seeded', 'm', ? FROM n`, [count, tenant, createdAt]);
        }
      } finally {
        db.close();
      }
    },
  };
}

function postgresSubject(): StoreSubject {
  const { test, available } = postgresTests();
  let database: Postgres | undefined;
  let url = "";
  const opened = new Opened();
  return {
    name: "PostgreSQL",
    test,
    hooks() {
      beforeEach(async () => {
        if (!available) return;
        // A fresh database per test: its sequences start again, as a new deployment's would.
        database = await startDatabase();
        url = database.url;
      }, 90_000);
      afterEach(async () => {
        await opened.closeAll();
        await database?.stop();
      });
    },
    open: async () => opened.add(await openPgStore(url)),
    openPeer: async () => opened.addPeer(await startPeer("postgres", url)),
    async seed(table, { tenant, room = "1", count, createdAt }) {
      const sql = new SQL(url, { prepare: false, max: 1 });
      try {
        if (table === "messages") {
          await sql`INSERT INTO messages (tenant, room, sender, content, created_at)
            SELECT ${tenant}, ${room}, 'u1', 'seeded', ${createdAt}::bigint FROM generate_series(1, ${count}::int)`;
        } else {
          await sql`INSERT INTO notifications (tenant, "user", category, title, message, created_at)
            SELECT ${tenant}, 'u1', 'general', 'seeded', 'm', ${createdAt}::bigint FROM generate_series(1, ${count}::int)`;
        }
      } finally {
        await sql.close();
      }
    },
  };
}

interface Peer {
  store: Store;
  /** Closes the peer's store and waits for its process to end. */
  stop(): Promise<void>;
}

/** Longest a peer may take to close and exit before it is killed (it holds the test's database). */
const PEER_STOP_MS = 10_000;

/** Starts test/support/store-peer.ts on the database and resolves once its store is open. */
async function startPeer(kind: "sqlite" | "postgres", target: string): Promise<Peer> {
  const waiting = new Map<number, { resolve: (value: unknown) => void; reject: (err: Error) => void }>();
  let nextId = 0;
  let ready!: () => void;
  const isReady = new Promise<void>((resolve) => (ready = resolve));
  const child: Subprocess = Bun.spawn([process.execPath, PEER, kind, target], {
    serialization: "advanced",
    stdio: ["ignore", "inherit", "inherit"],
    ipc(message: PeerAnswer | "ready") {
      if (message === "ready") return ready();
      const call = waiting.get(message.id);
      if (call === undefined) return;
      waiting.delete(message.id);
      if (message.ok) call.resolve(message.value);
      else call.reject(Object.assign(new Error(`peer: ${message.error.message}`), { code: message.error.code }));
    },
  });
  const exited = child.exited.then((code) => {
    for (const call of waiting.values()) call.reject(new Error(`the peer exited (${code}) before answering`));
    waiting.clear();
    return code;
  });
  const first = await Promise.race([isReady.then(() => "ready" as const), exited]);
  if (first !== "ready") throw new Error(`the peer exited (${first}) before its store opened`);

  const call = (path: string[], args: unknown[]): Promise<unknown> =>
    new Promise((resolve, reject) => {
      if (child.exitCode !== null) return reject(new Error("the peer has exited"));
      const id = ++nextId;
      waiting.set(id, { resolve, reject });
      try {
        child.send({ id, path, args } satisfies PeerCall);
      } catch (err) {
        waiting.delete(id);
        reject(err as Error);
      }
    });
  // store.chat.insertMessages(batch) sends ["chat", "insertMessages"]; no property is a thenable.
  const remote = (path: string[]): unknown =>
    new Proxy(function () {}, {
      get: (_target, prop) => (typeof prop === "string" && prop !== "then" ? remote([...path, prop]) : undefined),
      apply: (_target, _this, args: unknown[]) => call(path, args),
    });

  return {
    store: remote([]) as Store,
    async stop() {
      if (child.exitCode === null) {
        const timer = setTimeout(() => child.kill("SIGKILL"), PEER_STOP_MS);
        await call(["close"], []).catch(() => undefined);
        await exited;
        clearTimeout(timer);
      }
    },
  };
}
