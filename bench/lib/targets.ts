/**
 * What differs between the servers under test, as seen by the load generator: the upgrade path,
 * the handshake after the upgrade, the frames for subscribe and publish, and where the server's
 * own delivery counter is read.
 */
import { SignJWT } from "jose";

export type TargetName = "sinal" | "bun" | "ws" | "socketio";
export const TARGETS: TargetName[] = ["sinal", "bun", "ws", "socketio"];

/**
 * The channel of the fan-out. A feed channel (the scraper's `roulette:<id>` kind: one publisher,
 * many readers) by default, not `room:<id>`: sinal's chat rooms announce every join with a
 * `user_joined` publication, which the reference servers do not do. BENCH_CHANNEL overrides it.
 */
export const CHANNEL = process.env.BENCH_CHANNEL ?? "roulette:bench";
const PATTERN = `${CHANNEL.split(":")[0]}:*`;
export const TENANT = "bench";

export interface ServerCounters {
  publications: number;
  deliveries: number;
  connections: number;
}

/** Result of feeding one setup frame to a connection that is not ready yet. */
export type SetupStep = { reply?: string; ready?: boolean; error?: string };

export interface Target {
  /** Request path (with query) of the upgrade for connection `user`. */
  path(user: string, role: "sub" | "pub" | "idle"): Promise<string>;
  /** Frames to send right after the upgrade (before any server frame). */
  onOpen(role: "sub" | "pub" | "idle"): { send?: string; ready?: boolean };
  /** A text frame received before the connection is ready. */
  onSetupText(role: "sub" | "pub" | "idle", text: string): SetupStep;
  /** The publish frame carrying `data` (a JSON object text). */
  publishFrame(data: string): string;
  /** A frame the server sends to keep the session alive that needs an answer (Engine.IO ping). */
  keepAliveReply(buf: Buffer, start: number, end: number): string | null;
  counters(host: string, port: number): Promise<ServerCounters>;
}

const subscribeFrame = JSON.stringify({ type: "subscribe", id: 1, channel: CHANNEL });
const jsonPublish = (data: string) => `{"type":"publish","channel":"${CHANNEL}","event":"tick","data":${data}}`;

async function refCounters(host: string, port: number): Promise<ServerCounters> {
  const res = await fetch(`http://${host}:${port}/stats`);
  return (await res.json()) as ServerCounters;
}

/** sinal: JWT per connection (?token=), welcome first, subscribe with a reply, publish over the socket. */
export function sinalTarget(secret: string): Target {
  const key = new TextEncoder().encode(secret);
  return {
    async path(user, role) {
      const claims: Record<string, unknown> = { tid: TENANT, sub_channels: [PATTERN] };
      if (role === "pub") claims.pub_channels = [PATTERN];
      const jwt = await new SignJWT(claims).setProtectedHeader({ alg: "HS256" }).setSubject(user).setIssuedAt().setExpirationTime("2h").sign(key);
      return `/ws?token=${jwt}`;
    },
    onOpen: () => ({}),
    onSetupText(role, text) {
      const frame = JSON.parse(text) as { type: string; ok?: boolean; error?: unknown };
      if (frame.type === "welcome") return role === "sub" ? { reply: subscribeFrame } : { ready: true };
      if (frame.type === "reply" && frame.ok === true) return { ready: true };
      return { error: `unexpected setup frame ${text.slice(0, 200)}` };
    },
    publishFrame: jsonPublish,
    keepAliveReply: () => null,
    async counters(host, port) {
      const text = await (await fetch(`http://${host}:${port}/metrics`)).text();
      const read = (name: string) => {
        const m = new RegExp(`^${name}\\{tenant="${TENANT}"\\} (\\d+)`, "m").exec(text);
        return m ? Number(m[1]) : 0;
      };
      return {
        publications: read("sinal_publications_total"),
        deliveries: read("sinal_deliveries_total"),
        connections: read("sinal_connections"),
      };
    },
  };
}

/** The bare Bun and Node ws references: no auth, no welcome. */
function plainTarget(): Target {
  return {
    path: async () => "/ws",
    onOpen: (role) => (role === "sub" ? { send: subscribeFrame } : { ready: true }),
    onSetupText(_role, text) {
      const frame = JSON.parse(text) as { type: string; ok?: boolean };
      if (frame.type === "reply" && frame.ok === true) return { ready: true };
      return { error: `unexpected setup frame ${text.slice(0, 200)}` };
    },
    publishFrame: jsonPublish,
    keepAliveReply: () => null,
    counters: refCounters,
  };
}

/** Socket.IO v4 over its WebSocket transport (Engine.IO v4 packets: 0 open, 2 ping, 3 pong, 4 message). */
function socketioTarget(): Target {
  return {
    path: async () => "/socket.io/?EIO=4&transport=websocket",
    onOpen: () => ({}),
    onSetupText(role, text) {
      if (text.startsWith("0{")) return { reply: "40" };
      if (text.startsWith("40")) return role === "sub" ? { reply: `42${JSON.stringify(["subscribe", CHANNEL])}` } : { ready: true };
      if (text.startsWith('42["reply"')) return { ready: true };
      if (text === "2") return { reply: "3" };
      return { error: `unexpected setup frame ${text.slice(0, 200)}` };
    },
    publishFrame: (data) => `42["publish",{"channel":"${CHANNEL}","event":"tick","data":${data}}]`,
    keepAliveReply: (buf, start, end) => (end - start === 1 && buf[start] === 0x32 ? "3" : null),
    counters: refCounters,
  };
}

export function makeTarget(name: TargetName, secret: string): Target {
  switch (name) {
    case "sinal":
      return sinalTarget(secret);
    case "bun":
    case "ws":
      return plainTarget();
    case "socketio":
      return socketioTarget();
  }
}
