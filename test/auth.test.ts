import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { generateKeyPairSync, type KeyObject } from "node:crypto";
import { SignJWT } from "jose";
import { Client, handshake, SECRET, startServer, type TestServer } from "./helpers.ts";

const now = () => Math.floor(Date.now() / 1000);
const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");

function sign(claims: Record<string, unknown>, secret = SECRET): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: "HS256" }).sign(new TextEncoder().encode(secret));
}

async function expect401(server: TestServer, token: string, message: string) {
  const res = await handshake(`${server.ws}?token=${token}`);
  expect(res.status).toBe(401);
  expect(await res.json()).toEqual({ error: { code: "unauthorized", message } });
}

describe("upgrade authentication (HS256)", () => {
  let server: TestServer;
  beforeAll(async () => (server = await startServer()));
  afterAll(() => server.stop());

  test("welcomes a client with a valid token in ?token=", async () => {
    const token = await server.token({ tenant: "acme", user: "u1" });
    const { client, welcome } = await Client.connect(`${server.ws}?token=${token}`);
    expect(welcome).toEqual({
      type: "welcome",
      client: expect.any(String),
      user: "u1",
      tenant: "acme",
      ping_interval_ms: 25000,
      expires_at: expect.any(Number),
    });
    expect(welcome.expires_at).toBeGreaterThan(now() + 3500);
    client.close();
  });

  test("accepts the token from the Authorization header", async () => {
    const token = await server.token({ user: "hdr" });
    const { client, welcome } = await Client.connect(server.ws, { headers: { Authorization: `Bearer ${token}` } });
    expect(welcome.user).toBe("hdr");
    client.close();
  });

  test("accepts the token as a bearer subprotocol and answers sinal.v1, never the bearer entry", async () => {
    const token = await server.token({ user: "sp" });
    const { client, welcome } = await Client.connect(server.ws, { protocols: ["sinal.v1", `bearer.${token}`] });
    expect(welcome.user).toBe("sp");
    expect(client.socket.protocol).toBe("sinal.v1");
    client.close();
    const res = await handshake(server.ws, { "Sec-WebSocket-Protocol": `sinal.v1, bearer.${token}` });
    expect(res.status).toBe(101);
    expect(res.headers.get("sec-websocket-protocol")).toBe("sinal.v1");
  });

  test("refuses a bearer subprotocol offered without sinal.v1 with 400 rather than echo the token", async () => {
    const token = await server.token({});
    const res = await handshake(server.ws, { "Sec-WebSocket-Protocol": `bearer.${token}` });
    expect(res.status).toBe(400);
    expect(((await res.json()) as any).error.code).toBe("bad_request");
  });

  test("the Authorization header wins over ?token=", async () => {
    const good = await server.token({ user: "first" });
    const { client, welcome } = await Client.connect(`${server.ws}?token=garbage`, { headers: { Authorization: `Bearer ${good}` } });
    expect(welcome.user).toBe("first");
    client.close();
    const res = await handshake(`${server.ws}?token=${good}`, { Authorization: "Bearer garbage" });
    expect(res.status).toBe(401);
  });

  test("refuses a missing token with 401 before the upgrade", async () => {
    const res = await handshake(server.ws);
    expect(res.status).toBe(401);
    expect(res.headers.get("upgrade")).toBeNull();
    expect(((await res.json()) as any).error.code).toBe("unauthorized");
  });

  test("refuses a token signed with another secret", async () => {
    await expect401(server, await sign({ sub: "u1", tid: "acme", exp: now() + 60 }, "another-secret-that-is-also-long-enough!!"), "token signature is invalid");
  });

  test("refuses an alg:none token", async () => {
    await expect401(server, `${b64({ alg: "none", typ: "JWT" })}.${b64({ sub: "u1", tid: "acme", exp: now() + 60 })}.`, "token is unsigned (alg none is not allowed)");
  });

  test("refuses an expired token", async () => {
    await expect401(server, await sign({ sub: "u1", tid: "acme", exp: now() - 10 }), "token expired");
  });

  test("refuses a token that is not yet valid", async () => {
    await expect401(server, await sign({ sub: "u1", tid: "acme", exp: now() + 600, nbf: now() + 300 }), "token not yet valid");
  });

  test("refuses a token without sub, without tid, without exp, or with a malformed tid", async () => {
    await expect401(server, await sign({ tid: "acme", exp: now() + 60 }), 'token claim "sub" is missing or not a valid user id');
    await expect401(server, await sign({ sub: "u1", exp: now() + 60 }), 'token claim "tid" is missing or not a valid tenant id');
    await expect401(server, await sign({ sub: "u1", tid: "Acme Corp", exp: now() + 60 }), 'token claim "tid" is missing or not a valid tenant id');
    await expect401(server, await sign({ sub: "u1", tid: "acme" }), 'token claim "exp" is invalid or missing');
  });

  test("refuses garbage", async () => {
    await expect401(server, "not.a.jwt", "token is malformed");
  });

  test("counts refused upgrades in the auth failure metric", async () => {
    await handshake(server.ws);
    const text = await (await fetch(`${server.http}/metrics`)).text();
    expect(text).toMatch(/sinal_auth_failures_total\{reason="missing"\} [1-9]/);
  });
});

