import { describe, expect, test } from "bun:test";
import { exceedsJsonDepth } from "../src/json-depth.ts";

describe("exceedsJsonDepth", () => {
  test("counts arrays and objects alike, scalars not at all", () => {
    expect(exceedsJsonDepth("1", 1)).toBe(false);
    expect(exceedsJsonDepth('"text"', 1)).toBe(false);
    expect(exceedsJsonDepth("{}", 1)).toBe(false);
    expect(exceedsJsonDepth('{"a":[1]}', 1)).toBe(true);
    expect(exceedsJsonDepth('{"a":[1]}', 2)).toBe(false);
    expect(exceedsJsonDepth('[{"a":{}}]', 2)).toBe(true);
  });

  test("measures the deepest point, not the sum of siblings", () => {
    expect(exceedsJsonDepth("[[1],[2],[3],[[4]]]", 3)).toBe(false);
    expect(exceedsJsonDepth("[[1],[2],[3],[[[4]]]]", 3)).toBe(true);
  });

  test("ignores brackets inside strings, including after escaped quotes and backslashes", () => {
    expect(exceedsJsonDepth('{"a":"[[[[{{{{"}', 1)).toBe(false);
    expect(exceedsJsonDepth('{"a":"say \\"[[[[\\" twice"}', 1)).toBe(false);
    expect(exceedsJsonDepth('{"a\\\\":[[1]]}', 2)).toBe(true); // the key ends in a backslash; the string ends before [[
    expect(exceedsJsonDepth('["\\\\", [[1]]]', 2)).toBe(true);
    expect(exceedsJsonDepth('["\\u005b\\u005b"]', 1)).toBe(false);
  });

  test("stray closers cannot make room for deeper nesting after them", () => {
    expect(exceedsJsonDepth("]]]]][[[", 2)).toBe(true);
  });

  test("scans a 100,000-level value at once, without parsing it", () => {
    const deep = "[".repeat(100_000) + "]".repeat(100_000);
    expect(exceedsJsonDepth(deep, 64)).toBe(true);
    expect(exceedsJsonDepth(deep, 100_000)).toBe(false);
  });
});
