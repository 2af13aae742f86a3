import { SinalError } from "../errors.ts";
import { exceedsJsonDepth } from "../json-depth.ts";

export interface BodyLimits {
  /** MAX_BODY_BYTES: bytes past this are never buffered; the request ends with 413. */
  maxBytes: number;
  /** BODY_TIMEOUT_MS: the whole body must have arrived this long after the request started, or 408. */
  timeoutMs: number;
  /** MAX_JSON_DEPTH: deeper nesting is refused before JSON.parse sees it. */
  maxDepth: number;
}

/**
 * Reads REST request bodies as JSON, whatever their content type: service callers often omit it
 * or send curl's default (form-urlencoded), which Elysia would otherwise turn into a form or drop.
 *
 * The body is read as a stream, so a caller can neither make the server buffer past the byte cap
 * (Bun's own `maxRequestBodySize` is set out of reach, see app.ts) nor hold a request open by
 * trickling its body: the deadline counts from the request's arrival, not from the last byte.
 */
export class BodyReader {
  private readonly arrivedAt = new WeakMap<Request, number>();
  private readonly readToEnd = new WeakSet<Request>();

  constructor(private readonly limits: BodyLimits) {}

  /** Called as a request arrives (an onRequest hook): its body deadline counts from here. */
  arrived(request: Request): void {
    this.arrivedAt.set(request, performance.now());
  }

  /**
   * True when the request announced a body that was not read to its end. Its answer must close the
   * connection: otherwise Bun keeps the connection to drain the rest of the body first, at whatever
   * pace the caller sends it.
   */
  leftUnread(request: Request): boolean {
    const announcesBody = request.headers.has("transfer-encoding") || Number(request.headers.get("content-length") ?? 0) > 0;
    return announcesBody && !this.readToEnd.has(request);
  }

  /** The body parsed as JSON; throws 413, 408 or 400 as SinalError. */
  async json(request: Request): Promise<unknown> {
    const { maxBytes, maxDepth } = this.limits;
    if (Number(request.headers.get("content-length") ?? 0) > maxBytes) throw tooLarge(maxBytes);
    const text = new TextDecoder().decode(await this.bytes(request));
    if (text.trim() === "") throw new SinalError("bad_request", "body is empty; expected JSON");
    if (exceedsJsonDepth(text, maxDepth)) throw new SinalError("bad_request", `body nests arrays and objects deeper than ${maxDepth} levels`);
    try {
      return JSON.parse(text);
    } catch {
      throw new SinalError("bad_request", "body is not valid JSON");
    }
  }

  private async bytes(request: Request): Promise<Uint8Array> {
    const { maxBytes, timeoutMs } = this.limits;
    if (request.body === null) {
      this.readToEnd.add(request);
      return new Uint8Array(0);
    }
    const reader = request.body.getReader();
    const waitMs = (this.arrivedAt.get(request) ?? performance.now()) + timeoutMs - performance.now();
    let timer: Timer | undefined;
    const deadline = new Promise<"deadline">((resolve) => (timer = setTimeout(() => resolve("deadline"), Math.max(0, waitMs))));
    const chunks: Uint8Array[] = [];
    let size = 0;
    try {
      for (;;) {
        const next = await Promise.race([reader.read(), deadline]);
        if (next === "deadline") throw new SinalError("request_timeout", `request body did not arrive within ${timeoutMs} ms`);
        if (next.done) break;
        size += next.value.byteLength;
        if (size > maxBytes) throw tooLarge(maxBytes);
        chunks.push(next.value);
      }
    } catch (err) {
      // What Bun holds of the rest is dropped; the answer then closes the connection (leftUnread).
      reader.cancel().catch(() => {});
      throw err instanceof SinalError ? err : new SinalError("bad_request", "request body was cut off");
    } finally {
      clearTimeout(timer);
    }
    this.readToEnd.add(request);
    return Buffer.concat(chunks, size);
  }
}

function tooLarge(maxBytes: number): SinalError {
  return new SinalError("payload_too_large", `request body is larger than ${maxBytes} bytes`);
}
