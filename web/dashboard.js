// The stats panel: polls GET /v1/dashboard (API key or admin token) and draws the live chart.
import { drawChart } from "/web/chart.js";

const $ = (id) => document.getElementById(id);
const POLL_MS = 2000;

const formatCount = (n) => (n >= 10_000 ? `${(n / 1000).toFixed(n >= 100_000 ? 0 : 1)}k` : String(n));

function formatUptime(seconds) {
  const d = Math.floor(seconds / 86_400);
  const h = Math.floor((seconds % 86_400) / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${m}m`;
  return m > 0 ? `${m}m ${s}s` : `${s}s`;
}

function renderTopChannels(rows) {
  const body = $("top-channels").tBodies[0];
  if (rows.length === 0) {
    const empty = document.createElement("tr");
    const cell = document.createElement("td");
    cell.colSpan = 2;
    cell.className = "muted";
    cell.textContent = "no publications in the last hour";
    empty.append(cell);
    body.replaceChildren(empty);
    return;
  }
  const max = rows[0].events || 1;
  body.replaceChildren(
    ...rows.map(({ channel, events }) => {
      const row = document.createElement("tr");
      row.dataset.channel = channel;
      const name = document.createElement("td");
      name.textContent = channel;
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.width = `${Math.max(2, (events / max) * 100)}%`; // CSSOM, allowed by the page's CSP
      name.append(bar);
      const count = document.createElement("td");
      count.textContent = formatCount(events);
      row.append(name, count);
      return row;
    }),
  );
}

function render(stats) {
  $("stat-tenant").textContent = stats.tenant;
  $("stat-connections").textContent = String(stats.connections.current);
  $("stat-connections").title = `${stats.connections.subscriptions} subscriptions, ${stats.connections.opened_last_hour} connects in the last hour`;
  $("stat-messages").textContent = formatCount(stats.last_hour.messages);
  $("stat-notifications").textContent = formatCount(stats.last_hour.notifications);
  $("stat-events").textContent = formatCount(stats.last_hour.events);
  $("stat-rate").textContent = String(stats.deliveries_per_sec);
  $("stat-ratio").textContent = `${(stats.delivery_ratio * 100).toFixed(stats.delivery_ratio === 1 ? 0 : 2)}%`;
  $("stat-drops").textContent = formatCount(stats.drops.total);
  $("stat-drops").title = `since start: ${stats.drops.dropped_sends} dropped sends, ${stats.drops.conflated} conflated, ${stats.drops.slow_consumer_closes} slow-consumer closes`;
  $("stat-uptime").textContent = formatUptime(stats.uptime_s);
  renderTopChannels(stats.top_channels);
  const canvas = $("chart");
  canvas.dataset.max = String(drawChart(canvas, stats.series.live.points, { bars: "events", lines: ["deliveries", "messages"] }));
}

export function mountDashboard(token, latency) {
  const section = $("stats");
  const message = $("stats-message");
  let timer = 0;
  let lastStats = null;

  const showLatency = () => {
    const avg = latency.average();
    $("stat-latency").textContent = avg === null ? "–" : `${avg < 10 ? avg.toFixed(1) : Math.round(avg)} ms`;
    $("stat-latency").title = `average over the last ${latency.count} publications received by this page`;
  };

  async function poll() {
    try {
      const res = await fetch("/v1/dashboard", { headers: { authorization: `Bearer ${token}` } });
      if (res.status === 401 || res.status === 403) {
        section.dataset.state = "forbidden";
        message.textContent = "the stats need an admin token (roles: [\"admin\"]) or an API key";
        return; // no point asking again with the same token
      }
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      lastStats = await res.json();
      render(lastStats);
      section.dataset.state = "live";
      message.textContent = `updated ${new Date().toLocaleTimeString()}`;
    } catch (err) {
      message.textContent = `stats unavailable (${err.message ?? err}); retrying`;
    }
    showLatency();
    timer = setTimeout(poll, POLL_MS);
  }
  window.addEventListener("resize", () => {
    if (lastStats) render(lastStats);
  });
  setInterval(showLatency, 1000);
  void poll();
  return () => clearTimeout(timer);
}
