import type { Static, TSchema } from "@sinclair/typebox";
import { TypeCompiler } from "@sinclair/typebox/compiler";
import { SinalError } from "./errors.ts";

/**
 * Compiles a TypeBox schema into a checker that returns the typed value or throws
 * SinalError("bad_request") naming the first bad field (`[3].channel: Expected string`).
 */
export function validator<T extends TSchema>(schema: T): (value: unknown, prefix?: string) => Static<T> {
  const checker = TypeCompiler.Compile(schema);
  return (value, prefix = "") => {
    if (checker.Check(value)) return value;
    const first = checker.Errors(value).First();
    const label = `${prefix}${first?.path ? first.path.slice(1) : ""}`.replace(/\.$/, "") || "body";
    throw new SinalError("bad_request", `${label}: ${first?.message ?? "invalid"}`);
  };
}
