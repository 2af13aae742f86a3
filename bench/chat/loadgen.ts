/**
 * One chat load-generator process (bench/chat/run.ts starts `workers` of them). It owns whole
 * rooms, so a message's sender and its room's other members share one process and one clock:
 * room r (users r*roomSize .. r*roomSize+roomSize-1) belongs to worker r % workers. It opens an
 * authenticated socket per user, subscribes each to its room, prints `{"event":"ready"}`, then
 * runs the steps it reads on stdin, one JSON line each:
 *
 *   {"rate": <msg/s for this worker>, "seconds": <send time>, "drainSec": <wait for the tail>}
 *
 * A step sends `message` frames at the rate, round-robin over its users, then waits until every
 * ack and every delivery arrived (or drainSec passed), and prints one `{"event":"step", ...}` line:
 * counts, the ack time of the last stored message, a histogram of send-to-receive latencies
 * (the `new_message` as received by the sender's room mates, not by the sender) and this
 * process's CPU time. It exits when stdin closes.
 */
import { SignJWT } from "jose";
import { createInterface } from "node:readline";
import { Histogram } from "./histogram.ts";

interface Config {
  url: string;
  secret: string;
  tenant: string;
  users: number;
  roomSize: number;
  worker: number;
  workers: number;
}

const config = JSON.parse(process.argv[2]!) as Config;
const key = new TextEncoder().encode(config.secret);
const rooms = Math.ceil(config.users / config.roomSize);
const PAD = "x".repeat(60);

const mine: number[] = [];
for (let r = config.worker; r < rooms; r += config.workers) {
  for (let i = r * config.roomSize; i < Math.min(config.users, (r + 1) * config.roomSize); i++) mine.push(i);
}
const roomOf = (user: number) => Math.floor(user / config.roomSize);
const roomSizeOf = (room: number) => Math.min(config.roomSize, config.users - room * config.roomSize);

let delivered = 0;
let expected = 0;
let acked = 0;
let errors = 0;
let lastAckAt = 0;
let histogram = new Histogram();

function onFrame(user: number, text: string): void {
  // Field checks instead of JSON.parse: this runs ~10 times per message.
  if (text.startsWith('{"type":"pub"') && text.includes('"event":"new_message"')) {
    delivered++;
    const at = text.indexOf('"content":"t=');
    if (at < 0) return;
    const semi = text.indexOf(";", at);
    const sender = Number(text.slice(semi + 3, text.indexOf(";", semi + 1)));
    if (sender !== user) histogram.record(performance.now() - Number(text.slice(at + 13, semi)));
  } else if (text.startsWith('{"type":"reply"')) {
    if (text.includes('"ok":true')) {
      acked++;
      lastAckAt = performance.now();
    } else errors++;
  } else if (text.startsWith('{"type":"error"')) errors++;
}

async function open(user: number): Promise<WebSocket> {
  const token = await new SignJWT({ tid: config.tenant, sub_channels: ["room:*"] })
    .setProtectedHeader({ alg: "HS256" })
    .setSubject(`u${user}`)
    .setExpirationTime("2h")
    .sign(key);
  const ws = new WebSocket(`${config.url}?token=${token}`);
  await new Promise<void>((resolve, reject) => {
    ws.onmessage = (e) => {
      const text = String(e.data);
      if (text.startsWith('{"type":"welcome"')) {
        ws.send(JSON.stringify({ type: "subscribe", id: 0, channel: `room:r${roomOf(user)}` }));
      } else if (text.startsWith('{"type":"reply","id":0')) {
        ws.onmessage = (ev) => onFrame(user, String(ev.data));
        resolve();
      }
    };
    ws.onerror = () => reject(new Error(`socket of u${user} failed`));
    ws.onclose = (e) => reject(new Error(`socket of u${user} closed: ${e.code} ${e.reason}`));
  });
  ws.onclose = (e) => {
    process.stderr.write(`loadgen ${config.worker}: socket of u${user} closed: ${e.code} ${e.reason}\n`);
    errors++;
  };
  return ws;
}

const sockets = new Map<number, WebSocket>();
for (let i = 0; i < mine.length; i += 100) {
  const batch = mine.slice(i, i + 100);
  const opened = await Promise.all(batch.map(open));
  batch.forEach((user, j) => sockets.set(user, opened[j]!));
}
await Bun.sleep(500); // let the user_joined announcements drain
process.stdout.write(JSON.stringify({ event: "ready", sockets: sockets.size }) + "\n");

const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

let next = 0;
let msgId = 1;
async function step(rate: number, seconds: number, drainSec: number): Promise<void> {
  delivered = 0;
  expected = 0;
  acked = 0;
  errors = 0;
  lastAckAt = 0;
  histogram = new Histogram();
  const cpu0 = cpuMs();
  const started = performance.now();
  const total = Math.round(rate * seconds);
  let sent = 0;
  while (sent < total) {
    const due = Math.min(total, Math.floor(((performance.now() - started) / 1000) * rate));
    for (; sent < due; sent++) {
      const user = mine[next++ % mine.length]!;
      const room = roomOf(user);
      expected += roomSizeOf(room);
      sockets.get(user)!.send(`{"type":"message","id":${msgId++},"room":"r${room}","content":"t=${performance.now()};u=${user};${PAD}"}`);
    }
    await Bun.sleep(1);
  }
  const sendEnd = performance.now();
  while ((delivered < expected || acked + errors < total) && performance.now() - sendEnd < drainSec * 1000) await Bun.sleep(5);
  const ended = performance.now();
  process.stdout.write(
    JSON.stringify({
      event: "step",
      sent: total,
      sendSec: (sendEnd - started) / 1000,
      acked,
      errors,
      delivered,
      expected,
      drained: delivered >= expected && acked + errors >= total,
      lastAckSec: lastAckAt > 0 ? (lastAckAt - started) / 1000 : 0,
      wallSec: (ended - started) / 1000,
      cpuMs: cpuMs() - cpu0,
      histogram: histogram.toJSON(),
    }) + "\n",
  );
}

for await (const line of createInterface({ input: process.stdin })) {
  const cmd = JSON.parse(line) as { rate: number; seconds: number; drainSec: number };
  await step(cmd.rate, cmd.seconds, cmd.drainSec);
}
for (const ws of sockets.values()) ws.close();
process.exit(0);
