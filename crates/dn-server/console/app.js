// The dn console. Plain DOM, no framework, no build step. Every value that comes from the API is put on the
// page as text (textContent, attributes set one by one), never parsed as HTML. The API key lives in this
// tab's sessionStorage and travels in the X-API-Key header only.
"use strict";

const MAX_LOG_LINES = 5000;
const STREAM_RECONNECTS = 1000;

// ---------- DOM helpers ----------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  for (const child of children.flat()) if (child) node.append(child instanceof Node ? child : String(child));
  return node;
}

function show(...nodes) {
  const main = document.getElementById("main");
  main.replaceChildren(...nodes);
}

function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return isNaN(d) ? String(iso) : d.toLocaleString();
}

function number(x, digits) {
  return typeof x === "number" && isFinite(x) ? x.toFixed(digits) : "";
}

// ---------- session and API ----------

const session = {
  get key() { return sessionStorage.getItem("dn.key"); },
  get org() { return sessionStorage.getItem("dn.org"); },
  get ws() { return sessionStorage.getItem("dn.ws") || "default"; },
  set(key, org) { sessionStorage.setItem("dn.key", key); sessionStorage.setItem("dn.org", org); },
  setWs(ws) { sessionStorage.setItem("dn.ws", ws); },
  clear() { sessionStorage.clear(); },
};

class ApiError extends Error {}

async function api(path, options) {
  const opts = options || {};
  const headers = { "X-API-Key": session.key || "" };
  if (opts.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch("/api/v1" + path, {
    method: opts.method || "GET",
    headers,
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
    credentials: "omit",
    cache: "no-store",
    signal: opts.signal,
  });
  if (!response.ok) {
    let detail = response.statusText;
    try { const body = await response.json(); detail = body.detail || JSON.stringify(body); } catch (_) { /* not JSON */ }
    if (response.status === 401) { session.clear(); location.hash = "#/signin"; }
    throw new ApiError(`${response.status}: ${detail}`);
  }
  return response;
}

async function getJson(path) {
  return (await api(path)).json();
}

function scope() {
  return `/org/${encodeURIComponent(session.org)}/ws/${encodeURIComponent(session.ws)}`;
}

function errorBox(error) {
  return el("p", { class: "error", role: "alert" }, String(error.message || error));
}

// ---------- navigation ----------

function nav() {
  const box = document.getElementById("nav");
  if (!session.key) { box.replaceChildren(); delete box.dataset.org; return; }
  // Built once per sign-in: the workspace field keeps its focus and state across pages.
  if (box.dataset.org === session.org && box.childElementCount) return;
  box.dataset.org = session.org;
  // The workspaces that hold jobs, offered as picks; typing another name opens that workspace.
  const picks = el("datalist", { id: "workspaces" });
  const ws = el("input", { id: "ws", value: session.ws, size: 12, list: "workspaces", "aria-label": "workspace", title: "workspace" });
  ws.addEventListener("change", () => { session.setWs(ws.value.trim() || "default"); route(); });
  getJson(`/org/${encodeURIComponent(session.org)}/workspaces`)
    .then((list) => picks.replaceChildren(...list.items.map((w) => el("option", { value: w }))))
    .catch(() => {});
  box.replaceChildren(
    el("a", { href: "#/jobs" }, "Jobs"),
    el("a", { href: "#/datasets" }, "Datasets"),
    el("a", { href: "#/capabilities" }, "Capabilities"),
    el("span", { class: "muted" }, "organization ", el("strong", { id: "org" }, session.org), " workspace "),
    ws,
    picks,
    el("button", { id: "signout", onclick: () => { session.clear(); location.hash = "#/signin"; } }, "Sign out"),
  );
}

let stopCurrent = () => {};

async function route() {
  stopCurrent();
  stopCurrent = () => {};
  const parts = location.hash.replace(/^#\/?/, "").split("?")[0].split("/").map(decodeURIComponent);
  const query = new URLSearchParams(location.hash.split("?")[1] || "");
  if (!session.key && parts[0] !== "signin") { location.hash = "#/signin"; return; }
  nav();
  try {
    switch (parts[0]) {
      case "signin": return signIn();
      case "job": return await jobPage(parts[1]);
      case "datasets": return await registryPage("datasets", parts[1], parts[2]);
      case "capabilities": return await registryPage("capabilities", parts[1], parts[2]);
      case "compare": return await comparePage(query);
      default: return await jobsPage(query);
    }
  } catch (error) {
    show(errorBox(error));
  }
}

// ---------- sign-in ----------

function signIn() {
  const key = el("input", { id: "key", type: "password", autocomplete: "off", required: true, size: 48 });
  const message = el("p", { class: "muted" }, "The key is kept in this tab only and sent as a header.");
  const form = el("form", { id: "signin" },
    el("h1", {}, "Sign in"),
    el("label", {}, "API key ", key),
    el("button", { type: "submit" }, "Sign in"),
    message);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      sessionStorage.setItem("dn.key", key.value.trim());
      const who = await getJson("/whoami");
      session.set(key.value.trim(), who.organization);
      location.hash = "#/jobs";
    } catch (error) {
      session.clear();
      message.replaceChildren(errorBox(error));
    }
  });
  show(form);
  key.focus();
}

