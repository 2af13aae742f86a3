/**
 * Hostile client, finding 1 of issue 10: replays requested by a socket that never reads.
 *
 *   bun bench/hostile/replays.ts [--root <checkout>] [--messages 1000] [--bytes 16000]
 *       [--sockets 10] [--replays 60] [--observe-seconds 15] [--after-seconds 5] [--cap-mib 2048]
 *
 * 1. A plain user token (`sub_channels: ["room:*"]`) fills `room:r1` with `--messages` chat
 *    messages of `--bytes` characters over `--sockets` sockets (lib.ts `fillRoom`: at most 100
 *    frames at once per socket, the default RATE_LIMIT_BURST, so the server's own rate limit is
 *    respected). A reading socket subscribed to the room first: its epoch is the one replayed and
 *    its own `user_joined` is the room's first publication, so the replay starts at offset 1.
 * 2. One more socket of that user stops reading (TCP backpressure, bench/lib/rawws.ts `pause`) and
 *    sends `--replays` subscribes with `since: {epoch, offset: last - messages}` in one write, each
 *    asking for the whole room again.
 * 3. The server's VmRSS is sampled every 250 ms for `--observe-seconds`, beside the attacking
 *    socket's TCP state (/proc/net/tcp) and `sinal_slow_consumer_closes_total`. Then the socket
 *    reads again for up to 3 s (to read a close frame if the server sent one), is dropped, and
 *    RSS is read `--after-seconds` later. Past `--cap-mib` the server is killed.
 *
 * Prints one summary line; bench/results/hostile-replays-latest.json has every sample.
 */
import { loadavg } from "../lib/proc.ts";
import { JsonClient, type Frame } from "../lib/jsonws.ts";
import { cli, commitOf, fillRoom, guard, metric, mib, report, RssSampler, startTarget, tcpState, userToken } from "./lib.ts";

const { root, opts } = cli({ messages: 1000, bytes: 16000, sockets: 10, replays: 60, "observe-seconds": 15, "after-seconds": 5, "cap-mib": 2048 });
guard(60 + opts["observe-seconds"] + opts["after-seconds"] + 60);
const log = (s: string) => process.stderr.write(`[replays] ${s}\n`);

log(`starting sinal from ${root} (${commitOf(root)})`);
const target = await startTarget(root);
const load = loadavg();
const token = userToken(target.secret, "attacker");

const fill = await fillRoom(target.port, token, "r1", opts.messages, opts.bytes, opts.sockets);
const { reader, lastOffset, acked, refused } = fill;
const since = { epoch: fill.epoch, offset: Math.max(0, lastOffset - opts.messages) };
log(`room:r1 filled: ${acked} messages acknowledged (${refused} refused and resent) in ${fill.seconds.toFixed(1)} s; last offset ${lastOffset}; replaying from offset ${since.offset}`);

// The attack.
const attacker = await JsonClient.connect(target.port, token);
attacker.raw.pause();
const localPort = attacker.raw.socket!.localPort;
await Bun.sleep(500);
const t0 = performance.now();
const sampler = new RssSampler(target, t0, 250, opts["cap-mib"] * 1024);
const beforeKb = sampler.samples[0]!.kb;
const closesBefore = await metric(target.base, "sinal_slow_consumer_closes_total");
attacker.raw.sendTexts(Array.from({ length: opts.replays }, (_, i) => JSON.stringify({ type: "subscribe", id: i + 1, channel: "room:r1", since })));
log(`${opts.replays} subscribes with since sent at RSS ${mib(beforeKb)} MiB; observing for ${opts["observe-seconds"]} s`);

