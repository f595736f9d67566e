"""The status page of ``serve --metrics``: one self-contained HTML document (inline CSS
and JavaScript, no external asset, no build step) that reads ``status.json`` once a
second and draws what ``mcphost status`` shows, with small SVG charts of calls/s and
p99 per plugin. Every value is written with ``textContent``: a plugin's name or error
text never becomes markup.
"""

from __future__ import annotations

__all__ = ["page"]


def page(nonce: str) -> bytes:
    """The page, its script allowed by ``nonce`` (the response's Content-Security-Policy
    names it)."""
    return _PAGE.replace("{nonce}", nonce).encode()


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mcphost status</title>
<style nonce="{nonce}">
:root { color-scheme: light dark; --fg: #1d2330; --muted: #667085; --line: #d0d5dd;
  --bg: #fff; --card: #f8f9fb; --ok: #127a3d; --bad: #b42318; --accent: #2e6fd8; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e4e7ec; --muted: #98a2b3; --line: #344054; --bg: #101418;
    --card: #182028; --ok: #47cd89; --bad: #f97066; --accent: #84adff; } }
body { font: 14px/1.4 system-ui, sans-serif; color: var(--fg); background: var(--bg);
  margin: 1.5rem; }
h1 { font-size: 1.3rem; margin: 0 0 .25rem; }
h2 { font-size: 1rem; margin: 1.5rem 0 .5rem; }
.meta { color: var(--muted); }
.meta b { color: var(--fg); font-weight: 600; }
table { border-collapse: collapse; width: 100%; background: var(--card); }
th, td { padding: .35rem .6rem; border-bottom: 1px solid var(--line); text-align: right;
  white-space: nowrap; }
th { color: var(--muted); font-weight: 500; font-size: .8rem; text-transform: uppercase; }
th:first-child, td:first-child, td.text, th.text { text-align: left; }
td.state-running { color: var(--ok); }
td.state-failed, td.state-crashed { color: var(--bad); }
svg.spark { display: block; }
svg.spark polyline { fill: none; stroke: var(--accent); stroke-width: 1.5; }
svg.spark rect { fill: var(--bg); stroke: var(--line); }
.chart { display: flex; align-items: center; gap: .75rem; }
.legend { color: var(--muted); font-size: .8rem; }
.empty { color: var(--muted); font-style: italic; }
#problem { color: var(--bad); margin: .5rem 0; }
.charts td { text-align: left; }
</style>
</head>
<body>
<h1>mcphost status</h1>
<div class="meta">host pid <b id="pid">-</b> &middot; up <b id="uptime">-</b> &middot;
front end <b id="transport">-</b> &middot; clients <b id="clients">-</b> &middot;
updated <b id="updated">never</b></div>
<div id="problem"></div>

<h2>Plugins</h2>
<table id="plugins">
<thead><tr><th>plugin</th><th class="text">version</th><th class="text">state</th>
<th>worker pid</th><th>memory MB</th><th>CPU s</th><th>restarts</th><th>in flight</th>
<th>calls</th><th>errors</th><th>calls/s</th><th>p50 ms</th><th>p99 ms</th></tr></thead>
<tbody></tbody>
</table>

<h2>Calls per second and p99 (last minute)</h2>
<table id="charts" class="charts">
<thead><tr><th>plugin</th><th class="text">calls/s</th><th class="text">p99 ms</th></tr>
</thead><tbody></tbody>
</table>

<h2>Streams</h2>
<div id="streams"></div>
<h2>Queues</h2>
<div id="queues"></div>

<h2>Settings waiting for a restart</h2>
<div id="pending"></div>

<h2>Recent swaps and crashes</h2>
<table id="events">
<thead><tr><th class="text">time</th><th class="text">what</th><th class="text">plugin</th>
<th class="text">version</th><th class="text">detail</th></tr></thead>
<tbody></tbody>
</table>

<script nonce="{nonce}">
"use strict";
const POINTS = 60;
const history = new Map();
const $ = (id) => document.getElementById(id);

function el(tag, text, attrs) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function fmt(v, digits) {
  if (v === null || v === undefined) return "-";
  if (typeof v !== "number") return String(v);
  if (digits !== undefined) return v.toFixed(digits);
  return Number.isInteger(v) ? String(v) : v.toFixed(2);
}

function duration(s) {
  if (s === null || s === undefined) return "-";
  s = Math.floor(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return h ? `${h}h${String(m).padStart(2, "0")}m` : m ? `${m}m${String(sec).padStart(2, "0")}s`
    : `${sec}s`;
}

function cell(field, value, digits, cls) {
  const td = el("td", fmt(value, digits), { "data-field": field });
  td.setAttribute("data-value", value === null || value === undefined ? "" : String(value));
  if (cls) td.className = cls;
  return td;
}

function spark(values) {
  const ns = "http://www.w3.org/2000/svg", w = 240, h = 36;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("width", w);
  svg.setAttribute("height", h);
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  const known = values.filter((v) => v !== null);
  const max = Math.max(1e-9, ...known);
  const pts = values.map((v, i) => {
    const x = (w - 2) * (i + POINTS - values.length) / (POINTS - 1) + 1;
    const y = h - 2 - (h - 4) * ((v === null ? 0 : v) / max);
    return `${x.toFixed(1)},${y.toFixed(1)}`;
  });
  const frame = document.createElementNS(ns, "rect");
  frame.setAttribute("x", 0.5);
  frame.setAttribute("y", 0.5);
  frame.setAttribute("width", w - 1);
  frame.setAttribute("height", h - 1);
  svg.appendChild(frame);
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", pts.join(" "));
  svg.appendChild(line);
  const title = document.createElementNS(ns, "title");
  title.textContent = `max ${fmt(max)}`;
  svg.appendChild(title);
  return svg;
}

function chart(values, digits) {
  const box = el("div", null, { class: "chart" });
  box.appendChild(spark(values));
  const known = values.filter((v) => v !== null);
  const now = values.length ? values[values.length - 1] : null;
  box.appendChild(el("span", `now ${fmt(now, digits)} \u00b7 max ` +
    (known.length ? fmt(Math.max(...known), digits) : "-"), { class: "legend" }));
  return box;
}

function list(target, rows, what) {
  const box = $(target);
  box.replaceChildren();
  if (!rows || rows.length === 0) {
    box.appendChild(el("div", `no ${what}`, { class: "empty" }));
    return;
  }
  const keys = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  const table = el("table");
  const head = el("tr");
  keys.forEach((k) => head.appendChild(el("th", k, { class: "text" })));
  table.appendChild(head);
  rows.forEach((r) => {
    const tr = el("tr");
    keys.forEach((k) => tr.appendChild(el("td", fmt(r[k]), { class: "text" })));
    table.appendChild(tr);
  });
  box.appendChild(table);
}

function render(s) {
  $("pid").textContent = s.pid;
  $("uptime").textContent = duration(s.uptime_seconds);
  $("transport").textContent = s.frontend ? s.frontend.transport : "embedded";
  $("clients").textContent = s.frontend ? s.frontend.sessions : "-";
  $("updated").textContent = new Date().toLocaleTimeString();
  const problems = [];
  if (s.config_error) problems.push("config.toml refused: " + s.config_error);
  if (s.registry_error) problems.push("registry: " + s.registry_error);
  $("problem").textContent = problems.join(" \\u00b7 ");

  const body = $("plugins").tBodies[0];
  const charts = $("charts").tBodies[0];
  body.replaceChildren();
  charts.replaceChildren();
  for (const p of s.plugins) {
    const errors = Object.values(p.errors || {}).reduce((a, b) => a + b, 0);
    const tr = el("tr", null, { "data-plugin": p.plugin });
    tr.appendChild(cell("plugin", p.plugin));
    tr.appendChild(cell("version", p.version, undefined, "text"));
    tr.appendChild(cell("state", p.state, undefined, "text state-" + p.state));
    [["pid", p.pid], ["memory_mb", p.memory_mb, 1], ["cpu_seconds", p.cpu_seconds, 2],
     ["restarts", p.restarts], ["in_flight", p.in_flight], ["calls", p.calls],
     ["errors", errors], ["calls_per_second", p.calls_per_second, 2],
     ["p50_ms", p.p50_ms, 3], ["p99_ms", p.p99_ms, 3]]
      .forEach(([f, v, d]) => tr.appendChild(cell(f, v, d)));
    body.appendChild(tr);

    let h = history.get(p.plugin);
    if (!h) history.set(p.plugin, (h = { cps: [], p99: [] }));
    h.cps.push(p.calls_per_second);
    h.p99.push(p.p99_ms);
    if (h.cps.length > POINTS) { h.cps.shift(); h.p99.shift(); }
    const row = el("tr", null, { "data-plugin": p.plugin });
    row.appendChild(el("td", p.plugin));
    const a = el("td"), b = el("td");
    a.appendChild(chart(h.cps, 2));
    b.appendChild(chart(h.p99, 3));
    row.appendChild(a);
    row.appendChild(b);
    charts.appendChild(row);
  }
  if (s.plugins.length === 0) {
    body.appendChild(el("tr")).appendChild(el("td", "no plugins", { class: "empty" }));
  }
  list("streams", s.streams, "streams");
  list("queues", s.queues, "queues");
  list("pending", s.restart_pending, "settings waiting");

  const events = $("events").tBodies[0];
  events.replaceChildren();
  for (const e of (s.events || []).slice().reverse()) {
    const tr = el("tr", null, { "data-event": e.kind });
    tr.appendChild(el("td", new Date(e.time * 1000).toLocaleTimeString(), { class: "text" }));
    [e.kind, e.plugin, e.version, e.detail]
      .forEach((v) => tr.appendChild(el("td", v, { class: "text" })));
    events.appendChild(tr);
  }
  if (!s.events || s.events.length === 0) {
    events.appendChild(el("tr")).appendChild(el("td", "none yet", { class: "empty" }));
  }
}

async function tick() {
  try {
    const r = await fetch("status.json", { cache: "no-store", credentials: "same-origin" });
    if (r.status === 401) {
      $("problem").textContent = "not signed in: open this page once as /?token=<token> " +
        "(make one with `mcphost tokens create NAME`)";
      return;
    }
    if (!r.ok) {
      $("problem").textContent = `the host answered ${r.status}: ${await r.text()}`;
      return;
    }
    render(await r.json());
  } catch (err) {
    $("problem").textContent = "cannot reach the host: " + err;
  }
}

tick();
setInterval(tick, 1000);
</script>
</body>
</html>
"""
