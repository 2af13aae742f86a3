import { afterEach, expect, test } from "bun:test";
import { mintToken } from "../src/auth/tokens.ts";
import { Client, removeServerDir, SECRET, type Frame } from "./helpers.ts";
import { startChildServer, type ChildServer } from "./support/child-server.ts";

// What this really checks: sinal as a real process is killed (SIGTERM, or SIGKILL) while REST
// callers publish to a durable chat room in a steady stream (single publications, batches of
// three, chat messages), then restarted on the same store (sqlite file or PostgreSQL), where every request is sent again
// with the same idempotency key (or client_msg_id) until it is answered 200. The room's history,
// replayed from offset 0, must then hold every key exactly once (an acknowledged publication is
// never lost, a key never publishes twice), at the position each 200 answer named. Under SIGTERM,
// every request the server had visibly started (a subscriber saw one of its publications) must
// also be answered 200 before the process exits: the drain.
//
// COMMIT_INTERVAL_MS=40 widens the time a request spends between "stored" and "answered", so the
// signal can be sent right inside it, every cycle; the invariant holds for any interval. A probe
// (a room announced to three other rooms: one commit each, after the first is visible) keeps a
// request visibly in flight at each signal whatever the publish path does, so the drain is
// checked in every SIGTERM cycle.

const API_KEY = "durability-test-key-0000000001";
// SHUTDOWN_TIMEOUT_MS: a drain that never ends fails its cycle in 5 s (exit 1), not the test by timeout.
const ENV = { SINAL_API_KEYS: `acme:${API_KEY}`, HISTORY_ROOM: "100000,24h", COMMIT_INTERVAL_MS: "40", SHUTDOWN_TIMEOUT_MS: "5000" };
const ROOM = "r1";
const CHANNEL = `room:${ROOM}`;
/** Concurrent publishers; each sends its next request once its previous one settled. */
const PUBLISHERS = 8;
/** Requests answered 200 in a cycle before it looks for the moment to send the signal. */
const WARMUP_ANSWERS = 12;
const CYCLES = 5;

type Signal = "SIGTERM" | "SIGKILL";

interface Attempt {
  /** The HTTP status, or "cut" when no answer came (refused, reset or closed connection). */
  status: number | "cut";
  body?: unknown;
}

interface Request {
  /** What it publishes: `k<n>` per item (one, or three in a batch), `m<n>` a chat message, `p<n>` a probe. */
  labels: string[];
  kind: "publish" | "batch" | "message" | "probe";
  method: "POST" | "PUT";
  path: string;
  body: string;
  attempts: Attempt[];
  /** The subscriber saw one of its publications: the server has it. */
  observed: boolean;
  /** Its first attempt settled (answered or cut). */
  settled: boolean;
}

let live: ChildServer | null = null;
let dir: string | null = null;
afterEach(async () => {
  live?.kill("SIGKILL");
  await live?.exited;
  live = null;
  if (dir !== null) await removeServerDir(dir);
  dir = null;
});

const token = () => mintToken(SECRET, { tenant: "acme", user: "observer", ttlSec: 3600, subChannels: ["room:*"] });

/** The requests of one cycle, numbered on from `next`; `byLabel` finds a request from what it published. */
class Requests {
  readonly all: Request[] = [];
  readonly byLabel = new Map<string, Request>();

  constructor(public next: number) {}

  make(kind: Request["kind"]): Request {
    const n = kind === "batch" ? [this.next++, this.next++, this.next++] : [this.next++];
    const item = (i: number) => ({ channel: CHANNEL, event: "e", data: { n: i }, idempotency_key: `k${i}` });
    const at = n[0]!;
    const shapes = {
      publish: { method: "POST", path: "/v1/publish", body: item(at) },
      batch: { method: "POST", path: "/v1/publish", body: n.map(item) },
      message: { method: "POST", path: `/v1/rooms/${ROOM}/messages`, body: { sender: "backend", content: `n=${at}`, client_msg_id: `m${at}` } },
      probe: { method: "PUT", path: `/v1/rooms/${ROOM}`, body: { meta: { probe: at }, notify: ["room:p1", "room:p2", "room:p3"] } },
    } as const;
    const labels = kind === "message" ? [`m${at}`] : kind === "probe" ? [`p${at}`] : n.map((i) => `k${i}`);
    const { method, path, body } = shapes[kind];
    const req: Request = { labels, kind, method, path, body: JSON.stringify(body), attempts: [], observed: false, settled: false };
    this.all.push(req);
    for (const label of labels) this.byLabel.set(label, req);
    return req;
  }
}

/** Which request a publication on the room belongs to, from its data. */
function labelOf(frame: Frame): string | null {
  if (frame.event === "e") return `k${frame.data.n}`;
  if (frame.event === "new_message") return frame.data.client_msg_id ?? null;
  if (frame.event === "new_conversation" || frame.event === "conversation_updated") {
    return frame.data.meta?.probe === undefined ? null : `p${frame.data.meta.probe}`;
  }
  return null;
}

