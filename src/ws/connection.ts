import type { ServerWebSocket } from "bun";
import type { Claims } from "../auth/tokens.ts";
import type { CountRefusal } from "../claims/connection-counts.ts";
import type { Peer } from "../peer.ts";
import type { RateState } from "./rate-limit.ts";
import type { SlowLane } from "./slow-lane.ts";

/** The handlers a Connection forwards Bun's socket events to (implemented by Gateway). */
export interface ConnectionEvents {
  onOpen(conn: Connection): void;
  onMessage(conn: Connection, message: string | Buffer): void;
  onClose(conn: Connection, code: number, reason: string): void;
  /** Bun's socket took what was queued past its backpressure limit. */
  onDrain(conn: Connection): void;
}

/**
 * Per-socket state, passed as `ws.data` at upgrade. Elysia's Bun adapter dispatches socket events
 * to `ws.data.open/message/close`, so these methods receive them without Elysia's per-socket
 * context (with an Elysia `.ws()` route, ws.data holds the whole request context: ~2x the memory per socket).
 * Keep fields few and small: 10,000 of these must fit in a few MB.
 */
export class Connection implements RateState, Peer {
  ws!: ServerWebSocket<Connection>;
  /** Topics this socket is subscribed to, its own user topic first (Bun forgets them before `close`). */
  readonly topics: string[] = [];
  /** Counted in this node's totals and registered with the hub (false when refused at open). */
  registered = false;
  /**
   * The connection-count verdict of its upgrade: null while it holds an admitted slot, the bound
   * it would pass when refused (closed with 4010 at open), "released" once its slot was given back.
   */
  refusal: CountRefusal | "released" | null = null;
  closing = false;
  /** Set while the client is behind and its frames are conflated (see SlowLane). */
  slow: SlowLane | null = null;
  /** The topic whose live frames are held while a subscribe reads history (one at a time), with that subscribe's end. */
  holding: Map<string, Promise<unknown>> | null = null;
  /** The client subscribed to its own user channel itself (later subscribes to it replay nothing). */
  ownChannelClaimed = false;
  /** Topics this connection holds through a channel token; while held, a room's chat frames are allowed too (RoomAccess). */
  tokenChannels: Set<string> | null = null;
  /** Subscribes waiting for an access check (a room's members being read), per topic; an unsubscribe waits for its subscribe. */
  admitting: Map<string, Promise<unknown>> | null = null;
  tokens: number;
  refilledAt: number;
  rejected = 0;
  rejectWindowStart = 0;

  constructor(
    readonly id: string,
    public claims: Claims,
    private readonly events: ConnectionEvents,
    burst: number,
    now: number,
  ) {
    this.tokens = burst;
    this.refilledAt = now;
  }

  get tenant(): string {
    return this.claims.tenant;
  }

  get user(): string {
    return this.claims.user;
  }

  /** The connection's id under the name a Peer (peer.ts) gives it: a Connection is a Peer as it is. */
  get client(): string {
    return this.id;
  }

  /** The token's display name (Peer). */
  get name(): string | undefined {
    return this.claims.name;
  }

  /** Subscriptions the client made (its own user channel, made by the server, not counted). */
  get subscriptions(): number {
    return Math.max(0, this.topics.length - 1);
  }

  open(ws: ServerWebSocket<Connection>): void {
    this.ws = ws;
    this.events.onOpen(this);
  }

  message(_ws: ServerWebSocket<Connection>, message: string | Buffer): void {
    this.events.onMessage(this, message);
  }

  drain(_ws: ServerWebSocket<Connection>): void {
    this.events.onDrain(this);
  }

  close(_ws: ServerWebSocket<Connection>, code: number, reason: string): void {
    this.events.onClose(this, code, reason);
  }
}
