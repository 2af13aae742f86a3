import { Type, type Static, type TSchema } from "@sinclair/typebox";
import { TypeCompiler, type TypeCheck } from "@sinclair/typebox/compiler";
import { SinalError } from "../errors.ts";
import { exceedsJsonDepth } from "../json-depth.ts";
import { EventName, Resource, RoomId, UserId } from "../ids.ts";
import { firstError } from "../validate.ts";

/** Client frames (docs/protocol.md "Client frames"), validated once here; handlers receive typed values. */

// A number id must survive the round trip: past 2^53 JSON.parse rounds it and the reply would carry another id.
const Id = Type.Union([Type.Integer({ minimum: Number.MIN_SAFE_INTEGER, maximum: Number.MAX_SAFE_INTEGER }), Type.String({ maxLength: 128 })]);
const ChannelName = Type.String({ minLength: 1, maxLength: 256 });

const schemas = {
  subscribe: Type.Object({
    channel: ChannelName,
    since: Type.Optional(Type.Object({ epoch: Type.String({ maxLength: 64 }), offset: Type.Integer({ minimum: 0 }) })),
    /** A channel token: grants this one channel to this user (ws/handlers.ts checkChannelToken). */
    token: Type.Optional(Type.String({ minLength: 1, maxLength: 8192 })),
  }),
  unsubscribe: Type.Object({ channel: ChannelName }),
  publish: Type.Object({ channel: ChannelName, event: EventName, data: Type.Unknown() }),
  refresh: Type.Object({ token: Type.String({ minLength: 1, maxLength: 8192 }) }),
  ping: Type.Object({}),
  message: Type.Object({
    room: RoomId,
    content: Type.String({ minLength: 1, maxLength: 16_000 }),
    client_msg_id: Type.Optional(Type.String({ minLength: 1, maxLength: 128 })),
  }),
  typing: Type.Object({ room: RoomId, typing: Type.Boolean() }),
  read: Type.Object({ room: RoomId, message_id: Type.Integer({ minimum: 1 }) }),
  presence: Type.Object({ status: Type.Union([Type.Literal("online"), Type.Literal("away"), Type.Literal("busy")]) }),
  lock: Type.Object({ resource: Resource }),
  unlock: Type.Object({ resource: Resource }),
} satisfies Record<string, TSchema>;

export type FrameType = keyof typeof schemas;
export type Frame<T extends FrameType> = Static<(typeof schemas)[T]>;
export type AnyFrame = { [T in FrameType]: { type: T; id?: number | string } & Frame<T> }[FrameType];

const checkers = Object.fromEntries(Object.entries(schemas).map(([type, schema]) => [type, TypeCompiler.Compile(schema)])) as {
  [T in FrameType]: TypeCheck<(typeof schemas)[T]>;
};
const idChecker = TypeCompiler.Compile(Id);

/** What the parser could recover from a frame, so an error can still be answered with its id. */
export interface ParseFailure {
  id?: number | string;
  error: SinalError;
}

/**
 * Parses a text frame; returns the typed frame or the error to answer with (and the id if one was
 * readable). Nesting deeper than `maxDepth` (MAX_JSON_DEPTH) is refused before JSON.parse.
 */
export function parseFrame(text: string, maxDepth: number): AnyFrame | ParseFailure {
  if (exceedsJsonDepth(text, maxDepth)) {
    return { error: new SinalError("bad_request", `frame nests arrays and objects deeper than ${maxDepth} levels`) };
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { error: new SinalError("bad_request", "frame is not valid JSON") };
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return { error: new SinalError("bad_request", "frame must be a JSON object") };
  }
  const frame = value as Record<string, unknown>;
  let id: number | string | undefined;
  if (frame.id !== undefined) {
    if (!idChecker.Check(frame.id)) return { error: new SinalError("bad_request", "id must be a safe integer (|id| < 2^53) or a string of at most 128 characters") };
    id = frame.id;
  }
  const type = frame.type;
  if (typeof type !== "string") return { id, error: new SinalError("bad_request", "frame needs a string field \"type\"") };
  if (!Object.hasOwn(checkers, type)) {
    return { id, error: new SinalError("unknown_type", `unknown frame type "${type.slice(0, 64)}"`) };
  }
  const checker = checkers[type as FrameType];
  if (!checker.Check(frame)) {
    const { path, message } = firstError(checker, frame);
    return { id, error: new SinalError("bad_request", `${path ? path.slice(1) : "frame"}: ${message}`) };
  }
  return frame as AnyFrame;
}

export function isParseFailure(value: AnyFrame | ParseFailure): value is ParseFailure {
  return (value as ParseFailure).error instanceof SinalError;
}