describe("upgrade authentication with a public key", () => {
  for (const [alg, type, options] of [
    ["RS256", "rsa", { modulusLength: 2048 }],
    ["ES256", "ec", { namedCurve: "P-256" }],
  ] as const) {
    test(`verifies ${alg} tokens against JWT_PUBLIC_KEY and refuses HS256 ones`, async () => {
      const { publicKey, privateKey } = generateKeyPairSync(type as "rsa", options as any) as unknown as { publicKey: KeyObject; privateKey: KeyObject };
      const pem = publicKey.export({ type: "spki", format: "pem" }).toString();
      const server = await startServer({ JWT_SECRET: "", JWT_PUBLIC_KEY: pem });
      try {
        const token = await new SignJWT({ sub: "pk", tid: "acme", exp: now() + 60 }).setProtectedHeader({ alg }).sign(privateKey);
        const { client, welcome } = await Client.connect(`${server.ws}?token=${token}`);
        expect(welcome.user).toBe("pk");
        client.close();
        // An HS256 token "signed" with the public key text is the classic algorithm-confusion attack.
        await expect401(server, await sign({ sub: "pk", tid: "acme", exp: now() + 60 }, pem), "token algorithm not allowed");
      } finally {
        await server.stop();
      }
    });
  }
});

describe("Origin check at the upgrade", () => {
  test("same-origin only by default: a page from another origin gets 403, no Origin passes", async () => {
    const server = await startServer();
    try {
      const token = await server.token({});
      const foreign = await handshake(`${server.ws}?token=${token}`, { Origin: "https://evil.example" });
      expect(foreign.status).toBe(403);
      expect(((await foreign.json()) as any).error.code).toBe("forbidden");
      const same = await handshake(`${server.ws}?token=${token}`, { Origin: `http://127.0.0.1:${server.port}` });
      expect(same.status).toBe(101);
      expect((await handshake(`${server.ws}?token=${token}`)).status).toBe(101);
    } finally {
      await server.stop();
    }
  });

  test("ALLOWED_ORIGINS admits exactly the listed origins", async () => {
    const server = await startServer({ ALLOWED_ORIGINS: "https://app.example.com" });
    try {
      const token = await server.token({});
      expect((await handshake(`${server.ws}?token=${token}`, { Origin: "https://app.example.com" })).status).toBe(101);
      expect((await handshake(`${server.ws}?token=${token}`, { Origin: "https://app.example.com.evil.example" })).status).toBe(403);
    } finally {
      await server.stop();
    }
  });
});