const tcp: { ms: number; state: string; rxQueue: number }[] = [];
let tcpLeftAt: number | null = null;
let serverClosedAt: number | null = null;
let metricsInFlight = false;
const watch = setInterval(() => {
  const ms = Math.round(performance.now() - t0);
  const s = tcpState(localPort, target.port);
  tcp.push({ ms, state: s?.state ?? "gone", rxQueue: s?.rxQueue ?? 0 });
  if (tcpLeftAt === null && s?.state !== "ESTABLISHED") tcpLeftAt = ms;
  if (serverClosedAt === null && !metricsInFlight && sampler.capped === null) {
    metricsInFlight = true;
    void metric(target.base, "sinal_slow_consumer_closes_total").then((n) => {
      metricsInFlight = false;
      if (n > closesBefore && serverClosedAt === null) serverClosedAt = ms;
    });
  }
}, 250);
for (let s = 0; s < opts["observe-seconds"] && sampler.capped === null; s++) {
  await Bun.sleep(1000);
  const last = sampler.samples.at(-1)!;
  log(`t=${(last.ms / 1000).toFixed(1)} s RSS ${mib(last.kb)} MiB, tcp ${tcp.at(-1)?.state} (unread ${tcp.at(-1)?.rxQueue} B)`);
}
clearInterval(watch);
const endOfAttackKb = sampler.sample();

// Read again for up to 3 s: a server that closed the socket sent a close frame after what it had queued.
const seen: Record<string, number> = {};
let bytesRead = 0;
attacker.onFrame = (f: Frame, bytes: number) => {
  const key = f.type === "reply" ? `reply ${f.ok ? "ok" : (f.error?.code ?? "error")}` : String(f.type);
  seen[key] = (seen[key] ?? 0) + 1;
  bytesRead += bytes;
};
if (sampler.capped === null) {
  attacker.raw.resume();
  for (let i = 0; i < 30 && !attacker.isClosed; i++) await Bun.sleep(100);
}
const closeSeen = attacker.closeReason;
attacker.raw.terminate();
reader.raw.terminate();
await Bun.sleep(opts["after-seconds"] * 1000);
sampler.stop();
const afterKb = sampler.sample();
const alive = sampler.capped === null && (await fetch(`${target.base}/health`, { signal: AbortSignal.timeout(2000) }).then((r) => r.ok, () => false));

const sec = (ms: number | null) => (ms === null ? null : (ms / 1000).toFixed(1));
const closedText =
  sampler.capped !== null
    ? `server killed at the ${mib(opts["cap-mib"] * 1024)} MiB cap at ${sec(sampler.capped.ms)} s`
    : serverClosedAt !== null || tcpLeftAt !== null || attacker.closeCode !== null
      ? `closed: server counted a 4009 at ${sec(serverClosedAt) ?? "-"} s, TCP left ESTABLISHED at ${sec(tcpLeftAt) ?? "-"} s, close frame read after resuming: ${closeSeen ?? "none within 3 s"}`
      : `never closed within ${opts["observe-seconds"]} s (no 4009 counted, TCP still ESTABLISHED; reading again for 3 s gave no close frame)`;
const line =
  `hostile replays | ${target.commit} | ${opts.replays} replays of ${opts.messages} x ${opts.bytes} B on one non-reading socket | ` +
  `RSS before ${mib(beforeKb)} MiB, peak ${mib(sampler.peakKb)} MiB at ${sec(sampler.peakMs)} s, end of attack ${mib(endOfAttackKb)} MiB, ` +
  `${opts["after-seconds"]} s after the socket was dropped ${mib(afterKb)} MiB | socket ${closedText} | ` +
  `frames read in the 3 s of reading: ${Object.entries(seen).map(([k, v]) => `${k} ${v}`).join(", ") || "none"} | server ${alive ? "alive" : "DOWN"}`;
report("hostile-replays", line, {
  commit: target.commit,
  root,
  opts,
  loadavg_before: load,
  since,
  fill: { acked, refused, lastOffset },
  rss_kb: { before: beforeKb, peak: sampler.peakKb, peak_ms: sampler.peakMs, end_of_attack: endOfAttackKb, after: afterKb },
  capped: sampler.capped,
  server_counted_4009_ms: serverClosedAt,
  tcp_left_established_ms: tcpLeftAt,
  close_after_resume: closeSeen,
  frames_after_resume: seen,
  bytes_after_resume: bytesRead,
  alive,
  samples: sampler.samples,
  tcp,
});
process.exit(0);
