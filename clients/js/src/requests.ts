import { SinalError } from "./errors.ts";
import type { Reply } from "./types.ts";

/** Called exactly once per request: with the reply, or with the error. */
export type ReplyCallback = (error: SinalError | null, reply: Reply | null) => void;

/** A request frame with its id. */
export type RequestFrame = Record<string, unknown> & { id: number };

interface Pending {
  frame: RequestFrame;
  callback: ReplyCallback;
  timer: ReturnType<typeof setTimeout>;
  /** Written to a socket (a reply can only come on that socket). */
  sent: boolean;
}

/** A reply frame as received: `ok:false` ones carry `error`. */
export interface ReplyFrame {
  type: "reply";
  id?: unknown;
  ok?: boolean;
  error?: { code?: string; message?: string; [field: string]: unknown };
  [field: string]: unknown;
}

/**
 * Requests waiting for their reply, by id. Every request ends exactly once: reply, error reply,
 * timeout, or a failure the client reports (socket closed, client closed). Replies are handed
 * over synchronously, so a subscribe reply is handled before the publications that follow it.
 */
export class Requests {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();

  /** Registers a request; its timeout starts now. Returns the frame with its `id`. */
  add(frame: Record<string, unknown>, timeoutMs: number, callback: ReplyCallback): RequestFrame {
    const id = this.nextId++;
    const withId = { ...frame, id };
    const timer = setTimeout(() => {
      if (this.pending.delete(id)) callback(new SinalError("timeout", `no reply to "${String(frame.type)}" within ${timeoutMs} ms`), null);
    }, timeoutMs);
    this.pending.set(id, { frame: withId, callback, timer, sent: false });
    return withId;
  }

  markSent(id: number): void {
    const entry = this.pending.get(id);
    if (entry) entry.sent = true;
  }

  /** Requests not written yet, oldest first. */
  unsent(): RequestFrame[] {
    return [...this.pending.values()].filter((p) => !p.sent).map((p) => p.frame);
  }

  /** Ends the request the reply answers; false when no request waits for it (e.g. timed out). */
  settle(reply: ReplyFrame): boolean {
    if (typeof reply.id !== "number") return false;
    const entry = this.pending.get(reply.id);
    if (entry === undefined) return false;
    this.pending.delete(reply.id);
    clearTimeout(entry.timer);
    if (reply.ok === true) {
      entry.callback(null, reply as Reply);
    } else {
      const { code = "unknown", message = "request failed", ...details } = reply.error ?? {};
      entry.callback(new SinalError(code, message, details), null);
    }
    return true;
  }

  /** Fails the requests `which` selects (all by default). */
  fail(error: SinalError, which: (sent: boolean) => boolean = () => true): void {
    for (const [id, entry] of [...this.pending]) {
      if (!which(entry.sent)) continue;
      this.pending.delete(id);
      clearTimeout(entry.timer);
      entry.callback(error, null);
    }
  }
}
