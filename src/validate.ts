import { Kind, type Static, type TSchema } from "@sinclair/typebox";
import { ValueErrorType, type ValueError } from "@sinclair/typebox/errors";
import { TypeCompiler, type TypeCheck } from "@sinclair/typebox/compiler";
import { SinalError } from "./errors.ts";

/**
 * Compiles a TypeBox schema into a checker that returns the typed value or throws
 * SinalError("bad_request") naming the first bad field (`[3].channel: Expected string`).
 */
export function validator<T extends TSchema>(schema: T): (value: unknown, prefix?: string) => Static<T> {
  const checker = TypeCompiler.Compile(schema);
  return (value, prefix = "") => {
    if (checker.Check(value)) return value;
    const { path, message } = firstError(checker, value);
    const label = `${prefix}${path.slice(1)}`.replace(/\.$/, "") || "body";
    throw new SinalError("bad_request", `${label}: ${message}`);
  };
}

/**
 * The first reason `value` fails `checker`: its JSON-pointer path (`/status`, "" for the root) and
 * a message. TypeBox says only "Expected union value" for a union; this names what it accepts
 * instead (see describeUnion).
 */
export function firstError(checker: TypeCheck<TSchema>, value: unknown): { path: string; message: string } {
  const first = checker.Errors(value).First();
  if (first === undefined) return { path: "", message: "invalid" };
  return first.type === ValueErrorType.Union ? describeUnion(first) : { path: first.path, message: first.message };
}

/**
 * A union of literals (and null) lists them: `expected one of "open", "closed"`. Any other union
 * reports the one branch the value came closest to: of the branches of its JSON type, the one
 * whose first error is not a missing property (`{ "all": false }` against `{ids} | {all: true}`
 * hears `all: Expected true`). With no such single branch it names what the union accepts
 * (`expected integer or string`, `expected an object with "ids" or an object with "all"`).
 */
function describeUnion(error: ValueError): { path: string; message: string } {
  const members = (error.schema.anyOf ?? []) as TSchema[];
  if (members.length > 0 && members.every(isValue)) {
    return { path: error.path, message: `expected one of ${members.map(valueName).join(", ")}` };
  }
  const kind = jsonType(error.value);
  const firsts = members.map((member, i) => (accepts(member.type, kind) ? error.errors[i]?.First() : undefined));
  let closest = firsts.filter((first) => first !== undefined);
  if (closest.length > 1) closest = closest.filter((first) => first.type !== ValueErrorType.ObjectRequiredProperty);
  if (closest.length === 1) {
    const inner = closest[0]!;
    return inner.type === ValueErrorType.Union ? describeUnion(inner) : { path: inner.path, message: inner.message };
  }
  const names = [...new Set(members.map((member) => (isValue(member) ? valueName(member) : typeName(member))))];
  return { path: error.path, message: `expected ${names.join(" or ")}` };
}

const isValue = (member: TSchema) => member[Kind] === "Literal" || member[Kind] === "Null";
const valueName = (member: TSchema) => (member[Kind] === "Null" ? "null" : JSON.stringify(member.const));

function typeName(member: TSchema): string {
  const required = (member.required ?? []) as string[];
  if (member.type === "object" && required.length > 0) return `an object with ${required.map((key) => JSON.stringify(key)).join(" and ")}`;
  return typeof member.type === "string" ? member.type : "a value";
}

function jsonType(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  return typeof value;
}

/** Whether a schema `type` is the JSON type of the value (an integer schema takes any number, then says why not). */
function accepts(type: unknown, kind: string): boolean {
  return type === kind || (kind === "number" && type === "integer");
}
