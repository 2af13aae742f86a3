import { afterAll, beforeAll, expect, test } from "bun:test";
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import type { Browser, Page } from "playwright-core";
import { post, startServer, type TestServer } from "./helpers.ts";

/**
 * The page at `/` in Debian's headless Chromium, driven by playwright-core: a roulette board that
 * moves on a REST publish, a chat between two users with typing and read receipts, a late joiner
 * who sees the room's last messages, who is online, and the stats panel. Without Chromium the test is skipped with the reason when run by
 * hand; under CI=true it fails (CI installs Chromium in .ci/run).
 */

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const ARTIFACTS = join(import.meta.dir, "../.tmp/artifacts");
// Without the background-networking flags Chromium keeps dialling out, which this machine refuses.
const FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];
const WAIT_MS = 8000;

const hasChromium = existsSync(CHROMIUM);
if (!hasChromium) {
  const reason = `${CHROMIUM} not found (apt-get install chromium, or set CHROMIUM_PATH)`;
  if (process.env.CI === "true") {
    test("headless Chromium is available for the page test", () => {
      throw new Error(reason);
    });
  } else {
    process.stderr.write(`skipping the page's browser test: ${reason}\n`);
  }
}
const browserTest = hasChromium ? test : test.skip;

let server: TestServer;
let browser: Browser;
/** Uncaught errors and console errors of every page, with the URL they came from. */
const pageErrors: string[] = [];

beforeAll(async () => {
  if (!hasChromium) return;
  const { chromium } = await import("playwright-core");
  server = await startServer();
  // launch() gives every run a fresh, empty profile (user data dir) of its own.
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS });
});

afterAll(async () => {
  await browser?.close();
  await server?.stop();
});

async function openPage(token: string, hash = ""): Promise<Page> {
  const context = await browser.newContext({ viewport: { width: 1360, height: 1000 } });
  const page = await context.newPage();
  page.on("pageerror", (err) => pageErrors.push(`${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() === "error") pageErrors.push(`${msg.text()} ${msg.location().url}`);
  });
  await page.goto(`${server.http}/#token=${token}${hash}`);
  await page.locator('#conn-state[data-state="connected"]').waitFor({ timeout: WAIT_MS });
  return page;
}

const textOf = (page: Page, selector: string) => page.locator(selector).textContent({ timeout: WAIT_MS });

browserTest(
  "the page shows live roulette spins, chat with typing and receipts, who is online, and the stats",
  async () => {
    const alice = await server.token({ user: "alice", name: "Alice", subChannels: ["*"], pubChannels: ["*"], roles: ["admin"] });
    const bob = await server.token({ user: "bob", name: "Bob", subChannels: ["*"] });
    const apiKey = await server.apiKey("acme");

    const page1 = await openPage(alice);
    // The token moved to sessionStorage: it is no longer in the address bar.
    expect(page1.url()).not.toContain("token=");
    expect(await textOf(page1, "#whoami")).toBe("Alice · acme");

    // Roulette: a publish over REST lands on the board the page shows.
    const board = page1.locator('[data-roulette="demo-1"]');
    await page1.locator('[data-roulette="demo-1"][data-state="subscribed"]').waitFor({ timeout: WAIT_MS });
    for (const number of [17, 0]) {
      const res = await post(server, "/v1/publish", { channel: "roulette:demo-1", event: "roulette_update", data: { roulette_id: "demo-1", roulette_name: "Table One", number } }, apiKey);
      expect(res.status).toBe(200);
      await board.locator(`.last-number[data-number="${number}"]`).waitFor({ timeout: WAIT_MS });
    }
    expect(await board.locator(".last-number .chip").getAttribute("class")).toContain("green");
    expect(await board.locator(".numbers .chip").allTextContents()).toEqual(["17"]);
    expect(await board.locator("h3").textContent()).toBe("Table One · demo-1");
    expect(await page1.locator('[data-roulette="demo-2"] .last-number').textContent()).toBe("–");

    // A second user: both see each other online.
    const page2 = await openPage(bob);
    await page1.locator('#online li[data-user="bob"][data-status="online"]').waitFor({ timeout: WAIT_MS });
    await page2.locator('#online li[data-user="alice"]').waitFor({ timeout: WAIT_MS });
    await page1.locator('#chat[data-state="subscribed"]').waitFor({ timeout: WAIT_MS });
    await page2.locator('#chat[data-state="subscribed"]').waitFor({ timeout: WAIT_MS });

    // Chat: Alice types (Bob sees it), sends, Bob gets the message and his receipt reaches Alice.
    await page1.locator("#chat-input").pressSequentially("hello from alice");
    await page2.locator("#typing", { hasText: "alice is typing" }).waitFor({ timeout: WAIT_MS });
    await page1.locator("#chat-send").click();
    const received = page2.locator("#messages li.message", { hasText: "hello from alice" });
    await received.waitFor({ timeout: WAIT_MS });
    expect(await received.locator(".sender").textContent()).toBe("alice");
    await page2.locator("#typing:empty").waitFor({ timeout: WAIT_MS });
    const mine = page1.locator("#messages li.message.mine", { hasText: "hello from alice" });
    await mine.locator(".receipt.read", { hasText: "read by bob" }).waitFor({ timeout: WAIT_MS });
    expect(await page1.locator("#chat-input").inputValue()).toBe("");

    // Bob answers; Alice sees it once.
    await page2.locator("#chat-input").fill("hi alice");
    await page2.locator("#chat-input").press("Enter");
    await page1.locator("#messages li.message", { hasText: "hi alice" }).waitFor({ timeout: WAIT_MS });
    expect(await page1.locator("#messages li.message", { hasText: "hi alice" }).count()).toBe(1);

    // Stats (Alice is an admin): connections, messages, busiest channels, latency and the chart.
    await page1.locator("#stat-connections", { hasText: /^2$/ }).waitFor({ timeout: WAIT_MS });
    await page1.locator("#stat-messages", { hasText: /^2$/ }).waitFor({ timeout: WAIT_MS });
    expect(await textOf(page1, "#stat-tenant")).toBe("acme");
    expect(await page1.locator('#top-channels tr[data-channel="roulette:demo-1"]').count()).toBe(1);
    expect(await page1.locator('#top-channels tr[data-channel="room:lobby"]').count()).toBe(1);
    expect(await textOf(page1, "#stat-latency")).toMatch(/^\d+(\.\d)? ms$/);
    expect(await textOf(page1, "#stat-ratio")).toBe("100%");
    expect(await textOf(page1, "#stat-drops")).toBe("0");
    expect(Number(await page1.locator("#chart").getAttribute("data-max"))).toBeGreaterThan(0);

    // Bob is no admin: his page says so instead of showing numbers.
    await page2.locator('#stats[data-state="forbidden"]').waitFor({ timeout: WAIT_MS });
    expect(await textOf(page2, "#stat-connections")).toBe("–");

    mkdirSync(ARTIFACTS, { recursive: true });
    await page1.screenshot({ path: join(ARTIFACTS, "page.png"), fullPage: true });
    await page2.screenshot({ path: join(ARTIFACTS, "page-user.png"), fullPage: true });
    // The only error any page saw: Bob's one refused stats request (he has no admin role).
    expect(pageErrors).toEqual([`Failed to load resource: the server responded with a status of 403 (Forbidden) ${server.http}/v1/dashboard`]);
  },
  30_000,
);

browserTest(
  "a user who joins a room late sees its last messages, then the live ones",
  async () => {
    const apiKey = await server.apiKey("acme");
    for (const content of ["before you came", "and this too"]) {
      expect((await post(server, "/v1/rooms/late/messages", { sender: "erin", content }, apiKey)).status).toBe(200);
    }
    const dave = await server.token({ user: "dave", subChannels: ["*"] });
    const page = await openPage(dave, "&room=late");
    const contents = page.locator("#messages li.message .content");
    await page.locator("#messages li.message", { hasText: "and this too" }).waitFor({ timeout: WAIT_MS });
    expect(await contents.allTextContents()).toEqual(["before you came", "and this too"]);
    expect((await post(server, "/v1/rooms/late/messages", { sender: "erin", content: "live now" }, apiKey)).status).toBe(200);
    await page.locator("#messages li.message", { hasText: "live now" }).waitFor({ timeout: WAIT_MS });
    expect(await contents.allTextContents()).toEqual(["before you came", "and this too", "live now"]);
    await page.context().close();
  },
  15_000,
);

browserTest("a page without a token asks for one, and a pasted token connects", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${server.http}/`);
  await page.locator("#token-panel:not([hidden])").waitFor({ timeout: WAIT_MS });
  const token = await server.token({ user: "carol", subChannels: ["*"] });
  await page.locator("#token-input").fill(token);
  await page.locator("#token-save").click();
  await page.locator('#conn-state[data-state="connected"]').waitFor({ timeout: WAIT_MS });
  expect(await textOf(page, "#whoami")).toBe("carol · acme");
  await context.close();
}, 15_000);

/** `sinal_auth_failures_total{reason}` of the server: each refused upgrade counts once. */
async function authFailures(reason: string): Promise<number> {
  const text = await (await fetch(`${server.http}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`sinal_auth_failures_total{reason="${reason}"}`));
  return line === undefined ? 0 : Number(line.split(" ").at(-1));
}

