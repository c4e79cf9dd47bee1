// featurestore console: a small hash-routed app over the service's read-scope JSON routes.
// The API key lives in sessionStorage (this tab only) and travels as a header, never in a URL.
"use strict";

const KEY = "featurestore.apiKey";
const PAGE = 50;
const main = document.getElementById("main");
const cache = new Map();

class AuthError extends Error {}

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
  })[c]);
}

const enc = encodeURIComponent;

async function api(path, { cached = false } = {}) {
  if (cached && cache.has(path)) return cache.get(path);
  const key = sessionStorage.getItem(KEY);
  const response = await fetch(path, { headers: key ? { Authorization: `Bearer ${key}` } : {} });
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (response.status === 401) {
    sessionStorage.removeItem(KEY);
    sessionChecked = false;
    throw new AuthError(body?.error?.message || "this key was refused");
  }
  if (!response.ok) throw new Error(body?.error?.message || `${response.status} ${response.statusText}`);
  if (cached) cache.set(path, body);
  return body;
}

function fmtNum(x) {
  if (x === null || x === undefined) return "–";
  if (Number.isInteger(x)) return x.toLocaleString("en");
  return Math.abs(x) >= 1e5 || (Math.abs(x) < 1e-3 && x !== 0) ? x.toExponential(3) : x.toPrecision(4);
}
function fmtTime(iso) { return iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace("+00:00", "Z") : "–"; }
function fmtAge(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds === 0) return "0 s";
  const units = [[86400, "d"], [3600, "h"], [60, "min"], [1, "s"]];
  for (const [size, name] of units) if (seconds >= size) return `${(seconds / size).toFixed(1)} ${name}`;
  return `${seconds.toFixed(2)} s`;
}
function fmtTtl(seconds) { return seconds ? fmtAge(seconds) : "none"; }
function pct(x) { return x === null || x === undefined ? "–" : `${(100 * x).toFixed(1)} %`; }

// A filterable, paginated table: fine with thousands of rows, renders one page at a time.
function table(container, rows, columns, { filter = (r) => JSON.stringify(r), rowClass = () => "", id = "" } = {}) {
  let query = "";
  let page = 0;
  container.innerHTML = `<div class="tools"><input type="search" class="filter" placeholder="Filter…" aria-label="Filter">
    <span class="count"></span><span class="pager"><button type="button" class="prev">‹ Prev</button>
    <span class="page"></span><button type="button" class="next">Next ›</button></span></div>
    <table ${id ? `id="${esc(id)}"` : ""}><thead><tr>${columns.map((c) => `<th>${esc(c.title)}</th>`).join("")}</tr></thead><tbody></tbody></table>`;
  const body = container.querySelector("tbody");
  const draw = () => {
    const shown = query ? rows.filter((r) => filter(r).toLowerCase().includes(query)) : rows;
    const pages = Math.max(1, Math.ceil(shown.length / PAGE));
    page = Math.min(page, pages - 1);
    body.innerHTML = shown.slice(page * PAGE, (page + 1) * PAGE).map((r) =>
      `<tr class="${esc(rowClass(r))}">${columns.map((c) => `<td>${c.html(r)}</td>`).join("")}</tr>`).join("")
      || `<tr><td colspan="${columns.length}" class="muted">Nothing to show.</td></tr>`;
    container.querySelector(".count").textContent = `${shown.length} of ${rows.length}`;
    container.querySelector(".page").textContent = `page ${page + 1} / ${pages}`;
    container.querySelector(".prev").disabled = page === 0;
    container.querySelector(".next").disabled = page >= pages - 1;
  };
  container.querySelector(".filter").addEventListener("input", (e) => { query = e.target.value.trim().toLowerCase(); page = 0; draw(); });
  container.querySelector(".prev").addEventListener("click", () => { page -= 1; draw(); });
  container.querySelector(".next").addEventListener("click", () => { page += 1; draw(); });
  draw();
}

const KINDS = {
  "entities": "Entities",
  "feature-views": "Feature views",
  "on-demand-feature-views": "On-demand views",
  "feature-services": "Feature services",
  "data-sources": "Data sources",
};

async function registry() {
  const [projects, ...lists] = await Promise.all(
    ["projects", ...Object.keys(KINDS)].map((k) => api(`/registry/${k}`, { cached: true })));
  const data = Object.fromEntries(Object.keys(KINDS).map((k, i) => [k, lists[i]]));
  return { project: projects[0], data };
}

