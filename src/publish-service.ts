import { Type, type Static } from "@sinclair/typebox";
import { parseChannel, type Channel } from "./channel.ts";
import { Namespaces } from "./namespaces.ts";
import { SinalError } from "./errors.ts";
import type { Position, Publisher } from "./publisher.ts";
import type { Store } from "./store/store.ts";
import type { AuditLog } from "./audit/audit-log.ts";
import { checkDataSize } from "./data-size.ts";
import { GroupCommit } from "./group-commit.ts";
import { MemoryKeyClaims, type KeyClaims } from "./claims/key-claims.ts";
import { validator } from "./validate.ts";
import { EventName } from "./ids.ts";

const PublishItem = Type.Object({
  channel: Type.String({ minLength: 1, maxLength: 256 }),
  event: EventName,
  data: Type.Unknown(),
  idempotency_key: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
});
export type PublishItem = Static<typeof PublishItem>;
const checkItem = validator(PublishItem);

export const MAX_BATCH = 1000;

/** How long a shared claim on a request's keys outlives a node that died holding it (KeyClaims). */
const CLAIM_TTL_MS = 60_000;

interface ValidItem {
  channel: Channel;
  event: string;
  data: unknown;
  idempotencyKey?: string;
}

/**
 * Service-to-service publishing (REST `/v1/publish`, `/emit-event`): validation of the whole
 * request before anything is published, then idempotent publication through the Publisher.
 */
export class PublishService {
  /** Idempotency keys are stored in group commits shared by concurrent requests. */
  private readonly keyWriter: GroupCommit<{ tenant: string; key: string; response: string }, undefined>;

  constructor(
    private readonly publisher: Publisher,
    private readonly store: Store,
    private readonly maxDataBytes: number,
    private readonly audit: AuditLog,
    commitIntervalMs: number,
    private readonly namespaces: Namespaces = Namespaces.builtIn(),
    /** Keys being published by a request, so two concurrent requests with one key publish once. */
    private readonly claims: KeyClaims = new MemoryKeyClaims(),
  ) {
    this.keyWriter = new GroupCommit(async (batch) => {
      await this.store.putIdempotent(batch, Date.now());
      return batch.map(() => undefined);
    }, commitIntervalMs);
  }


  /** Stores the idempotency keys still queued (a stopping server answers nothing it has not stored). */
  async close(): Promise<void> {
    await this.keyWriter.drain();
  }

  /**
   * Validates every item first (a bad item publishes nothing), then publishes them in order and
   * records who published what in the audit log. Idempotency keys of the whole request are looked
   * up in one query. A key of a durable channel (a room) is stored in the same transaction as its
   * publication, so no crash can publish it twice; a key of a memory channel is stored in a group
   * commit right after its publication (a kill -9 between the two loses the channel's history as
   * well: it restarts under a new epoch, and a retry publishes into that one).
   */
  async publishMany(principal: { tenant: string; actor: string }, items: unknown[]): Promise<Position[]> {
    const { tenant } = principal;
    if (items.length === 0) throw new SinalError("bad_request", "a batch holds at least one publication");
    if (items.length > MAX_BATCH) throw new SinalError("bad_request", `a batch holds at most ${MAX_BATCH} publications`);
    const valid = items.map((item, i) => this.validate(tenant, item, items.length > 1 ? `[${i}].` : ""));
    const keys = [...new Set(valid.flatMap((v) => (v.idempotencyKey === undefined ? [] : [v.idempotencyKey])))];
    const results = keys.length === 0 ? await this.publishAll(valid) : await this.publishIdempotent(tenant, valid, keys);
    const channels = [...new Set(valid.map((v) => v.channel.name))];
    this.audit.record(tenant, "rest_publish", principal.actor, { count: valid.length, channels: channels.slice(0, 20) });
    return results;
  }

  private validate(tenant: string, value: unknown, prefix: string): ValidItem {
    const item = checkItem(value, prefix);
    if (item.data === undefined) throw new SinalError("bad_request", `${prefix}data: required`);
    checkDataSize(item.data, this.maxDataBytes, `${prefix}data`);
    let channel: Channel;
    try {
      channel = parseChannel(tenant, item.channel, this.namespaces);
    } catch (err) {
      if (err instanceof SinalError) throw new SinalError(err.code, `${prefix}channel: ${err.message}`);
      throw err;
    }
    return { channel, event: item.event, data: item.data, idempotencyKey: item.idempotency_key };
  }

  private async publishAll(valid: readonly ValidItem[]): Promise<Position[]> {
    const results: Position[] = [];
    for (const item of valid) results.push(await this.publisher.publish(item.channel, item.event, item.data));
    return results;
  }

  private async publishIdempotent(tenant: string, valid: readonly ValidItem[], keys: readonly string[]): Promise<Position[]> {
    // Waits for other requests publishing one of these keys: their answers are then stored.
    const release = await this.claims.acquire(
      keys.map((key) => `${tenant}\u0000${key}`),
      CLAIM_TTL_MS,
    );
    try {
      const answers = new Map<string, Position>();
      for (const [key, response] of await this.store.getIdempotent(tenant, keys)) answers.set(key, JSON.parse(response) as Position);
      const fresh: { tenant: string; key: string; response: string }[] = [];
      const results: Position[] = [];
      for (const item of valid) {
        const key = item.idempotencyKey;
        const known = key === undefined ? undefined : answers.get(key);
        if (known !== undefined) {
          results.push(known);
          continue;
        }
        // A durable channel stores the key in the publication's own commit: a crash keeps both or neither.
        const together = key !== undefined && this.publisher.history.isDurable(item.channel);
        const position = await this.publisher.publish(item.channel, item.event, item.data, together ? { key: { tenant, key } } : {});
        if (key !== undefined) {
          answers.set(key, position);
          if (!together) fresh.push({ tenant, key, response: JSON.stringify(position) });
        }
        results.push(position);
      }
      // Memory channels: concurrent requests share a commit; each answers only once its keys are stored.
      await Promise.all(fresh.map((entry) => this.keyWriter.write(entry)));
      return results;
    } finally {
      release();
    }
  }
}

/** The scraper's old `/emit-event` shape mapped onto a publish item (docs/protocol.md "Publishing"). */
export function emitEventItem(body: unknown): PublishItem {
  if (typeof body !== "object" || body === null || Array.isArray(body)) throw new SinalError("bad_request", "body must be a JSON object");
  const { event, data, channel, idempotency_key } = body as Record<string, unknown>;
  if (typeof event !== "string") throw new SinalError("bad_request", "event: required string");
  if (idempotency_key !== undefined && typeof idempotency_key !== "string") throw new SinalError("bad_request", "idempotency_key must be a string");
  const key = idempotency_key === undefined ? {} : { idempotency_key };
  if (channel !== undefined) {
    if (typeof channel !== "string") throw new SinalError("bad_request", "channel must be a string");
    return { channel, event, data, ...key };
  }
  const rouletteId = (data as Record<string, unknown> | null | undefined)?.roulette_id;
  const kind = event === "roulette_update" ? "roulette" : event === "strategy_update" ? "strategy" : null;
  if (kind === null) throw new SinalError("bad_request", `no default channel for event "${event}"; pass "channel"`);
  if (typeof rouletteId !== "string" && typeof rouletteId !== "number") {
    throw new SinalError("bad_request", `data.roulette_id is required to route ${event}`);
  }
  return { channel: `${kind}:${rouletteId}`, event, data, ...key };
}