// ---------- jobs ----------

const STATUSES = ["", "queued", "running", "completed", "failed", "cancelled"];

function badge(status) {
  return el("span", { class: `badge ${status}` }, status);
}

function progress(job) {
  const steps = (job.metrics || {})["train/steps"];
  const total = (job.config || {}).steps;
  if (steps === undefined) return "";
  return total ? `${steps}/${total}` : String(steps);
}

async function jobsPage(query) {
  const page = Math.max(1, parseInt(query.get("page") || "1", 10) || 1);
  const status = STATUSES.includes(query.get("status") || "") ? query.get("status") || "" : "";
  const params = new URLSearchParams({ page: String(page), page_size: "20" });
  if (status) params.set("status", status);
  const list = await getJson(`${scope()}/training/jobs?${params}`);
  const filter = el("select", { id: "status-filter", "aria-label": "status" },
    STATUSES.map((s) => el("option", { value: s, selected: s === status }, s || "all statuses")));
  filter.addEventListener("change", () => { location.hash = `#/jobs?status=${filter.value}`; });
  const rows = list.items.map((job) => el("tr", { class: "job-row" },
    el("td", {}, el("input", { type: "checkbox", class: "pick", value: job.id, "aria-label": `compare ${job.name || job.id}` })),
    el("td", {}, el("a", { href: `#/job/${encodeURIComponent(job.id)}`, class: "job-link" }, job.name || job.id)),
    el("td", {}, badge(job.status)),
    el("td", {}, job.model),
    el("td", {}, progress(job)),
    el("td", {}, number((job.metrics || {})["train/loss_last"], 4)),
    el("td", {}, when(job.created_at)),
    el("td", {}, when(job.updated_at)),
  ));
  const pages = Math.max(1, Math.ceil(list.total / list.page_size));
  const link = (p, label) => el("a", { href: `#/jobs?status=${status}&page=${p}` }, label);
  const compare = el("button", { id: "compare", onclick: () => {
    const ids = [...document.querySelectorAll("#jobs input.pick:checked")].map((box) => box.value);
    location.hash = `#/compare?ids=${ids.map(encodeURIComponent).join(",")}`;
  } }, "Compare selected");
  show(
    el("h1", {}, "Training jobs"),
    el("p", {}, filter, " ", el("span", { class: "muted" }, `${list.total} job(s)`), " ", compare),
    el("table", { id: "jobs" },
      el("thead", {}, el("tr", {}, ["", "Job", "Status", "Model", "Steps", "Last loss", "Created", "Updated"].map((h) => el("th", {}, h)))),
      el("tbody", {}, rows)),
    el("p", { class: "pager" },
      page > 1 ? link(page - 1, "← newer") : "", ` page ${page} of ${pages} `,
      page < pages ? link(page + 1, "older →") : ""),
  );
}