async function send(server: ChildServer, req: Request): Promise<Attempt> {
  let attempt: Attempt;
  try {
    const res = await fetch(`${server.http}${req.path}`, {
      method: req.method,
      headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
      body: req.body,
      signal: AbortSignal.timeout(15_000),
    });
    const text = await res.text();
    attempt = { status: res.status, body: text === "" ? undefined : JSON.parse(text) };
  } catch {
    attempt = { status: "cut" };
  }
  req.attempts.push(attempt);
  return attempt;
}

/** A raw subscriber on the room that marks each request whose publication it sees; resolves with the room's epoch. */
async function observe(server: ChildServer, requests: Requests, onSeen: () => void): Promise<{ socket: WebSocket; epoch: string }> {
  const socket = new WebSocket(`${server.ws}?token=${token()}`);
  let subscribed!: (epoch: string) => void;
  const ready = new Promise<string>((resolve, reject) => {
    subscribed = resolve;
    socket.onclose = (event) => reject(new Error(`the observer's socket closed (${event.code}) before its subscribe was answered`));
  });
  socket.onmessage = (event) => {
    const frame = JSON.parse(String(event.data)) as Frame;
    if (frame.type === "welcome") socket.send(JSON.stringify({ type: "subscribe", id: 1, channel: CHANNEL }));
    else if (frame.type === "reply" && frame.id === 1) subscribed(frame.epoch);
    else if (frame.type === "pub" && frame.channel === CHANNEL) {
      const label = labelOf(frame);
      const req = label === null ? undefined : requests.byLabel.get(label);
      if (req !== undefined && !req.observed) {
        req.observed = true;
        onSeen();
      }
    }
  };
  return { socket, epoch: await ready };
}

/**
 * Publishers and a prober send requests until `signal` has been sent (SIGKILL) or until their own
 * request fails or the process is gone (SIGTERM: callers keep sending while the server drains).
 * The signal goes once WARMUP_ANSWERS requests were answered and a request the server visibly has
 * is unanswered. Resolves with those requests, once the process exited and every request settled.
 */
async function streamUntilSignal(server: ChildServer, signal: Signal, requests: Requests, where: string) {
  let signalled = false;
  let inFlightAtSignal: Request[] = [];
  let answers = 0;
  let fire!: () => void;
  const fired = new Promise<void>((resolve) => (fire = resolve));
  const maybeSignal = () => {
    if (signalled || answers < WARMUP_ANSWERS) return;
    const inFlight = requests.all.filter((r) => r.observed && !r.settled);
    if (inFlight.length === 0) return;
    signalled = true;
    inFlightAtSignal = inFlight;
    server.kill(signal);
    fire();
  };
  const observer = await observe(server, requests, maybeSignal);

  let exited = false;
  void server.exited.then(() => (exited = true));
  const keepsSending = () => !exited && (!signalled || signal === "SIGTERM");
  const sender = async (kinds: readonly Request["kind"][]) => {
    for (let i = 0; keepsSending(); i++) {
      const req = requests.make(kinds[i % kinds.length]!);
      const attempt = await send(server, req);
      req.settled = true;
      if (attempt.status === 200 && req.kind !== "probe") answers++;
      maybeSignal();
      if (signalled && attempt.status !== 200) return;
    }
  };
  const mix = ["publish", "batch", "publish", "message"] as const;
  const senders = Array.from({ length: PUBLISHERS }, (_, w) => sender([...mix.slice(w % 4), ...mix.slice(0, w % 4)]));
  const streaming = Promise.all([...senders, sender(["probe"])]);
  const timer = setTimeout(fire, 15_000);
  await fired;
  clearTimeout(timer);
  if (!signalled) throw new Error(`${where}: no request was visibly in flight within 15 s (${answers} answers)`);
  const exit = await server.exited;
  await streaming;
  observer.socket.close();
  return { inFlightAtSignal, exit, epoch: observer.epoch };
}

/** Sends each request again until it is answered 200, PUBLISHERS at a time. */
async function resendAll(server: ChildServer, requests: Request[]): Promise<void> {
  const queue = [...requests];
  const resend = async () => {
    for (let req = queue.shift(); req !== undefined; req = queue.shift()) {
      for (let tries = 0; tries < 20; tries++) {
        if ((await send(server, req)).status === 200) break;
        await Bun.sleep(100);
      }
    }
  };
  await Promise.all(Array.from({ length: PUBLISHERS }, resend));
}

