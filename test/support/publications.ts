import type { Frame } from "../helpers.ts";
import type { Follower, FollowEvent, Position } from "./follower.ts";

// What the cluster failover tests (test/cluster-failover.test.ts) publish and what their
// followers must have received: publisher loops over REST that keep every acknowledged position,
// and the check of one follower's frames against them (docs/protocol.md "History and recovery").

/** An acknowledged publication: the position the node answered. */
export interface Ack extends Position {
  channel: string;
}

/** What a publisher loop sent: acknowledged positions, and the requests answered otherwise (status: count). */
export interface Published {
  acks: Ack[];
  refused: Map<number, number>;
}

/**
 * POSTs `batch(i)` to `/v1/publish` of `target(i)` for i = 0, 1, ... until `stop()` or `max`
 * requests, one request at a time; `onAck(i)` after each answered 200.
 */
export function publishLoop(key: string, target: (i: number) => string, batch: (i: number) => { channel: string; event: string; data: unknown }[], max: number, pauseMs: number, onAck?: (i: number) => void) {
  let stopped = false;
  const published: Published = { acks: [], refused: new Map() };
  const done = (async () => {
    for (let i = 0; i < max && !stopped; i++) {
      const items = batch(i);
      const res = await fetch(`${target(i)}/v1/publish`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${key}` },
        body: JSON.stringify(items),
      });
      const body = (await res.json()) as Frame;
      if (res.status === 200) {
        (body as Position[]).forEach((position, n) => published.acks.push({ channel: items[n]!.channel, epoch: position.epoch, offset: position.offset }));
        onAck?.(i);
      } else {
        published.refused.set(res.status, (published.refused.get(res.status) ?? 0) + 1);
        if (res.status !== 503 || body.error?.code !== "unavailable") throw new Error(`publish answered ${res.status}: ${JSON.stringify(body)}`);
      }
      if (pauseMs > 0) await Bun.sleep(pauseMs);
    }
  })();
  // Awaited by the test; a test that fails first must not turn its rejection into an unhandled one.
  done.catch(() => undefined);
  return { published, done, stop: () => (stopped = true) };
}

/** The last acknowledged position of each channel (the highest offset of the last epoch acknowledged). */
export function finalPositions(acks: Ack[]): Map<string, Position> {
  const final = new Map<string, Position>();
  for (const ack of acks) {
    const known = final.get(ack.channel);
    if (known === undefined || known.epoch !== ack.epoch || ack.offset > known.offset) final.set(ack.channel, { epoch: ack.epoch, offset: ack.offset });
  }
  return final;
}

/** What one follower's events say, checked against the rules of docs/protocol.md "History and recovery". */
export interface Verdict {
  /** Frames out of line: a `pub` that is not the next offset of the position held, with the reason. */
  violations: string[];
  /** Replies `recovered:false` (what was sent, what came back). */
  notRecovered: { since: Position; epoch: string; offset: number; reason?: string }[];
  /** Close codes, in order. */
  closes: number[];
  /** Subscribe replies (ok). */
  subscribes: number;
  /** `since` replies refused (e.g. `unavailable`), by code. */
  refused: string[];
  /** Acknowledged publications of its channel after its first subscribe it neither got nor was told it missed. */
  missing: Ack[];
  /** Publications replayed after a `recovered:true` (missed while it was away). */
  replayed: number;
  /** The position it ended at. */
  end: Position | null;
}

/**
 * Walks a follower's events: every `pub` must be the next offset of the position held (the first
 * subscribe's, then each pub's; a `recovered:true` keeps it, a `recovered:false` moves it to the
 * reply's and forfeits what lay between). Then every acknowledged publication of the channel
 * after the first subscribe must have been received, or forfeited by a `recovered:false`.
 */
export function verdictOf(follower: Follower, channel: string, acks: Ack[]): Verdict {
  const verdict: Verdict = { violations: [], notRecovered: [], closes: [], subscribes: 0, refused: [], missing: [], replayed: 0, end: null };
  const received = new Set<string>();
  /** Ranges told missed: in `epoch`, the offsets in (after, upTo]. */
  const forfeited: { epoch: string; after: number; upTo: number }[] = [];
  // Held in an object: TypeScript does not follow assignments made in the nested step function.
  const at: { position: Position | null; first: Position | null; replayUpTo: number } = { position: null, first: null, replayUpTo: 0 };
  for (const event of follower.events) verdictStep(event);
  verdict.end = at.position;
  for (const ack of acks) {
    if (ack.channel !== channel) continue;
    if (at.first !== null && ack.epoch === at.first.epoch && ack.offset <= at.first.offset) continue;
    if (received.has(`${ack.epoch}:${ack.offset}`)) continue;
    if (forfeited.some((f) => f.epoch === ack.epoch && ack.offset > f.after && ack.offset <= f.upTo)) continue;
    verdict.missing.push(ack);
  }
  return verdict;

  function verdictStep(event: FollowEvent): void {
    switch (event.type) {
      case "subscribed":
        verdict.subscribes++;
        if (event.since === undefined) {
          at.position = at.first = { epoch: event.epoch, offset: event.offset };
        } else if (event.recovered) {
          if (event.epoch !== event.since.epoch) verdict.violations.push(`recovered:true across epochs ${JSON.stringify(event)}`);
          at.replayUpTo = event.offset;
        } else {
          verdict.notRecovered.push({ since: event.since, epoch: event.epoch, offset: event.offset, reason: event.reason });
          if (event.reason === undefined) verdict.violations.push(`recovered:false without a reason ${JSON.stringify(event)}`);
          forfeited.push({ epoch: event.since.epoch, after: event.since.offset, upTo: Number.MAX_SAFE_INTEGER });
          forfeited.push({ epoch: event.epoch, after: event.epoch === event.since.epoch ? event.since.offset : 0, upTo: event.offset });
          at.position = { epoch: event.epoch, offset: event.offset };
        }
        return;
      case "pub": {
        const key = `${event.epoch}:${event.offset}`;
        if (received.has(key)) verdict.violations.push(`${key} received twice`);
        received.add(key);
        if (at.position === null || event.epoch !== at.position.epoch || event.offset !== at.position.offset + 1) {
          verdict.violations.push(`${key} after ${at.position === null ? "nothing" : `${at.position.epoch}:${at.position.offset}`}`);
        }
        if (event.offset <= at.replayUpTo) verdict.replayed++;
        at.position = { epoch: event.epoch, offset: event.offset };
        return;
      }
      case "closed":
        verdict.closes.push(event.code);
        return;
      case "refused":
        verdict.refused.push(event.code);
        return;
      case "ephemeral":
        return;
    }
  }
}