function link(kind, name) { return `<a href="#/registry/${kind}/${enc(name)}">${esc(name)}</a>`; }

function usedBy(kind, name, data) {
  const views = data["feature-views"];
  const services = data["feature-services"];
  const odfvs = data["on-demand-feature-views"];
  const inService = (view) => services.filter((s) => s.features.some((p) => p.feature_view === view)).map((s) => ["feature-services", s.name]);
  if (kind === "entities") return views.filter((v) => v.entities.includes(name)).map((v) => ["feature-views", v.name]);
  if (kind === "feature-views") {
    return [...inService(name), ...odfvs.filter((o) => o.source_feature_views.includes(name)).map((o) => ["on-demand-feature-views", o.name])];
  }
  if (kind === "on-demand-feature-views") return inService(name);
  if (kind === "data-sources") return (data["data-sources"].find((s) => s.name === name)?.used_by || []).map((v) => ["feature-views", v]);
  if (kind === "feature-services") return [];
  return [];
}

function uses(kind, obj) {
  if (kind === "feature-views") {
    return [...obj.entities.map((e) => ["entities", e]), ...[obj.source, obj.push_source].filter(Boolean).map((s) => ["data-sources", s])];
  }
  if (kind === "on-demand-feature-views") return obj.source_feature_views.map((v) => ["feature-views", v]);
  if (kind === "feature-services") return obj.features.map((p) => ["feature-views", p.feature_view]);
  return [];
}

function summary(kind, obj) {
  if (kind === "entities") return `join key ${esc(obj.join_key)} (${esc(obj.value_type)})`;
  if (kind === "feature-views") return `${obj.features.length} features · TTL ${esc(fmtTtl(obj.ttl_seconds))} · ${esc(obj.entities.join(", "))}`;
  if (kind === "on-demand-feature-views") return `${obj.features.length} features from ${esc(obj.source_feature_views.join(", "))}`;
  if (kind === "feature-services") return obj.features.map((p) => `${esc(p.feature_view)} (${p.features.length})`).join(", ");
  if (kind === "data-sources") return `${esc(obj.kind)} ${esc(obj.path || "")}`;
  return "";
}

async function registryPage(kind, name) {
  kind = KINDS[kind] ? kind : "feature-views";
  const { project, data } = await registry();
  const tabs = Object.entries(KINDS).map(([k, title]) =>
    `<a class="tab${k === kind ? " active" : ""}" href="#/registry/${k}">${esc(title)} <span class="badge">${data[k].length}</span></a>`).join("");
  main.innerHTML = `<h1>Registry <span class="muted">project ${esc(project.name)}</span></h1><div class="tabs">${tabs}</div><section id="registry-body"></section>`;
  const section = document.getElementById("registry-body");
  if (name !== undefined) {
    const obj = data[kind].find((o) => o.name === name);
    if (!obj) { section.innerHTML = `<p class="error">No ${esc(KINDS[kind].toLowerCase())} named ${esc(name)}.</p>`; return; }
    const refs = (pairs) => pairs.length ? `<ul>${pairs.map(([k, n]) => `<li>${esc(KINDS[k].replace(/s$/, ""))}: ${link(k, n)}</li>`).join("")}</ul>` : `<p class="muted">None.</p>`;
    const stats = kind === "feature-views" ? `<p><a href="#/statistics/${enc(name)}">Statistics of ${esc(name)} →</a></p>` : "";
    section.innerHTML = `<h2 id="detail-name">${esc(name)}</h2>${stats}<div class="cols"><div><h3>Uses</h3>${refs(uses(kind, obj))}
      <h3>Used by</h3><div id="used-by">${refs(usedBy(kind, name, data))}</div></div>
      <div><h3>Definition</h3><pre class="definition">${esc(JSON.stringify(obj, null, 2))}</pre></div></div>`;
    return;
  }
  table(section, data[kind], [
    { title: "Name", html: (o) => link(kind, o.name) },
    { title: "Summary", html: (o) => summary(kind, o) },
    { title: "Description", html: (o) => esc(o.description || "") },
  ], { filter: (o) => `${o.name} ${o.description || ""}`, id: "registry-table" });
}

