import type { ServerWebSocket } from "bun";
import type { Broker } from "./broker/broker.ts";
import type { Channel } from "./channel.ts";
import type { Metrics } from "./metrics.ts";

/** Where a channel stands: its epoch and the offset of its last publication (0 before any). */
export interface Position {
  epoch: string;
  offset: number;
}

/**
 * Assigns per-channel offsets. Guarantee: for one channel, `next` returns 1, 2, 3 ... with no
 * gaps and no repeats within one epoch; a new epoch means earlier offsets are gone.
 */
export interface Sequencer {
  next(topic: string): Position;
  position(topic: string): Position;
  /**
   * Starts a fresh history for one topic: a new epoch that no client has seen, at offset 0.
   * Used when publications of the topic were lost (a feed's change-stream position was lost),
   * so clients that come back with `since` get `recovered:false`. Other topics are untouched.
   */
  reset(topic: string): Position;
}

/**
 * In-process offsets. History is not kept across restarts, so the epoch is one random value per
 * process start: a client that comes back after a restart sees another epoch and reloads state.
 */
export class MemorySequencer implements Sequencer {
  private readonly offsets = new Map<string, number>();
  /** Topics whose history was reset: their own epoch instead of the process-wide one. */
  private readonly epochs = new Map<string, string>();
  readonly epoch = randomEpoch();

  next(topic: string): Position {
    const offset = (this.offsets.get(topic) ?? 0) + 1;
    this.offsets.set(topic, offset);
    return { epoch: this.epochs.get(topic) ?? this.epoch, offset };
  }

  position(topic: string): Position {
    return { epoch: this.epochs.get(topic) ?? this.epoch, offset: this.offsets.get(topic) ?? 0 };
  }

  reset(topic: string): Position {
    const epoch = randomEpoch();
    this.epochs.set(topic, epoch);
    this.offsets.delete(topic);
    return { epoch, offset: 0 };
  }
}

function randomEpoch(): string {
  return Math.random().toString(36).slice(2, 10).padEnd(8, "0");
}

/**
 * The one path every publication takes (WebSocket publish, REST publish, chat, the MongoDB
 * feeds): assign offset and epoch, serialize once, fan out, count.
 */
export class Publisher {
  constructor(
    private readonly sequencer: Sequencer,
    private readonly broker: Broker,
    private readonly metrics: Metrics,
  ) {}

  /**
   * Assigns the offset and fans out synchronously, before the returned promise settles: a caller
   * that updates its own state in the same step (the feeds' snapshot cache) stays consistent
   * with the positions that subscribe replies report.
   */
  async publish(channel: Channel, event: string, data: unknown): Promise<Position> {
    const position = this.sequencer.next(channel.topic);
    const frame = JSON.stringify({
      type: "pub",
      channel: channel.name,
      event,
      data,
      offset: position.offset,
      epoch: position.epoch,
      ts: Date.now(),
    });
    const reached = this.broker.publish(channel.topic, frame);
    this.metrics.published(channel.tenant, reached);
    return position;
  }

  /**
   * An ephemeral event (typing, presence changes): no offset, no epoch, never in history, and no
   * gap in the channel's offsets. `except` is a sending socket that must not get its own event.
   */
  publishEphemeral(channel: Channel, event: string, data: unknown, except?: ServerWebSocket<unknown>): void {
    const frame = JSON.stringify({ type: "pub", channel: channel.name, event, data, ts: Date.now() });
    const reached = this.broker.publish(channel.topic, frame, except);
    this.metrics.delivered(channel.tenant, reached);
  }

  position(channel: Channel): Position {
    return this.sequencer.position(channel.topic);
  }

  /** A new epoch at offset 0 for this channel only (see Sequencer.reset). */
  resetEpoch(channel: Channel): Position {
    return this.sequencer.reset(channel.topic);
  }
}
