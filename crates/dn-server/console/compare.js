"use strict";
// Runs side by side: several jobs' train and eval loss overlaid (by step or by tokens seen) with the config
// fields that differ between them; and a job's metrics as CSV or JSON, one row per step. Loaded before
// app.js, whose helpers (el, svg, show, getJson, scope) these functions call.

const SERIES_COLORS = ["#2f6fde", "#d9480f", "#2b8a3e", "#9c36b5", "#e67700", "#0b7285", "#c2255c", "#5c940d"];
const MAX_COMPARED = SERIES_COLORS.length;

// Each step's metrics (a redone step's last report) and each eval's, by step, from a job's log entries.
function metricsRows(items) {
  const byStep = new Map();
  for (const entry of items) {
    const data = entry.data || {};
    if (data.event !== "step_complete" && data.event !== "eval_complete") continue;
    if (typeof data.step !== "number") continue;
    let row = byStep.get(data.step) || { step: data.step };
    if (data.event === "step_complete") {
      row = Object.fromEntries(Object.entries(row).filter(([k]) => k === "step" || k.startsWith("eval/")));
    }
    for (const [k, v] of Object.entries(data)) {
      if (typeof v === "number" && (k.includes("/") || k === "epoch")) row[k] = v;
    }
    byStep.set(data.step, row);
  }
  return [...byStep.values()].sort((a, b) => a.step - b.step);
}

function metricsCsv(rows) {
  const columns = ["step"];
  for (const row of rows) for (const k of Object.keys(row)) if (!columns.includes(k)) columns.push(k);
  const lines = [columns.join(",")];
  for (const row of rows) lines.push(columns.map((c) => (c in row ? String(row[c]) : "")).join(","));
  return lines.join("\n") + "\n";
}

// Saves `text` as a file named `name` (a blob URL, allowed by the page's policy).
function saveText(text, name, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = el("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// The train-loss line and eval points of one job, with tokens seen (the sum of each step's tokens) at each.
function lossSeries(rows) {
  const train = [];
  const evals = [];
  let tokens = 0;
  for (const row of rows) {
    if (typeof row["train/num_tokens"] === "number") tokens += row["train/num_tokens"];
    if (typeof row["train/loss"] === "number") train.push({ step: row.step, tokens, loss: row["train/loss"] });
    if (typeof row["eval/loss"] === "number") evals.push({ step: row.step, tokens, loss: row["eval/loss"] });
  }
  return { train, evals };
}

function compareChart(runs, axis) {
  const [w, h, left, right, top, bottom] = [640, 280, 56, 16, 12, 28];
  const points = runs.flatMap((r) => r.series.train.concat(r.series.evals));
  const node = svg("svg", { id: "compare-chart", viewBox: `0 0 ${w} ${h}`, role: "img", "aria-label": `loss by ${axis}` });
  if (points.length === 0) {
    node.append(svg("text", { x: w / 2, y: h / 2, "text-anchor": "middle", class: "axis" }, "no steps yet"));
    return node;
  }
  const xs = points.map((p) => p[axis]);
  const ys = points.map((p) => p.loss);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs, Math.min(...xs) + 1)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (y1 - y0 < 1e-9) { y0 -= 0.5; y1 += 0.5; }
  const X = (x) => left + (x - x0) / (x1 - x0) * (w - left - right);
  const Y = (y) => top + (y1 - y) / (y1 - y0) * (h - top - bottom);
  node.append(svg("rect", { x: left, y: top, width: w - left - right, height: h - top - bottom, class: "frame" }));
  for (const y of [y0, (y0 + y1) / 2, y1]) {
    node.append(svg("text", { x: left - 4, y: Y(y) + 4, "text-anchor": "end", class: "axis" }, y.toFixed(3)));
  }
  const label = axis === "tokens" ? "tokens seen" : "step";
  node.append(svg("text", { x: left, y: h - 8, class: "axis" }, `${label} ${x0}`));
  node.append(svg("text", { x: w - right, y: h - 8, "text-anchor": "end", class: "axis" }, `${label} ${x1}`));
  runs.forEach((run, i) => {
    const color = SERIES_COLORS[i];
    const line = run.series.train.map((p) => `${X(p[axis])},${Y(p.loss)}`).join(" ");
    node.append(svg("polyline", { class: "series", stroke: color, "data-job": run.job.id, points: line }));
    for (const p of run.series.evals) {
      node.append(svg("circle", { class: "series-eval", fill: color, cx: X(p[axis]), cy: Y(p.loss), r: 4 },
        svg("title", {}, `${run.job.name || run.job.id}: eval loss ${p.loss.toFixed(4)} at step ${p.step}`)));
    }
  });
  return node;
}

// The config fields whose values are not the same in every job, one row each.
function configDiff(runs) {
  const keys = [...new Set(runs.flatMap((r) => Object.keys(r.job.config || {})))].sort();
  const shown = (v) => (v === undefined ? "—" : typeof v === "object" ? JSON.stringify(v) : String(v));
  const rows = keys
    .filter((k) => new Set(runs.map((r) => shown((r.job.config || {})[k]))).size > 1)
    .map((k) => el("tr", { class: "diff-row" }, el("th", {}, k), runs.map((r) => el("td", {}, shown((r.job.config || {})[k])))));
  const head = el("tr", {}, el("th", {}, "field"), runs.map((r, i) => el("th", { class: "series-key", "data-color": i }, r.job.name || r.job.id)));
  return el("table", { id: "config-diff", class: "config" }, el("thead", {}, head),
    el("tbody", {}, rows.length ? rows : [el("tr", {}, el("td", {}, "every config field is the same"))]));
}

async function comparePage(query) {
  const ids = [...new Set((query.get("ids") || "").split(",").filter(Boolean))].slice(0, MAX_COMPARED);
  if (ids.length < 2) {
    show(el("h1", {}, "Compare jobs"), el("p", {}, "Pick two or more jobs in the list, then Compare."));
    return;
  }
  const runs = await Promise.all(ids.map(async (id) => {
    const base = `${scope()}/training/jobs/${encodeURIComponent(id)}`;
    const [job, logs] = await Promise.all([getJson(base), getJson(`${base}/logs`)]);
    return { job, series: lossSeries(metricsRows(logs.items)) };
  }));
  const axis = el("select", { id: "compare-axis", "aria-label": "x axis" },
    el("option", { value: "step" }, "by step"), el("option", { value: "tokens" }, "by tokens seen"));
  const chartBox = el("div", {}, compareChart(runs, "step"));
  axis.addEventListener("change", () => chartBox.replaceChildren(compareChart(runs, axis.value)));
  const legend = el("p", { class: "legend" }, runs.map((r, i) =>
    el("span", { class: "compare-key" }, el("span", { class: `swatch swatch-${i}` }), " ",
      el("a", { href: `#/job/${encodeURIComponent(r.job.id)}` }, r.job.name || r.job.id), " ")));
  show(
    el("h1", {}, `Compare ${runs.length} jobs`),
    el("p", {}, "Train loss (lines) and eval loss (points) ", axis),
    chartBox,
    legend,
    el("h2", {}, "Config fields that differ"),
    configDiff(runs),
  );
}
