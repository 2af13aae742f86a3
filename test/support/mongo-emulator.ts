import { spawn, spawnSync, type ChildProcessByStdio } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import type { Readable, Writable } from "node:stream";

/**
 * The in-memory MongoDB emulator for the feed tests: mongo-java-server 1.47.0 with its oplog on
 * (change streams), fetched from Maven Central by test/support/pom.xml into .tmp/mongo-emulator
 * and started by a tiny Java main on a free loopback port.
 *
 * Without java, javac or mvn the tests skip with the reason when run by hand; under CI=true a
 * missing tool fails the run instead (the emulator tests are part of what CI must prove).
 */

const SUPPORT = import.meta.dir;
const CACHE = join(SUPPORT, "../../.tmp/mongo-emulator");
const LIB = join(CACHE, "lib");
const CLASSES = join(CACHE, "classes");
const SOURCE = join(SUPPORT, "MongoEmulator.java");

export interface Emulator {
  port: number;
  /** A driver URI for this emulator (directConnection: it presents as a standalone server). */
  uri(extra?: string): string;
  stop(): Promise<void>;
}

export type Prepared = { ok: true } | { ok: false; reason: string };

let prepared: Prepared | null = null;

/** Fetches the jars and compiles the main once per checkout; later calls are instant. */
export function prepareEmulator(): Prepared {
  if (prepared) return prepared;
  prepared = prepare();
  if (!prepared.ok && process.env.CI === "true") throw new Error(`MongoDB emulator unavailable under CI: ${prepared.reason}`);
  return prepared;
}

function prepare(): Prepared {
  for (const tool of ["java", "javac", "mvn"]) {
    if (Bun.which(tool) === null) return { ok: false, reason: `${tool} is not on PATH (the feed tests need Java 17 and Maven)` };
  }
  const hasJars = existsSync(LIB) && readdirSync(LIB).some((f) => f.startsWith("mongo-java-server-memory-backend"));
  if (!hasJars) {
    mkdirSync(LIB, { recursive: true });
    const mvn = spawnSync("mvn", ["-q", "-B", "-f", join(SUPPORT, "pom.xml"), "dependency:copy-dependencies", `-DoutputDirectory=${LIB}`], {
      encoding: "utf8",
      timeout: 300_000,
    });
    if (mvn.status !== 0) return { ok: false, reason: `mvn could not fetch mongo-java-server: ${(mvn.stdout + mvn.stderr).trim().slice(-800)}` };
  }
  const classFile = join(CLASSES, "MongoEmulator.class");
  if (!existsSync(classFile) || statSync(classFile).mtimeMs < statSync(SOURCE).mtimeMs) {
    mkdirSync(CLASSES, { recursive: true });
    const javac = spawnSync("javac", ["-cp", `${LIB}/*`, "-d", CLASSES, SOURCE], { encoding: "utf8", timeout: 120_000 });
    if (javac.status !== 0) return { ok: false, reason: `javac failed: ${javac.stderr.trim().slice(-800)}` };
  }
  return { ok: true };
}

/** Starts a fresh, empty emulator and resolves once it listens. */
export async function startEmulator(): Promise<Emulator> {
  const prep = prepareEmulator();
  if (!prep.ok) throw new Error(prep.reason);
  // Small heap and one JIT thread: the machine is shared with the test's own server.
  const child: ChildProcessByStdio<Writable, Readable, Readable> = spawn(
    "java",
    ["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-cp", `${LIB}/*:${CLASSES}`, "MongoEmulator"],
    { stdio: ["pipe", "pipe", "pipe"] },
  );
  let stderr = "";
  child.stderr.on("data", (chunk) => (stderr = (stderr + String(chunk)).slice(-4000)));
  const port = await new Promise<number>((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`emulator did not start within 30 s: ${stderr}`)), 30_000);
    child.stdout.on("data", (chunk) => {
      out += String(chunk);
      const match = /PORT (\d+)/.exec(out);
      if (match) {
        clearTimeout(timer);
        resolve(Number(match[1]));
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`emulator exited with ${code}: ${stderr}`));
    });
  });
  const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()));
  return {
    port,
    uri: (extra = "") => `mongodb://127.0.0.1:${port}/?directConnection=true${extra}`,
    async stop() {
      // Closing stdin is the emulator's signal to stop; kill it if it does not within 5 s.
      child.stdin.end();
      const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
      await exited;
      clearTimeout(timer);
    },
  };
}
