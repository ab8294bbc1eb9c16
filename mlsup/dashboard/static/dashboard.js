// mlsup dashboard: renders the snapshots the server pushes on /events (server-sent events).
// Plain DOM, no framework. Every value from the server goes in through textContent or an
// attribute, never innerHTML, so a model id cannot inject markup.
"use strict";

const PALETTE = ["#2563eb", "#0d9488", "#9333ea", "#db2777", "#ea580c", "#4f46e5", "#0891b2", "#65a30d"];
const ACTION_HEADER = "X-Mlsup-Dashboard";
const LOG_LINES = 200;
const LOG_EVERY_MS = 2000;

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function colour(name) {
  let hash = 0;
  for (const ch of name) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return PALETTE[hash % PALETTE.length];
}

const mb = (value) => (value === null || value === undefined ? "—" : `${value}`);
const dash = (value) => (value === null || value === undefined ? "—" : String(value));

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${seconds % 60} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
}

// --- GPUs -------------------------------------------------------------------------------------

function holderText(seg) {
  if (seg.supervised) {
    return seg.worker_pid === null ? `supervisor pid ${seg.pid}` : `worker pid ${seg.worker_pid}`;
  }
  return `kit process pid ${seg.pid}${seg.host ? " on " + seg.host : ""}`;
}

function segment(seg) {
  const name = seg.model || seg.owner || seg.lease_id;
  const measured = seg.measured_mb === null ? "" : ` · ${seg.measured_mb} measured`;
  const detail = `${seg.priority} · ${seg.vram_mb} MB${measured}`;
  const node = el(
    "div",
    {
      class: `segment${seg.supervised ? "" : " external"}${seg.preempt_in_s !== null ? " preempting" : ""}`,
      "data-model": seg.model,
      "data-lease": seg.lease_id,
      title: `${name}\n${detail}\n${holderText(seg)}\nlease ${seg.lease_id}` +
        (seg.preempt_in_s !== null ? `\nasked to yield: revoked in ${seg.preempt_in_s} s` : ""),
    },
    el("span", { class: "seg-model", text: name }),
    el("span", { class: "seg-detail", text: detail }),
  );
  node.style.flex = `0 0 ${(seg.share * 100).toFixed(3)}%`;
  node.style.backgroundColor = colour(name); // not the shorthand: it would drop the stripes
  if (seg.measured_mb !== null && seg.vram_mb > 0) {
    const bar = el("div", { class: "measured" });
    bar.style.width = `${Math.min(100, (100 * seg.measured_mb) / seg.vram_mb).toFixed(1)}%`;
    node.append(bar);
  }
  return node;
}

function leaseRow(seg) {
  const name = seg.model || seg.owner || seg.lease_id;
  const swatch = el("span", { class: "swatch" });
  swatch.style.background = colour(name);
  const status = seg.preempt_in_s !== null
    ? el("span", { class: "tag warn", text: `yielding: revoked in ${seg.preempt_in_s} s` })
    : el("span", { class: "tag", text: seg.supervised ? "supervised" : "other process" });
  return el(
    "tr",
    { "data-lease": seg.lease_id },
    el("td", {}, swatch, el("b", { text: name })),
    el("td", { text: seg.priority }),
    el("td", { class: "num", text: `${seg.vram_mb} MB leased` }),
    el("td", { class: "num", text: seg.measured_mb === null ? "not measured" : `${seg.measured_mb} MB measured` }),
    el("td", { text: holderText(seg) }),
    el("td", {}, status),
  );
}

