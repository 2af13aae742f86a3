import { SinalError } from "../errors.ts";

/**
 * Throws `payload_too_large` naming `field` when `value` serializes to more than `maxBytes` of
 * JSON: the bound every publication's data has (MAX_FRAME_BYTES), checked at the route so that
 * nothing is stored before it. Undefined (an absent field) passes.
 */
export function checkDataSize(value: unknown, maxBytes: number, field: string): void {
  if (value === undefined) return;
  const size = Buffer.byteLength(JSON.stringify(value));
  if (size > maxBytes) throw new SinalError("payload_too_large", `${field}: ${size} bytes of JSON; at most ${maxBytes}`);
}
