import { SinalError } from "./errors.ts";

/**
 * The bound every publication's data has (MAX_FRAME_BYTES, as serialized JSON bytes): the
 * Publisher checks it on every path, and routes that store something first (a notification, a
 * room's meta) check it before storing.
 */

/** `value` as JSON, or payload_too_large naming `field` when that is more than `maxBytes` bytes. */
export function serializeWithin(value: unknown, maxBytes: number, field: string): string {
  const json = JSON.stringify(value) ?? "null";
  // A string has at least as many UTF-8 bytes as UTF-16 units, and at most three per unit.
  const bytes = json.length * 3 <= maxBytes ? json.length : Buffer.byteLength(json);
  if (bytes > maxBytes) throw new SinalError("payload_too_large", `${field}: ${bytes} bytes of JSON; at most ${maxBytes}`);
  return json;
}

/** Throws payload_too_large as `serializeWithin` does; an absent field (undefined) passes. */
export function checkDataSize(value: unknown, maxBytes: number, field: string): void {
  if (value !== undefined) serializeWithin(value, maxBytes, field);
}