// A line chart of the train loss (and learning rate) by step, with the eval loss as points on the same axes.
class LossChart {
  constructor() {
    this.train = [];
    this.rate = [];
    this.eval = [];
    this.node = svg("svg", { id: "loss-chart", viewBox: "0 0 640 260", role: "img", "aria-label": "loss by step" });
  }

  addStep(step, loss, rate) {
    if (typeof loss === "number") this.train.push([step, loss]);
    if (typeof rate === "number") this.rate.push([step, rate]);
  }

  addEval(step, loss) {
    if (typeof loss === "number") this.eval.push([step, loss]);
  }

  draw() {
    const [w, h, left, right, top, bottom] = [640, 260, 56, 56, 12, 28];
    const points = this.train.concat(this.eval);
    const children = [];
    if (points.length === 0) {
      children.push(svg("text", { x: w / 2, y: h / 2, "text-anchor": "middle", class: "axis" }, "no steps yet"));
      this.node.replaceChildren(...children);
      return;
    }
    const xs = points.map((p) => p[0]);
    const ys = points.map((p) => p[1]);
    const [x0, x1] = [Math.min(...xs), Math.max(...xs, Math.min(...xs) + 1)];
    let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
    if (y1 - y0 < 1e-9) { y0 -= 0.5; y1 += 0.5; }
    const X = (x) => left + (x - x0) / (x1 - x0) * (w - left - right);
    const Y = (y) => top + (y1 - y) / (y1 - y0) * (h - top - bottom);
    children.push(svg("rect", { x: left, y: top, width: w - left - right, height: h - top - bottom, class: "frame" }));
    for (const y of [y0, (y0 + y1) / 2, y1]) {
      children.push(svg("text", { x: left - 4, y: Y(y) + 4, "text-anchor": "end", class: "axis" }, y.toFixed(3)));
    }
    children.push(svg("text", { x: left, y: h - 8, class: "axis" }, `step ${x0}`));
    children.push(svg("text", { x: w - right, y: h - 8, "text-anchor": "end", class: "axis" }, `step ${x1}`));
    if (this.rate.length > 1) {
      const rs = this.rate.map((p) => p[1]);
      const [r0, r1] = [Math.min(...rs), Math.max(...rs)];
      const R = (r) => r1 - r0 < 1e-30 ? top + (h - top - bottom) / 2 : top + (r1 - r) / (r1 - r0) * (h - top - bottom);
      children.push(svg("polyline", { class: "rate", points: this.rate.map(([x, r]) => `${X(x)},${R(r)}`).join(" ") }));
      children.push(svg("text", { x: w - right + 4, y: top + 10, class: "axis rate-label" }, `lr ${r1.toExponential(1)}`));
    }
    if (this.train.length > 0) {
      children.push(svg("polyline", { class: "train", points: this.train.map(([x, y]) => `${X(x)},${Y(y)}`).join(" ") }));
    }
    for (const [x, y] of this.eval) {
      children.push(svg("circle", { class: "eval", cx: X(x), cy: Y(y), r: 4 }, svg("title", {}, `eval loss ${y.toFixed(4)} at step ${x}`)));
    }
    this.node.replaceChildren(...children);
    this.node.dataset.points = String(this.train.length);
    this.node.dataset.evalPoints = String(this.eval.length);
  }
}

// Reads a server-sent-event stream from fetch (EventSource cannot send the key as a header).
async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let event = { type: "message", data: [], id: null };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, cut).replace(/\r$/, "");
      buffer = buffer.slice(cut + 1);
      if (line === "") {
        if (event.data.length) onEvent(event.type, event.data.join("\n"), event.id);
        event = { type: "message", data: [], id: null };
      } else if (line.startsWith("event:")) event.type = line.slice(6).trim();
      else if (line.startsWith("data:")) event.data.push(line.slice(5).replace(/^ /, ""));
      else if (line.startsWith("id:")) event.id = line.slice(3).trim();
    }
  }
}

function configTable(job) {
  const rows = Object.entries(job.config || {}).map(([k, v]) =>
    el("tr", {}, el("th", {}, k), el("td", {}, typeof v === "object" ? JSON.stringify(v) : String(v))));
  return el("table", { class: "config" }, el("tbody", {}, rows));
}

