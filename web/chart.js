// A small time-series chart on a <canvas>: bars for one series, lines for the others. No library.

const niceCeil = (n) => {
  if (n <= 5) return 5;
  const magnitude = 10 ** Math.floor(Math.log10(n));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * magnitude >= n) return step * magnitude;
  return 10 * magnitude;
};

const cssVar = (name, fallback) => getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;

/**
 * Draws `points` (oldest first). `bars` and each of `lines` name a numeric field of a point.
 * Returns the y-axis maximum it used.
 */
export function drawChart(canvas, points, { bars, lines = [] }) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || canvas.width;
  const height = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);

  const pad = { left: 40, right: 8, top: 8, bottom: 20 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const fields = [bars, ...lines];
  const max = niceCeil(Math.max(0, ...points.flatMap((p) => fields.map((f) => p[f] ?? 0))));
  const y = (v) => pad.top + plotH - (v / max) * plotH;
  const slot = plotW / Math.max(1, points.length);
  const x = (i) => pad.left + i * slot + slot / 2;

  // grid and y labels
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = cssVar("--muted", "#8a94a6");
  ctx.strokeStyle = cssVar("--grid", "#2a3140");
  ctx.lineWidth = 1;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (let i = 0; i <= 4; i++) {
    const v = (max / 4) * i;
    const yy = Math.round(y(v)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(pad.left, yy);
    ctx.lineTo(width - pad.right, yy);
    ctx.stroke();
    ctx.fillText(Number.isInteger(v) ? String(v) : v.toFixed(1), pad.left - 6, yy);
  }
  ctx.textAlign = "left";
  ctx.textBaseline = "alphabetic";
  ctx.fillText("−10 min", pad.left, height - 4);
  ctx.textAlign = "right";
  ctx.fillText("now", width - pad.right, height - 4);

  // bars
  ctx.fillStyle = cssVar(`--series-${bars}`, "#4f8cff");
  points.forEach((p, i) => {
    const v = p[bars] ?? 0;
    if (v <= 0) return;
    const top = y(v);
    ctx.fillRect(x(i) - slot * 0.35, top, slot * 0.7, pad.top + plotH - top);
  });

  // lines
  for (const field of lines) {
    ctx.strokeStyle = cssVar(`--series-${field}`, "#36c37a");
    ctx.lineWidth = 2;
    ctx.beginPath();
    points.forEach((p, i) => (i === 0 ? ctx.moveTo(x(i), y(p[field] ?? 0)) : ctx.lineTo(x(i), y(p[field] ?? 0))));
    ctx.stroke();
  }
  return max;
}