async function freshnessPage() {
  const rows = await api("/statistics/freshness");
  const stale = rows.filter((r) => r.status === "stale").length;
  main.innerHTML = `<h1>Freshness <span class="muted">${rows.length} views · <span class="stale-count">${stale} stale</span></span></h1>
    <p class="legend"><span class="dot status-fresh"></span>within TTL <span class="dot status-stale"></span>older than TTL <span class="dot status-never"></span>never materialized</p><section id="fresh"></section>`;
  table(document.getElementById("fresh"), rows, [
    { title: "Feature view", html: (r) => `<a href="#/statistics/${enc(r.feature_view)}">${esc(r.feature_view)}</a>` },
    { title: "Status", html: (r) => `<span class="status">${esc(r.status)}</span>` },
    { title: "Age", html: (r) => esc(fmtAge(r.age_seconds)) },
    { title: "TTL", html: (r) => esc(fmtTtl(r.ttl_seconds)) },
    { title: "Newest event", html: (r) => esc(fmtTime(r.newest_event_at)) },
    { title: "Last materialized", html: (r) => esc(fmtTime(r.last_materialized_at)) },
    { title: "Rows written", html: (r) => esc(fmtNum(r.last_rows)) },
  ], { filter: (r) => `${r.feature_view} ${r.status}`, rowClass: (r) => `status-${r.status}`, id: "freshness-table" });
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

function histogram(column) {
  const W = 360, H = 120, buckets = column.histogram;
  const root = svg("svg", { width: W, height: H + 18, class: "histogram", "data-column": column.name, role: "img" });
  const most = Math.max(1, ...buckets.map((b) => b.count));
  const width = W / Math.max(1, buckets.length);
  buckets.forEach((b, i) => {
    const height = (H * b.count) / most;
    const bar = svg("rect", { class: "bar", x: (i * width + 1).toFixed(2), y: (H - height).toFixed(2), width: Math.max(1, width - 2).toFixed(2), height: height.toFixed(2), "data-count": b.count });
    const tip = svg("title", {});
    tip.textContent = b.lower === b.upper ? `${fmtNum(b.lower)}: ${b.count}` : `[${fmtNum(b.lower)}, ${fmtNum(b.upper)}]: ${b.count}`;
    bar.appendChild(tip);
    root.appendChild(bar);
  });
  if (buckets.length) {
    const lo = svg("text", { x: 0, y: H + 14, class: "axis" });
    lo.textContent = fmtNum(buckets[0].lower);
    const hi = svg("text", { x: W, y: H + 14, class: "axis end" });
    hi.textContent = fmtNum(buckets[buckets.length - 1].upper);
    root.append(lo, hi);
  }
  return root;
}

function series(runs, name) {
  const W = 360, H = 90;
  const root = svg("svg", { width: W, height: H + 18, class: "series", "data-column": name });
  const points = runs.map((r) => r.columns.find((c) => c.name === name) || {});
  const line = (values, cls) => {
    const known = values.map((v, i) => [i, v]).filter(([, v]) => v !== null && v !== undefined);
    if (!known.length) return;
    const lo = Math.min(...known.map(([, v]) => v)), hi = Math.max(...known.map(([, v]) => v));
    const x = (i) => (values.length === 1 ? W / 2 : (i * (W - 8)) / (values.length - 1) + 4);
    const y = (v) => (hi === lo ? H / 2 : H - 4 - ((v - lo) * (H - 8)) / (hi - lo));
    root.appendChild(svg("polyline", { class: cls, points: known.map(([i, v]) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ") }));
    for (const [i, v] of known) {
      const dot = svg("circle", { class: cls, cx: x(i).toFixed(1), cy: y(v).toFixed(1), r: 3 });
      const tip = svg("title", {});
      tip.textContent = `${cls === "series-mean" ? "mean" : "completeness"} ${fmtNum(v)} (${fmtTime(runs[i].computed_at)})`;
      dot.appendChild(tip);
      root.appendChild(dot);
    }
  };
  line(points.map((c) => c.mean), "series-mean");
  line(points.map((c) => c.completeness), "series-completeness");
  const label = svg("text", { x: 0, y: H + 14, class: "axis" });
  label.textContent = `${runs.length} runs · mean (blue) · completeness (green)`;
  root.appendChild(label);
  return root;
}

function statsTable(columns) {
  return `<table class="stats"><thead><tr><th>Column</th><th>Type</th><th>Count</th><th>Completeness</th><th>Distinct≈</th>
    <th>Min</th><th>Max</th><th>Mean</th><th>Std</th></tr></thead><tbody>${columns.map((c) => `<tr data-column="${esc(c.name)}">
    <td>${esc(c.name)}</td><td>${esc(c.dtype)}</td><td>${fmtNum(c.count)}</td><td>${pct(c.completeness)}</td><td>${fmtNum(c.approx_distinct)}</td>
    <td>${fmtNum(c.min)}</td><td>${fmtNum(c.max)}</td><td>${fmtNum(c.mean)}</td><td>${fmtNum(c.std)}</td></tr>`).join("")}</tbody></table>`;
}

function charts(container, latest, runs) {
  for (const column of latest.columns) {
    const card = document.createElement("div");
    card.className = "chart card";
    card.innerHTML = `<h3>${esc(column.name)}</h3>`;
    if (column.kind === "numeric") {
      card.appendChild(histogram(column));
      if (runs) card.appendChild(series(runs, column.name));
    } else if (column.top.length) {
      card.insertAdjacentHTML("beforeend", `<table class="top">${column.top.map(([v, n]) => `<tr><td>${esc(v)}</td><td>${fmtNum(n)}</td></tr>`).join("")}</table>`);
    }
    container.appendChild(card);
  }
}

async function statisticsPage(view) {
  if (view === undefined) {
    const rows = await api("/statistics/freshness");
    main.innerHTML = `<h1>Statistics</h1><section id="stat-views"></section>`;
    table(document.getElementById("stat-views"), rows, [
      { title: "Feature view", html: (r) => `<a href="#/statistics/${enc(r.feature_view)}">${esc(r.feature_view)}</a>` },
      { title: "Last run", html: (r) => esc(fmtTime(r.last_materialized_at)) },
      { title: "Rows", html: (r) => esc(fmtNum(r.last_rows)) },
    ], { filter: (r) => r.feature_view });
    return;
  }
  const runs = await api(`/statistics/feature-views/${enc(view)}?limit=30`);
  main.innerHTML = `<h1>Statistics <span class="muted">${esc(view)}</span></h1><div id="view-stats"></div>`;
  const box = document.getElementById("view-stats");
  if (!runs.length) { box.innerHTML = `<p class="muted">No statistics yet: materialize the view or profile a window.</p>`; return; }
  const latest = runs[0];
  box.innerHTML = `<p>Latest run ${esc(fmtTime(latest.computed_at))} (${esc(latest.source)}, ${fmtNum(latest.row_count)} rows, window ${esc(fmtTime(latest.window_start))} → ${esc(fmtTime(latest.window_end))}); ${runs.length} runs shown.</p>${statsTable(latest.columns)}<div class="charts"></div>`;
  charts(box.querySelector(".charts"), latest, [...runs].reverse());
}

async function datasetsPage(name, version) {
  if (name === undefined) {
    const rows = await api("/statistics/training-datasets");
    main.innerHTML = `<h1>Training datasets</h1><section id="datasets"></section>`;
    table(document.getElementById("datasets"), rows, [
      { title: "Name", html: (d) => `<a href="#/datasets/${enc(d.name)}/${d.version}">${esc(d.name)}</a>` },
      { title: "Version", html: (d) => `v${d.version}` },
      { title: "Fingerprint", html: (d) => `<code title="${esc(d.entity_fingerprint)}">${esc(d.entity_fingerprint.slice(0, 12))}</code>` },
      { title: "Features", html: (d) => esc(d.features.join(", ")) },
      { title: "Time range", html: (d) => `${esc(fmtTime(d.min_event_timestamp))} → ${esc(fmtTime(d.max_event_timestamp))}` },
      { title: "Rows", html: (d) => fmtNum(d.row_count) },
      { title: "Created", html: (d) => esc(fmtTime(d.created_at)) },
    ], { filter: (d) => `${d.name} ${d.features.join(" ")}`, id: "datasets-table" });
    return;
  }
  const [all, runs, drift] = await Promise.all([
    api("/statistics/training-datasets"),
    api(`/statistics/training-datasets/${enc(name)}/versions/${enc(version)}`),
    api(`/statistics/drift/${enc(name)}?version=${enc(version)}`).catch((e) => ({ error: e.message })),
  ]);
  const flag = drift.error ? `<p class="error">${esc(drift.error)}</p>`
    : `<p class="drift-flag ${drift.drifted ? "drifted" : "stable"}">${drift.drifted ? "Drift detected" : "No drift"} (PSI threshold ${fmtNum(drift.threshold)})</p>
      <table id="drift-table"><thead><tr><th>Feature</th><th>View</th><th>PSI</th><th>Status</th><th>Against run of</th></tr></thead><tbody>${drift.features.map((f) =>
      `<tr class="${f.drifted ? "drifted" : ""}" data-feature="${esc(f.column)}"><td>${esc(f.column)}</td><td>${esc(f.feature_view)}</td><td>${fmtNum(f.psi)}</td>
      <td>${f.psi === null ? esc(f.note) : f.drifted ? "drifted" : "stable"}</td><td>${esc(fmtTime(f.current_computed_at))}</td></tr>`).join("")}</tbody></table>`;
  const d = all.find((x) => x.name === name && String(x.version) === String(version));
  const about = d ? `<p id="dataset-about">Fingerprint <code>${esc(d.entity_fingerprint)}</code> · ${fmtNum(d.row_count)} rows ·
    ${esc(fmtTime(d.min_event_timestamp))} → ${esc(fmtTime(d.max_event_timestamp))} · features ${esc(d.features.join(", "))} ·
    other versions: ${all.filter((x) => x.name === name).map((x) => `<a href="#/datasets/${enc(name)}/${x.version}">v${x.version}</a>`).join(" ")}</p>` : "";
  main.innerHTML = `<h1>${esc(name)} <span class="muted">v${esc(version)}</span></h1>${about}<h2>Drift against now</h2>${flag}<h2>Statistics</h2><div id="splits"></div>`;
  const box = document.getElementById("splits");
  for (const run of runs) {
    const part = document.createElement("section");
    part.innerHTML = `<h3>${esc(run.split)} <span class="muted">${fmtNum(run.row_count)} rows</span></h3>${statsTable(run.columns)}`;
    if (run.split === "all") { const c = document.createElement("div"); c.className = "charts"; part.appendChild(c); charts(c, run, null); }
    box.appendChild(part);
  }
}

function keyPrompt(message) {
  main.innerHTML = "";
  main.appendChild(document.getElementById("key-form").content.cloneNode(true));
  const error = document.getElementById("key-error");
  if (message) { error.textContent = message; error.hidden = false; }
  document.getElementById("key-prompt").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, document.getElementById("key-input").value.trim());
    cache.clear();
    route();
  });
  document.getElementById("key-input").focus();
}

// One check before any data call: a missing or refused key shows the prompt, not a 401.
let sessionChecked = false;
async function session() {
  if (sessionChecked) return;
  const key = sessionStorage.getItem(KEY);
  const response = await fetch("/ui/session", { headers: key ? { Authorization: `Bearer ${key}` } : {} });
  const body = await response.json();
  if (!body.key_accepted) {
    if (key) sessionStorage.removeItem(KEY);
    throw new AuthError(key ? body.message || "this key was refused" : "");
  }
  sessionChecked = true;
}

async function route() {
  const parts = (location.hash.replace(/^#\/?/, "") || "registry").split("/").map(decodeURIComponent);
  document.getElementById("forget").hidden = !sessionStorage.getItem(KEY);
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.getAttribute("href") === `#/${parts[0]}`);
  try {
    await session();
    document.getElementById("forget").hidden = !sessionStorage.getItem(KEY);
    if (parts[0] === "freshness") await freshnessPage();
    else if (parts[0] === "statistics") await statisticsPage(parts[1]);
    else if (parts[0] === "datasets") await datasetsPage(parts[1], parts[2]);
    else await registryPage(parts[1], parts[2]);
    document.body.dataset.ready = location.hash;
  } catch (error) {
    if (error instanceof AuthError) keyPrompt(error.message);
    else main.innerHTML = `<p class="error">${esc(error.message)}</p>`;
  }
}

document.getElementById("forget").addEventListener("click", () => { sessionStorage.removeItem(KEY); sessionChecked = false; cache.clear(); route(); });
window.addEventListener("hashchange", route);
route();
