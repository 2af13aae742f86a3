/**
 * Chat load generator (run by bench/chat/run.ts on its own core). Opens `users` authenticated
 * sockets, `roomSize` users per room, each subscribed to its room; then for each phase sends
 * `message` frames at a fixed total rate, round-robin over users, and records the send-to-receive
 * latency of every `new_message` delivery (send time is carried in the content, one clock).
 * Prints one JSON line per phase on stdout.
 */
import { SignJWT } from "jose";

interface Config {
  url: string;
  secret: string;
  tenant: string;
  users: number;
  roomSize: number;
  phases: { name: string; rate: number; seconds: number }[];
}

const config = JSON.parse(process.argv[2]!) as Config;
const key = new TextEncoder().encode(config.secret);
const rooms = Math.ceil(config.users / config.roomSize);
const PAD = "x".repeat(60);

let delivered = 0;
let acked = 0;
let errors = 0;
let latencies = new Float64Array(1 << 22);
let latencyCount = 0;

function onFrame(text: string): void {
  // Cheap field checks instead of JSON.parse: this runs ~10x per message.
  if (text.startsWith('{"type":"pub"') && text.includes('"event":"new_message"')) {
    delivered++;
    const at = text.indexOf('"content":"t=');
    if (at >= 0) {
      const sentAt = Number(text.slice(at + 13, text.indexOf(";", at)));
      if (latencyCount < latencies.length) latencies[latencyCount++] = performance.now() - sentAt;
    }
  } else if (text.startsWith('{"type":"reply"')) {
    if (text.includes('"ok":true')) acked++;
    else errors++;
  } else if (text.startsWith('{"type":"error"')) errors++;
}

async function open(i: number): Promise<WebSocket> {
  const token = await new SignJWT({ tid: config.tenant, sub_channels: ["room:*"] })
    .setProtectedHeader({ alg: "HS256" })
    .setSubject(`u${i}`)
    .setExpirationTime("2h")
    .sign(key);
  const ws = new WebSocket(`${config.url}?token=${token}`);
  await new Promise<void>((resolve, reject) => {
    ws.onmessage = (e) => {
      const text = String(e.data);
      if (text.startsWith('{"type":"welcome"')) {
        ws.send(JSON.stringify({ type: "subscribe", id: 0, channel: `room:r${i % rooms}` }));
      } else if (text.startsWith('{"type":"reply","id":0')) {
        ws.onmessage = (ev) => onFrame(String(ev.data));
        resolve();
      }
    };
    ws.onerror = () => reject(new Error(`socket ${i} failed`));
  });
  return ws;
}

const sockets: WebSocket[] = [];
for (let i = 0; i < config.users; i += 100) {
  sockets.push(...(await Promise.all(Array.from({ length: Math.min(100, config.users - i) }, (_, j) => open(i + j)))));
}
await Bun.sleep(500); // let the user_joined announcements drain
process.stdout.write(JSON.stringify({ event: "ready", sockets: sockets.length }) + "\n");

function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

let next = 0;
let msgId = 1;
for (const phase of config.phases) {
  delivered = 0;
  acked = 0;
  errors = 0;
  latencyCount = 0;
  const started = performance.now();
  const cpu0 = cpuMs();
  let sent = 0;
  const total = Math.round(phase.rate * phase.seconds);
  while (sent < total) {
    const due = Math.min(total, Math.floor(((performance.now() - started) / 1000) * phase.rate));
    for (; sent < due; sent++) {
      const i = next++ % sockets.length;
      const content = `t=${performance.now()};${PAD}`;
      sockets[i]!.send(`{"type":"message","id":${msgId++},"room":"r${i % rooms}","content":"${content}"}`);
    }
    await Bun.sleep(2);
  }
  const sendEnd = performance.now();
  const expected = total * config.roomSize;
  // Wait for the tail (bounded): every delivery and every ack, or 10 s.
  while ((delivered < expected || acked + errors < total) && performance.now() - sendEnd < 10_000) await Bun.sleep(5);
  const elapsed = (performance.now() - started) / 1000;
  const sorted = latencies.subarray(0, latencyCount).sort();
  const pct = (p: number) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]! : NaN);
  process.stdout.write(
    JSON.stringify({
      event: "phase",
      name: phase.name,
      offered: phase.rate,
      sent: total,
      sendSeconds: (sendEnd - started) / 1000,
      acked,
      errors,
      delivered,
      expected,
      achievedMsgsPerSec: total / ((sendEnd - started) / 1000),
      deliveriesPerSec: delivered / elapsed,
      p50: pct(50),
      p99: pct(99),
      max: sorted.length ? sorted[sorted.length - 1] : NaN,
      loadgenCpuPct: ((cpuMs() - cpu0) / (elapsed * 1000)) * 100,
    }) + "\n",
  );
  if (errors > 0 || delivered < expected) break;
}
for (const ws of sockets) ws.close();
process.exit(0);
