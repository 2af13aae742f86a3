import { describe, expect, test } from "bun:test";
import { matchesAny, mayPublish, maySubscribe, parseChannel, type Channel } from "../src/channel.ts";
import { SinalError } from "../src/errors.ts";
import { Namespaces } from "../src/namespaces.ts";

function codeOf(fn: () => unknown): string | null {
  try {
    fn();
    return null;
  } catch (err) {
    return err instanceof SinalError ? err.code : "not a SinalError";
  }
}

describe("parseChannel", () => {
  test("maps a channel to <tenant>/<channel> and keeps kind and id", () => {
    expect(parseChannel("acme", "room:42")).toEqual({ tenant: "acme", kind: "room", id: "42", name: "room:42", topic: "acme/room:42" });
    expect(parseChannel("acme", "global")).toEqual({ tenant: "acme", kind: "global", id: null, name: "global", topic: "acme/global" });
    expect(parseChannel("t", "user:a.b@c-d_e").id).toBe("a.b@c-d_e");
  });

  test("knows exactly the kinds of the contract", () => {
    for (const ok of ["global", "system", "presence", "dept:x", "room:x", "user:x", "roulette:x", "strategy:x", "sync:x"]) {
      expect(codeOf(() => parseChannel("t", ok))).toBeNull();
    }
    for (const unknown of ["lobby:1", "global:1", "presence:x", "room", "user", "rooms:1"]) {
      expect(codeOf(() => parseChannel("t", unknown))).toBe("unknown_channel");
    }
  });

  test("refuses names outside the grammar, including a tenant prefix or slash", () => {
    for (const bad of ["", "Room:1", "room:", "room:a b", "acme/room:1", "room:1/2", `room:${"x".repeat(129)}`, "room::1"]) {
      expect(codeOf(() => parseChannel("t", bad))).toBe("bad_request");
    }
    expect(codeOf(() => parseChannel("t", 42))).toBe("bad_request");
  });
});

describe("permission patterns", () => {
  const ch = (name: string) => parseChannel("acme", name);

  test("kind:* matches every id of that kind only; * matches everything; others match exactly", () => {
    expect(matchesAny(["room:*"], ch("room:a.b"))).toBe(true);
    expect(matchesAny(["room:*"], ch("dept:a"))).toBe(false);
    expect(matchesAny(["room:*"], ch("global"))).toBe(false);
    expect(matchesAny(["*"], ch("sync:customer"))).toBe(true);
    expect(matchesAny(["dept:sales"], ch("dept:sales"))).toBe(true);
    expect(matchesAny(["dept:sales"], ch("dept:sales2"))).toBe(false);
    expect(matchesAny(["dept:sal*"], ch("dept:sales"))).toBe(false);
    expect(matchesAny(undefined, ch("room:1"))).toBe(false);
  });

  test("subscribe: own user channel and public channels always, other users never", () => {
    expect(maySubscribe("u1", [], ch("user:u1"))).toBe(true);
    expect(maySubscribe("u1", ["*"], ch("user:u2"))).toBe(false);
    expect(maySubscribe("u1", ["user:*"], ch("user:u2"))).toBe(false);
    for (const name of ["global", "system"]) expect(maySubscribe("u1", [], ch(name))).toBe(true);
    expect(maySubscribe("u1", [], ch("room:1"))).toBe(false);
    // Who is online in the tenant is granted like any channel: exactly `presence`, or `*`.
    expect(maySubscribe("u1", [], ch("presence"))).toBe(false);
    expect(maySubscribe("u1", ["presence:*", "room:*"], ch("presence"))).toBe(false);
    expect(maySubscribe("u1", ["presence"], ch("presence"))).toBe(true);
    expect(maySubscribe("u1", ["*"], ch("presence"))).toBe(true);
  });

  test("publish needs a grant even for public channels", () => {
    const ns = (c: Channel) => Namespaces.builtIn().get(c.kind)!;
    expect(mayPublish("u1", [], ch("global"), ns(ch("global")))).toBe(false);
    expect(mayPublish("u1", ["global"], ch("global"), ns(ch("global")))).toBe(true);
    expect(mayPublish("u1", ["*"], ch("user:u2"), ns(ch("user:u2")))).toBe(false);
  });
});