function renderGpus(gpus) {
  const box = $("gpus");
  if (!gpus.length) {
    box.replaceChildren(el("p", { class: "empty", text: "no GPU is published in Redis yet" }));
    return;
  }
  box.replaceChildren(...gpus.map((gpu) => {
    const bar = el("div", { class: "bar", role: "img", "aria-label": `GPU ${gpu.gpu} usage` },
      ...gpu.segments.map(segment));
    const free = el("div", { class: "segment free", "data-free": gpu.free_mb, text: `free ${gpu.free_mb} MB` });
    bar.append(free);
    const parts = [
      el("div", { class: "gpu-head" },
        el("b", { text: `GPU ${gpu.gpu}` }),
        el("span", { text: `${gpu.used_mb} / ${gpu.capacity_mb} MB leased · ${gpu.free_mb} MB free` })),
      bar,
    ];
    if (gpu.segments.length) parts.push(el("table", { class: "leases" }, ...gpu.segments.map(leaseRow)));
    if (gpu.waiting.length) {
      const names = gpu.waiting.map((w) => `${w.id} (${w.vram_mb} MB, ${w.priority})`).join(", ");
      parts.push(el("div", { class: "waiting", "data-waiting": gpu.waiting.length, text: `queued for VRAM, in service order: ${names}` }));
    }
    return el("div", { class: "gpu", "data-gpu": gpu.gpu }, ...parts);
  }));
}

// --- models -----------------------------------------------------------------------------------

function sparkline(series) {
  const ns = "http://www.w3.org/2000/svg";
  const width = 90, height = 22;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const top = Math.max(...series, 0);
  const step = series.length > 1 ? width / (series.length - 1) : width;
  const points = series.map((v, i) => {
    const y = top > 0 ? height - 2 - (v / top) * (height - 4) : height - 2;
    return `${(i * step).toFixed(1)},${y.toFixed(1)}`;
  });
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", points.join(" "));
  line.setAttribute("fill", "none");
  line.setAttribute("stroke", top > 0 ? "#2563eb" : "#cbd5e1");
  line.setAttribute("stroke-width", "1.5");
  svg.append(line);
  return svg;
}

function stateCell(model) {
  const cell = el("td", { class: "state" }, el("span", { class: "badge", "data-badge": model.badge, text: model.badge }));
  if (model.stage) cell.append(el("span", { class: "detail", text: model.stage }));
  if (model.badge === "failed" || model.error) {
    const why = model.error || model.reason;
    if (why) cell.append(el("span", { class: "detail error", text: why }));
  } else if (model.reason && model.badge === "unloaded") {
    cell.append(el("span", { class: "detail", text: model.reason }));
  }
  if (model.badge === "restarting" && model.last_exit) {
    cell.append(el("span", { class: "detail", text: `last worker ${model.last_exit}` }));
  }
  return cell;
}

const buttons = new Map(); // model id -> {load, unload}: kept across frames, so clicks are never lost

function actionButtons(model) {
  let pair = buttons.get(model.model);
  if (!pair) {
    pair = {
      load: el("button", { type: "button", class: "load", text: "load" }),
      unload: el("button", { type: "button", class: "unload", text: "unload" }),
    };
    pair.load.addEventListener("click", () => act(model.model, "load", pair.load));
    pair.unload.addEventListener("click", () => act(model.model, "unload", pair.unload));
    buttons.set(model.model, pair);
  }
  if (!pair.load.dataset.busy) pair.load.disabled = !model.can_load;
  if (!pair.unload.dataset.busy) pair.unload.disabled = !model.can_unload;
  return el("td", {}, el("div", { class: "actions" }, pair.load, pair.unload));
}

function latencyText(activity) {
  if (!activity.latency_measured) return "—";
  if (activity.p50_ms === null) return "no requests";
  return `${activity.p50_ms.toFixed(1)} / ${activity.p99_ms.toFixed(1)} ms`;
}

function modelRow(model) {
  const activity = model.activity;
  const rps = activity.rps === null ? "—" : `${activity.rps.toFixed(activity.rps < 10 ? 2 : 0)}/s`;
  const leased = `${mb(model.leased_mb)} / ${mb(model.measured_mb)}`;
  return el(
    "tr",
    { "data-model": model.model, "data-badge": model.badge },
    el("td", {}, el("span", { class: "model-id", text: model.model }), el("span", { class: "detail loader", text: `${model.loader} · ${model.priority}` })),
    stateCell(model),
    el("td", { class: "pid", text: dash(model.pid) }),
    el("td", { text: dash(model.gpu) }),
    el("td", { class: "num", text: leased }),
    el("td", { class: "num", text: model.restarts }),
    el("td", { class: "num", text: model.requests }),
    el("td", { class: "num", text: duration(model.idle_s) }),
    el("td", {}, el("span", { class: "spark" }, sparkline(activity.series), el("span", { class: "rps", text: rps }))),
    el("td", { class: "num latency", text: latencyText(activity) }),
    actionButtons(model),
  );
}

