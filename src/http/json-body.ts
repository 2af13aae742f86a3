import { SinalError } from "../errors.ts";

/** Parses a body Elysia left as text (a caller that sent no JSON content type). */
export function jsonBody(body: unknown): unknown {
  if (typeof body !== "string") return body;
  try {
    return JSON.parse(body);
  } catch {
    throw new SinalError("bad_request", "body is not valid JSON");
  }
}

/**
 * Reads the request body as JSON whatever its content type: service callers often omit it or send
 * curl's default (form-urlencoded), which Elysia would otherwise turn into a form or drop.
 */
export async function readJsonBody(request: Request, maxBytes: number): Promise<unknown> {
  const tooLarge = () => new SinalError("payload_too_large", `request body is larger than ${maxBytes} bytes`);
  if (Number(request.headers.get("content-length") ?? 0) > maxBytes) throw tooLarge();
  let text: string;
  try {
    text = await request.text();
  } catch (err) {
    // A chunked body past Bun's `maxRequestBodySize` fails here rather than before the handler.
    if (err instanceof Error && err.message.includes("maxRequestBodySize")) throw tooLarge();
    throw err;
  }
  if (Buffer.byteLength(text) > maxBytes) throw tooLarge();
  if (text.trim() === "") throw new SinalError("bad_request", "body is empty; expected JSON");
  return jsonBody(text);
}
