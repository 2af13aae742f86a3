// The demo page: one SinalClient (the SDK served at /client.js) feeding four panels.
import { SinalClient } from "/client.js";
import { mountChat } from "/web/chat.js";
import { mountDashboard } from "/web/dashboard.js";
import { mountPresence } from "/web/presence.js";
import { mountRoulettes } from "/web/roulette.js";

const TOKEN_KEY = "sinal.token";
const $ = (id) => document.getElementById(id);

/**
 * Settings from the fragment (`#token=...&roulettes=a,b&room=lobby`): a fragment never reaches
 * the server or a proxy log. The token moves to sessionStorage and is wiped from the address bar.
 */
function readSettings() {
  const params = new URLSearchParams(location.hash.slice(1));
  const fromUrl = params.get("token");
  if (fromUrl) {
    sessionStorage.setItem(TOKEN_KEY, fromUrl);
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
  }
  const roulettes = (params.get("roulettes") ?? "demo-1,demo-2").split(",").map((s) => s.trim()).filter(Boolean);
  return { token: sessionStorage.getItem(TOKEN_KEY), roulettes, room: params.get("room") || "lobby" };
}

/** The token's claims, for display only (the server verifies it). */
function claimsOf(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=")));
  } catch {
    return null;
  }
}

function showTokenPanel(message) {
  $("token-panel").hidden = false;
  if (message) $("token-message").textContent = message;
  $("token-input").focus();
}

function setupTokenForm() {
  $("token-toggle").addEventListener("click", () => {
    $("token-panel").hidden = !$("token-panel").hidden;
  });
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token-input").value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    location.reload();
  });
}

/**
 * Why the server refuses `token`, or null when it takes it (or cannot be reached: then the
 * socket's failure is the network's). A browser sees an upgrade refused with 401 only as a close
 * 1006 before any open, with no reason; a REST route that takes any user token answers the same
 * token 401 with the reason ("token expired", "token signature is invalid", ...).
 */
async function tokenRefusal(token) {
  let res;
  try {
    res = await fetch("/v1/me/preferences", { headers: { authorization: `Bearer ${token}` } });
  } catch {
    return null;
  }
  if (res.status !== 401) return null;
  const body = await res.json().catch(() => null);
  return body?.error?.message ?? "HTTP 401";
}

/** Average of `now − pub.ts` over the last 200 publications this page received. */
function latencyMeter() {
  const samples = [];
  return {
    add(pub) {
      if (typeof pub.ts !== "number") return;
      samples.push(Math.max(0, Date.now() - pub.ts));
      if (samples.length > 200) samples.shift();
    },
    average() {
      return samples.length === 0 ? null : samples.reduce((a, b) => a + b, 0) / samples.length;
    },
    get count() {
      return samples.length;
    },
  };
}

function main() {
  setupTokenForm();
  const settings = readSettings();
  if (!settings.token) {
    showTokenPanel("No token yet: open this page as /#token=<jwt> or paste one here.");
    return;
  }
  const claims = claimsOf(settings.token);
  if (!claims) {
    showTokenPanel("That does not look like a JWT. Paste another one.");
    return;
  }
  const me = { user: claims.sub, name: claims.name ?? claims.sub, tenant: claims.tid };
  $("whoami").textContent = `${me.name} · ${me.tenant}`;

  const url = `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/ws`;
  const client = new SinalClient({ url, token: settings.token });
  const latency = latencyMeter();
  let isOpen = false;
  const refuse = (why) => {
    client.close(); // no retry with a token the server refuses
    showTokenPanel(`The server refused this token: ${why}. Paste another one.`);
  };

  client.on("state", (state) => {
    $("conn-state").textContent = state;
    $("conn-state").dataset.state = state;
  });
  client.on("welcome", () => {
    isOpen = true;
    $("token-panel").hidden = true;
  });
  client.on("close", (info) => {
    const wasOpen = isOpen;
    isOpen = false;
    // 4001 (expired) and 4003 (forbidden) carry their reason; the SDK stops on both (no getToken).
    if (info.code === 4001 || info.code === 4003) return refuse(`${info.reason || "refused"} (${info.code})`);
    // Closed before any welcome with a transport code (1006): a refused upgrade or the network.
    // Asking over REST tells them apart; on a network failure the SDK keeps retrying.
    if (!wasOpen && info.code < 4000 && info.code !== 1001) {
      void tokenRefusal(settings.token).then((why) => {
        if (why !== null && !isOpen) refuse(why);
      });
    }
  });
  client.on("publication", (pub) => latency.add(pub));

  mountRoulettes(client, { boards: $("boards"), form: $("roulette-form"), input: $("roulette-id") }, settings.roulettes);
  mountChat(client, me, settings.room);
  mountPresence(client, me);
  mountDashboard(settings.token, latency);
  client.connect().catch(() => {});
}

main();