function renderModels(view) {
  const body = document.querySelector("#models tbody");
  if (!view.models.length) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: 11, class: "empty", text: view.problem ? "—" : "no models in the manifest" })));
  } else {
    body.replaceChildren(...view.models.map(modelRow));
  }
  const minutes = Math.round(view.window_s / 60);
  const measured = view.models.some((m) => m.activity.latency_measured);
  $("activity-note").textContent =
    `activity: requests/s from the workers' request counters over the last ${minutes} min ` +
    `(${view.step_s} s per sparkline point); ` +
    (measured ? "latency from the gateway's histograms" : "latency not measured here (the gateway's /ui shows it)");
}

async function act(model, action, button) {
  button.dataset.busy = "1";
  button.disabled = true;
  $("action-error").hidden = true;
  try {
    const reply = await fetch(`api/models/${encodeURIComponent(model)}/${action}`, {
      method: "POST",
      headers: { [ACTION_HEADER]: "1" },
    });
    if (!reply.ok) {
      const body = await reply.json().catch(() => ({}));
      const message = (body.error && body.error.message) || `HTTP ${reply.status}`;
      $("action-error").textContent = `${action} ${model}: ${message}`;
      $("action-error").hidden = false;
    }
  } catch (error) {
    $("action-error").textContent = `${action} ${model}: ${error}`;
    $("action-error").hidden = false;
  } finally {
    delete button.dataset.busy;
  }
}

// --- log panel: fetched on demand for the chosen model (only it, only while following) -------

let logTimer = null;

function syncLogChoices(models) {
  const select = $("log-model");
  const wanted = models.map((m) => m.model);
  const have = [...select.options].map((o) => o.value);
  if (wanted.join("\n") === have.join("\n")) return;
  const chosen = select.value;
  select.replaceChildren(...wanted.map((id) => el("option", { value: id, text: id })));
  if (wanted.includes(chosen)) select.value = chosen;
  refreshLog();
}

async function refreshLog() {
  const model = $("log-model").value;
  const pane = $("log");
  if (!model) return;
  try {
    const reply = await fetch(`api/models/${encodeURIComponent(model)}/log?lines=${LOG_LINES}`);
    const body = await reply.json();
    if (!reply.ok) {
      $("log-note").textContent = (body.error && body.error.message) || `HTTP ${reply.status}`;
      return;
    }
    const atBottom = pane.scrollTop + pane.clientHeight >= pane.scrollHeight - 4;
    pane.textContent = body.lines.join("\n");
    pane.dataset.model = body.model;
    $("log-note").textContent = !body.exists
      ? "no log yet: the model has not started a worker"
      : `last ${body.lines.length} lines${body.truncated ? " (older lines left out)" : ""}`;
    if (atBottom) pane.scrollTop = pane.scrollHeight;
  } catch (error) {
    $("log-note").textContent = `cannot read the log: ${error}`;
  }
}

function scheduleLog() {
  clearInterval(logTimer);
  if ($("log-follow").checked) logTimer = setInterval(refreshLog, LOG_EVERY_MS);
}

// --- the stream -------------------------------------------------------------------------------

function render(view) {
  $("runtime").textContent = view.supervisor || "";
  const problem = $("problem");
  problem.hidden = !view.problem;
  problem.textContent = view.problem || "";
  renderGpus(view.gpus);
  renderModels(view);
  syncLogChoices(view.models);
  document.body.dataset.frames = String(Number(document.body.dataset.frames || 0) + 1);
}

function connect() {
  const conn = $("conn");
  const source = new EventSource("events");
  source.onopen = () => { conn.dataset.state = "live"; conn.textContent = "live"; };
  source.onmessage = (event) => render(JSON.parse(event.data));
  // EventSource reconnects by itself; say so meanwhile.
  source.onerror = () => { conn.dataset.state = "lost"; conn.textContent = "reconnecting…"; };
}

$("log-model").addEventListener("change", refreshLog);
$("log-follow").addEventListener("change", scheduleLog);
scheduleLog();
connect();