browserTest("a token the upgrade refuses (401): the page shows the server's reason and stops retrying", async () => {
  const { mintToken } = await import("../src/auth/tokens.ts");
  const foreign = mintToken("another-secret-that-is-also-long-enough!!", { tenant: "acme", user: "mallory", ttlSec: 3600 });
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${server.http}/#token=${foreign}`);
  await page.locator("#token-panel:not([hidden])").waitFor({ timeout: WAIT_MS });
  await page.locator("#token-message", { hasText: "The server refused this token: token signature is invalid." }).waitFor({ timeout: WAIT_MS });
  await page.locator('#conn-state[data-state="disconnected"]').waitFor({ timeout: WAIT_MS });
  // Stopped: no more upgrades over two backoff periods (500 ms, then 1 s, less jitter).
  const refused = await authFailures("bad_signature");
  expect(refused).toBeGreaterThanOrEqual(1);
  await page.waitForTimeout(1500);
  expect(await authFailures("bad_signature")).toBe(refused);
  expect(await page.locator("#conn-state").textContent()).toBe("disconnected");
  await context.close();
}, 15_000);

browserTest("a token that expires on an open page (4001): the page shows why and stops retrying", async () => {
  const token = await server.token({ user: "dave", subChannels: ["*"], ttlSec: 2 });
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${server.http}/#token=${token}`);
  await page.locator('#conn-state[data-state="connected"]').waitFor({ timeout: WAIT_MS });
  await page.locator("#token-message", { hasText: "The server refused this token: token expired (4001)." }).waitFor({ timeout: WAIT_MS });
  await page.locator('#conn-state[data-state="disconnected"]').waitFor({ timeout: WAIT_MS });
  expect(await page.locator("#token-panel").isHidden()).toBe(false);
  await context.close();
}, 15_000);