async function download(path, name) {
  const blob = await (await api(path)).blob();
  const url = URL.createObjectURL(blob);
  const a = el("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

async function jobPage(id) {
  const base = `${scope()}/training/jobs/${encodeURIComponent(id)}`;
  let job = await getJson(base);
  const chart = new LossChart();
  const header = el("div", { id: "job-header" });
  const logBox = el("pre", { id: "logs", class: "logs" });
  const samplesBox = el("div", { id: "samples" });
  const artifactsBox = el("div", { id: "artifacts" });
  const level = el("select", { id: "log-level", "aria-label": "log level" },
    ["all", "info", "warning", "error"].map((l) => el("option", { value: l }, l)));
  const follow = el("input", { id: "follow", type: "checkbox", checked: true });
  const entries = [];
  let lastSeq = 0;

  const renderHeader = () => {
    const terminal = ["completed", "failed", "cancelled"].includes(job.status);
    const cancel = el("button", { id: "cancel", disabled: terminal, onclick: async () => {
      if (!confirm(`Cancel job ${job.name || job.id}?`)) return;
      try { job = await (await api(`${base}/cancel`, { method: "POST" })).json(); renderHeader(); } catch (e) { header.append(errorBox(e)); }
    } }, "Cancel");
    const retry = el("button", { id: "retry", disabled: !["failed", "cancelled"].includes(job.status), onclick: async () => {
      if (!confirm(`Retry job ${job.name || job.id}?`)) return;
      try { job = await (await api(`${base}/retry`, { method: "POST" })).json(); renderHeader(); } catch (e) { header.append(errorBox(e)); }
    } }, "Retry");
    header.replaceChildren(
      el("h1", {}, job.name || job.id),
      el("p", {}, badge(job.status), " ", el("span", { id: "job-model" }, job.model), " ",
        el("span", { class: "muted" }, `steps ${progress(job)} · created ${when(job.created_at)}` +
          (job.started_at ? ` · started ${when(job.started_at)}` : "") +
          (job.completed_at ? ` · ended ${when(job.completed_at)}` : ""))),
      job.error ? el("p", { class: "error" }, job.error) : "",
      el("p", {}, cancel, " ", retry),
    );
  };

  const renderLogs = () => {
    const wanted = level.value;
    const lines = entries.filter((e) => wanted === "all" || e.level === wanted).slice(-MAX_LOG_LINES)
      .map((e) => el("span", { class: `log ${e.level}` }, `${when(e.timestamp)} ${e.level} ${e.message}\n`));
    logBox.replaceChildren(...lines);
    if (follow.checked) logBox.scrollTop = logBox.scrollHeight;
  };

  const addSamples = (data) => {
    const cards = (data.samples || []).map((s) => el("div", { class: "sample" },
      el("div", { class: "prompt" }, el("h4", {}, "Prompt"), el("p", {}, s.prompt || "")),
      el("div", { class: "reference" }, el("h4", {}, "Reference"), el("p", {}, s.reference || "")),
      el("div", { class: "generated" }, el("h4", {}, "Generated"), el("p", {}, s.generated || ""))));
    samplesBox.replaceChildren(el("h3", {}, `Eval samples after step ${data.step}`), ...cards);
  };

  const take = (entry) => {
    const data = entry.data || {};
    if (typeof data.seq === "number") lastSeq = Math.max(lastSeq, data.seq);
    entries.push(entry);
    if (data.event === "step_complete") chart.addStep(data.step, data["train/loss"], data["train/learning_rate"]);
    if (data.event === "eval_complete") chart.addEval(data.step, data["eval/loss"]);
    if (data.event === "eval_samples") addSamples(data);
  };

  const renderArtifacts = async () => {
    try {
      const response = await getJson(`${base}/artifacts`);
      const checkpoints = (response.artifacts || {}).checkpoints || [];
      const items = [];
      for (const c of checkpoints) {
        const name = c.name || c;
        const files = el("span", { class: "files" });
        const open = el("button", { class: "list-files", onclick: async () => {
          try {
            const listing = await getJson(`${base}/checkpoints/${encodeURIComponent(name)}`);
            files.replaceChildren(...(listing.files || []).map((f) => {
              const path = f.path || f;
              return el("button", { class: "link", onclick: () => download(`${base}/checkpoints/${encodeURIComponent(name)}/files/${encodeURIComponent(path)}`, path) }, path);
            }));
          } catch (e) { files.replaceChildren(errorBox(e)); }
        } }, "files");
        items.push(el("li", {}, el("strong", {}, name), " ", open, " ", files));
      }
      artifactsBox.replaceChildren(el("h3", {}, "Checkpoints"), items.length ? el("ul", {}, items) : el("p", { class: "muted" }, "none yet"));
    } catch (e) {
      artifactsBox.replaceChildren(errorBox(e));
    }
  };

  const saveMetrics = async (format) => {
    const rows = metricsRows((await getJson(`${base}/logs`)).items);
    if (format === "csv") saveText(metricsCsv(rows), `${job.id}-metrics.csv`, "text/csv");
    else saveText(JSON.stringify(rows, null, 1), `${job.id}-metrics.json`, "application/json");
  };

  renderHeader();
  show(header,
    el("section", {}, el("h2", {}, "Loss"), chart.node,
      el("p", { class: "legend" }, el("span", { class: "key train" }, "train loss"), " ",
        el("span", { class: "key eval" }, "eval loss"), " ", el("span", { class: "key rate" }, "learning rate"))),
    el("section", {}, el("h2", {}, "Logs"), el("p", {}, "level ", level, " ", el("label", {}, follow, " follow")), logBox),
    el("section", {}, samplesBox),
    el("section", {}, artifactsBox,
      el("p", {}, "metrics, one row per step: ",
        el("button", { id: "metrics-csv", class: "link", onclick: () => saveMetrics("csv") }, "CSV"),
        el("button", { id: "metrics-json", class: "link", onclick: () => saveMetrics("json") }, "JSON"))),
    el("section", {}, el("h2", {}, "Configuration"), configTable(job)));
  level.addEventListener("change", renderLogs);

  const history = await getJson(`${base}/logs`);
  for (const entry of history.items || history.logs || history) take(entry);
  chart.draw();
  renderLogs();
  renderArtifacts();

  // Follow the job live: the stream ends when the job is terminal, or after a minute (reconnect then).
  const controller = new AbortController();
  stopCurrent = () => controller.abort();
  (async () => {
    for (let attempt = 0; attempt < STREAM_RECONNECTS && !controller.signal.aborted; attempt++) {
      let ended = false;
      try {
        const response = await api(`${base}/logs/stream?after=${lastSeq}`, { signal: controller.signal });
        await readEvents(response, (type, data) => {
          if (type === "log") {
            take(JSON.parse(data));
            chart.draw();
            renderLogs();
          } else if (type === "end") {
            ended = true;
          }
        });
      } catch (e) {
        if (controller.signal.aborted) return;
        await new Promise((r) => setTimeout(r, 2000));
      }
      try { job = await getJson(base); renderHeader(); renderArtifacts(); } catch (_) { /* next round */ }
      if (ended) return;
    }
  })();
}

// ---------- datasets and capabilities ----------

// The dataset viewer: the first rows rendered with a catalog model's chat template and a capability's
// system prompt, supervised tokens highlighted.
async function viewer(root, name, version) {
  const catalog = await getJson("/training/catalog?limit=500");
  const capabilities = await getJson(`/org/${encodeURIComponent(session.org)}/capabilities`);
  const model = el("select", { id: "preview-model", "aria-label": "model" },
    (catalog.models || []).map((m) => el("option", { value: m.tinker_id }, m.display_name || m.tinker_id)));
  const capability = el("select", { id: "preview-capability", "aria-label": "capability" },
    el("option", { value: "" }, "no system prompt"),
    (capabilities.items || []).map((c) => el("option", { value: `${c.name}@${c.version}` }, `${c.name}@${c.version}`)));
  const limit = el("input", { id: "preview-limit", type: "number", min: 1, max: 20, value: 5, "aria-label": "rows" });
  const out = el("div", { id: "preview" });
  const run = el("button", { id: "preview-run", type: "button", onclick: async () => {
    out.replaceChildren(el("p", { class: "muted" }, "Rendering…"));
    try {
      const body = { model: model.value, limit: parseInt(limit.value, 10) || 5 };
      if (capability.value) body.capability = capability.value;
      const path = `${root}/${encodeURIComponent(name)}/${encodeURIComponent(version)}/preview`;
      const preview = await (await api(path, { method: "POST", body })).json();
      out.replaceChildren(...renderPreview(preview));
    } catch (e) {
      out.replaceChildren(errorBox(e));
    }
  } }, "Render");
  if (!model.options.length) {
    return el("section", {}, el("h2", {}, "Viewer"), el("p", { class: "muted" }, "No model in this server's catalog."));
  }
  return el("section", { class: "viewer" }, el("h2", {}, "Viewer"),
    el("p", {}, "model ", model, " capability ", capability, " rows ", limit, " ", run),
    el("p", { class: "legend" }, el("span", { class: "tok sup" }, "supervised"), " ", el("span", { class: "tok" }, "not supervised")),
    out);
}

function renderPreview(preview) {
  const nodes = [el("p", { class: "muted" },
    `${preview.rows_read} row(s) read; ${preview.examples.length} example(s) shown; ` +
    `${preview.skipped_rows.length} row(s) skipped; ${preview.errors.length} failed`)];
  for (const note of preview.notes) nodes.push(el("p", { class: "muted" }, note));
  preview.examples.forEach((example, i) => {
    nodes.push(el("div", { class: "example" },
      el("h4", {}, `Example ${i + 1}: ${example.num_tokens} tokens, ${example.num_supervised} supervised` +
        (example.truncated ? ", truncated" : "")),
      el("pre", { class: "tokens" }, example.tokens.map((t) => el("span", { class: t.supervised ? "tok sup" : "tok" }, t.text)))));
  });
  if (preview.skipped_rows.length) {
    nodes.push(el("h4", {}, "Skipped rows"), el("ul", { class: "skipped" }, preview.skipped_rows.map((e) => el("li", {}, e))));
  }
  if (preview.errors.length) {
    nodes.push(el("h4", {}, "Failed"), el("ul", { class: "failed" }, preview.errors.map((e) => el("li", { class: "error" }, e))));
  }
  return nodes;
}

async function registryPage(kind, name, version) {
  const root = `/org/${encodeURIComponent(session.org)}/${kind}`;
  const title = kind === "datasets" ? "Datasets" : "Capabilities";
  if (name && version) {
    const manifest = await getJson(`${root}/${encodeURIComponent(name)}/${encodeURIComponent(version)}`);
    const rows = Object.entries(manifest).map(([k, v]) =>
      el("tr", {}, el("th", {}, k), el("td", {}, el("pre", {}, typeof v === "string" ? v : JSON.stringify(v, null, 2)))));
    show(el("h1", {}, `${name}@${version}`), el("p", {}, el("a", { href: `#/${kind}` }, `← ${title}`)),
      kind === "datasets" ? await viewer(root, name, version) : "",
      el("h2", {}, "Manifest"),
      el("table", { class: "config manifest" }, el("tbody", {}, rows)));
    return;
  }
  const list = await getJson(root);
  const items = list.items || list[kind] || list;
  const rows = (Array.isArray(items) ? items : []).map((item) => {
    const n = item.name, v = item.version;
    return el("tr", { class: `${kind}-row` },
      el("td", {}, el("a", { href: `#/${kind}/${encodeURIComponent(n)}/${encodeURIComponent(v)}` }, `${n}@${v}`)),
      el("td", {}, item.description || ""),
      el("td", {}, when(item.created_at)));
  });
  show(el("h1", {}, title),
    el("table", { id: kind }, el("thead", {}, el("tr", {}, ["Name@version", "Description", "Created"].map((h) => el("th", {}, h)))),
      el("tbody", {}, rows)));
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", route);