/** Every publication the room's durable history keeps, replayed to a fresh subscriber from offset 0; null when it cannot be. */
async function replayRoom(server: ChildServer, epoch: string): Promise<Frame[] | null> {
  const { client, welcome } = await Client.connect(`${server.ws}?token=${token()}`);
  if (welcome.type !== "welcome") throw new Error(`expected welcome, got ${JSON.stringify(welcome)}`);
  const reply = await client.request({ type: "subscribe", channel: CHANNEL, since: { epoch, offset: 0 } });
  const frames: Frame[] = [];
  if (reply.recovered === true) while (frames.length < reply.offset) frames.push(await client.next());
  client.close();
  await client.closed;
  return reply.recovered === true ? frames : null;
}

/** What the history says against what the callers were told: each label once, where its 200 answers said. */
function checkHistory(history: Frame[], requests: Requests, where: string): string[] {
  const problems: string[] = [];
  const copies = new Map<string, Frame[]>();
  for (const frame of history) {
    const label = labelOf(frame);
    if (label !== null && requests.byLabel.has(label)) copies.set(label, [...(copies.get(label) ?? []), frame]);
  }
  const keyed = requests.all.filter((r) => r.kind !== "probe");
  const labels = keyed.flatMap((r) => r.labels);
  const count = (label: string) => copies.get(label)?.length ?? 0;
  const twice = labels.filter((l) => count(l) > 1);
  const never = labels.filter((l) => count(l) === 0);
  if (twice.length > 0) problems.push(`${where}: ${twice.length} of ${labels.length} keys published more than once (${twice.map((l) => `${l}×${count(l)}`).join(", ")})`);
  if (never.length > 0) problems.push(`${where}: ${never.length} of ${labels.length} keys not in the room's history (${never.join(", ")})`);
  const wrong: string[] = [];
  for (const req of keyed) {
    for (const attempt of req.attempts.filter((a) => a.status === 200)) {
      req.labels.forEach((label, i) => {
        // A key published twice is reported above: its answers name one copy or the other.
        if (count(label) !== 1) return;
        const stored = copies.get(label)![0]!;
        const answer = req.kind === "batch" ? (attempt.body as Frame[])[i] : (attempt.body as Frame);
        const same = req.kind === "message" ? answer?.id === stored.data.id : answer?.epoch === stored.epoch && answer?.offset === stored.offset;
        if (!same) wrong.push(`${label} answered ${JSON.stringify(answer)}, stored at ${stored.epoch}/${stored.offset}`);
      });
    }
  }
  if (wrong.length > 0) problems.push(`${where}: ${wrong.length} answers name another position than their publication's (${wrong.slice(0, 5).join("; ")})`);
  return problems;
}

/**
 * CYCLES rounds on one store: stream, send `signal` mid-stream, restart, resend every
 * request until answered 200, check the room's history. Returns what went wrong, one line per
 * kind of problem and cycle (empty when everything held).
 */
async function killMidStream(signal: Signal): Promise<string[]> {
  const problems: string[] = [];
  let server = await startChildServer({ env: ENV });
  live = server;
  dir = server.dir;
  let epoch: string | undefined;
  let next = 0;
  for (let cycle = 1; cycle <= CYCLES; cycle++) {
    const where = `${signal} cycle ${cycle}`;
    const requests = new Requests(next);
    const streamed = await streamUntilSignal(server, signal, requests, where);
    next = requests.next;
    // The epoch of the room's first subscribe: a durable room keeps it across restarts.
    epoch ??= streamed.epoch;
    if (signal === "SIGTERM") {
      if (streamed.exit.code !== 0) problems.push(`${where}: exited ${streamed.exit.signal ?? streamed.exit.code} on SIGTERM, not 0`);
      const cut = streamed.inFlightAtSignal.filter((r) => r.attempts[0]!.status !== 200);
      const what = cut.map((r) => `${r.labels.join("+")}: ${r.attempts[0]!.status}`).join(", ");
      if (cut.length > 0) problems.push(`${where}: ${cut.length} of ${streamed.inFlightAtSignal.length} requests in flight at the signal were not answered 200 (${what})`);
    }

    server = await startChildServer({ env: ENV, dir: server.dir });
    live = server;
    const keyed = requests.all.filter((r) => r.kind !== "probe");
    await resendAll(server, keyed);
    const unanswered = keyed.filter((r) => !r.attempts.some((a) => a.status === 200));
    if (unanswered.length > 0) problems.push(`${where}: ${unanswered.length} requests never answered 200 (${unanswered.map((r) => r.labels.join("+")).join(", ")})`);

    const history = await replayRoom(server, epoch);
    if (history === null) problems.push(`${where}: the room's history cannot be replayed from epoch ${epoch} (a new epoch?)`);
    else problems.push(...checkHistory(history, requests, where));
  }
  return problems;
}

test("an idempotency key publishes once across SIGTERM mid-stream, and SIGTERM answers every request it had started", async () => {
  expect(await killMidStream("SIGTERM")).toEqual([]);
}, 60_000);

test("an idempotency key publishes once across kill -9 mid-stream, and no acknowledged publication is lost", async () => {
  expect(await killMidStream("SIGKILL")).toEqual([]);
}, 60_000);
