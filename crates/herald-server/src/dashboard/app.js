// Herald dashboard: a hash-routed page over Herald's own API. The key entered at
// login is kept in sessionStorage and sent as a bearer token; every rule about what
// a key may see is the server's. Charts are inline SVG drawn here, no libraries.
"use strict";

const KEY_STORAGE = "herald.dashboard.key";
const state = { key: null, scope: null, tenant: "", view: "overview", timer: null };

// ---------------------------------------------------------------- DOM helpers

/** h("td", {class: "num"}, "3") builds an element; strings become text nodes. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

const SVG_NS = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const $ = (id) => document.getElementById(id);

function toast(text, bad) {
  const t = $("toast");
  t.textContent = text;
  t.className = bad ? "toast bad" : "toast";
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.hidden = true), 4000);
}

// ---------------------------------------------------------------- formatting

function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (isNaN(d)) return iso;
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

/** `11-27 02:16:39` (UTC), for tight list columns. */
function fmtCompact(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toISOString().slice(5, 19).replace("T", " ");
}

function shortTime(iso) {
  const d = new Date(iso);
  return d.toISOString().slice(11, 16);
}

const CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/** The creation time inside a prefixed ULID id (`op_01HX…`). */
function idTime(id) {
  const ulid = String(id).split("_").pop().slice(0, 10).toUpperCase();
  let ms = 0;
  for (const ch of ulid) {
    const v = CROCKFORD.indexOf(ch);
    if (v < 0) return null;
    ms = ms * 32 + v;
  }
  return new Date(ms).toISOString();
}

function pct(x) {
  return x === null || x === undefined ? "—" : (x * 100).toFixed(1).replace(/\.0$/, "") + "%";
}

/** `dlv_01M8…G1AD88YP` for tight columns; the full id stays in the title and data attributes. */
function shortId(id) {
  const [prefix, rest] = String(id).split("_");
  return rest && rest.length > 12 ? `${prefix}_…${rest.slice(-8)}` : String(id);
}

function rateClass(x) {
  if (x === null || x === undefined) return "rate";
  return "rate " + (x >= 0.99 ? "good" : x >= 0.9 ? "fair" : "poor");
}

function ms(x) {
  return x === null || x === undefined ? "—" : x + " ms";
}

function badge(status) {
  const cls = "badge st-" + String(status).replace(/\s+/g, "-");
  return h("span", { class: cls, "data-status": status }, status);
}

function truncate(text, n) {
  text = String(text ?? "");
  return text.length > n ? text.slice(0, n - 1) + "…" : text;
}

/** datetime-local value (local time) to RFC 3339, or "" when empty. */
function localToRfc3339(value) {
  if (!value) return "";
  const d = new Date(value);
  return isNaN(d) ? "" : d.toISOString();
}

// ---------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.detail || body.title)) || "HTTP " + status);
    this.status = status;
    this.body = body;
  }
}

async function api(method, path, body) {
  const headers = { Authorization: "Bearer " + state.key };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch (_) {
    json = null;
  }
  if (resp.status === 401 && state.scope) {
    logout("Your key is no longer accepted. Sign in again.");
  }
  if (!resp.ok) throw new ApiError(resp.status, json);
  return json;
}

/** Query string from an object, skipping empty values; adds the admin's tenant filter. */
function qs(params, withTenant = true) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v !== null && v !== undefined) p.set(k, v);
  if (withTenant && state.tenant) p.set("tenant", state.tenant);
  const text = p.toString();
  return text ? "?" + text : "";
}

function windowMinutes() {
  return Number($("window").value || 60);
}

async function fetchStats() {
  const since = new Date(Date.now() - windowMinutes() * 60000).toISOString();
  return api("GET", "/stats" + qs({ since }));
}

// ---------------------------------------------------------------- login

async function login(key) {
  state.key = key;
  try {
    const stats = await api("GET", "/stats");
    state.scope = stats.scope;
  } catch (e) {
    state.key = null;
    if (e.status === 401) throw new Error("That key was not accepted.");
    if (e.status === 403) throw new Error("Worker keys cannot open the dashboard; use an admin or tenant key.");
    throw e;
  }
  sessionStorage.setItem(KEY_STORAGE, key);
  showApp();
}

function logout(message) {
  sessionStorage.removeItem(KEY_STORAGE);
  state.key = null;
  state.scope = null;
  clearInterval(state.timer);
  $("app").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("api-key").value = "";
  $("api-key").focus();
}

function showApp() {
  $("login").hidden = true;
  $("app").hidden = false;
  const admin = state.scope.role === "admin";
  $("scope").textContent = admin ? "admin · all tenants" : "tenant · " + state.scope.tenant;
  $("tenant-filter-label").hidden = !admin;
  route();
}

// ---------------------------------------------------------------- routing

function route() {
  // `#/deliveries/dlv_…?webhook=wh_…`: view, optional id, optional filters.
  const parts = (location.hash || "#/overview").slice(2).split("?")[0].split("/");
  const view = VIEWS[parts[0]] ? parts[0] : "overview";
  state.view = view;
  for (const a of document.querySelectorAll("#tabs a")) a.classList.toggle("active", a.dataset.view === view);
  clearInterval(state.timer);
  const main = $("view");
  main.replaceChildren();
  VIEWS[view](main, parts.slice(1)).catch((e) => showError(main, e));
}

function showError(main, e) {
  main.append(h("div", { class: "card error" }, "Could not load: " + e.message));
}

function refresh() {
  if (state.scope) route();
}

// ---------------------------------------------------------------- charts

const CHART = { w: 560, h: 200, left: 40, right: 10, top: 10, bottom: 24 };

function niceMax(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

/** Frame with y grid, y labels and a few x labels; returns {svg, x(i), y(v)}. */
function frame(points, yMax, yFmt) {
  const { w, h: hh, left, right, top, bottom } = CHART;
  const svg = s("svg", { viewBox: `0 0 ${w} ${hh}`, role: "img" });
  const iw = w - left - right;
  const ih = hh - top - bottom;
  const n = Math.max(points.length, 1);
  const x = (i) => left + (iw * i) / n;
  const y = (v) => top + ih - (ih * v) / yMax;
  for (let k = 0; k <= 4; k++) {
    const v = (yMax * k) / 4;
    svg.append(s("line", { x1: left, x2: w - right, y1: y(v), y2: y(v), class: "axis" }));
    svg.append(s("text", { x: left - 4, y: y(v) + 3, "text-anchor": "end" }, yFmt(v)));
  }
  const step = Math.max(1, Math.ceil(n / 6));
  for (let i = 0; i < points.length; i += step) {
    svg.append(s("text", { x: x(i), y: hh - 6, "text-anchor": "start" }, shortTime(points[i].t)));
  }
  return { svg, x, y, bw: iw / n };
}

function fmtCount(v) {
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}

function attemptsChart(points) {
  const max = niceMax(Math.max(0, ...points.map((p) => p.succeeded + p.failed)));
  const f = frame(points, max, fmtCount);
  points.forEach((p, i) => {
    const w = Math.max(1, f.bw - 1);
    const ok = s("rect", { x: f.x(i), width: w, y: f.y(p.succeeded), height: f.y(0) - f.y(p.succeeded), fill: "var(--ok)" });
    ok.append(s("title", {}, `${shortTime(p.t)}: ${p.succeeded} succeeded, ${p.failed} failed`));
    const bad = s("rect", { x: f.x(i), width: w, y: f.y(p.succeeded + p.failed), height: f.y(0) - f.y(p.failed), fill: "var(--bad)" });
    bad.append(s("title", {}, `${shortTime(p.t)}: ${p.failed} failed`));
    if (p.succeeded) f.svg.append(ok);
    if (p.failed) f.svg.append(bad);
  });
  return f.svg;
}

function linePath(points, key, f) {
  let d = "";
  let pen = false;
  points.forEach((p, i) => {
    const v = p[key];
    if (v === null || v === undefined) {
      pen = false;
      return;
    }
    d += (pen ? "L" : "M") + (f.x(i) + f.bw / 2).toFixed(1) + "," + f.y(v).toFixed(1);
    pen = true;
  });
  return d;
}

function latencyChart(points) {
  const max = niceMax(Math.max(0, ...points.map((p) => p.p99_ms || 0)));
  const f = frame(points, max, (v) => fmtCount(v) + "ms");
  for (const [key, color] of [["p50_ms", "var(--p50)"], ["p90_ms", "var(--p90)"], ["p99_ms", "var(--p99)"]]) {
    f.svg.append(s("path", { d: linePath(points, key, f), fill: "none", stroke: color, "stroke-width": 2 }));
    points.forEach((p, i) => {
      if (p[key] !== null && p[key] !== undefined) {
        const dot = s("circle", { cx: f.x(i) + f.bw / 2, cy: f.y(p[key]), r: 2.5, fill: color });
        dot.append(s("title", {}, `${shortTime(p.t)} ${key.replace("_ms", "")}: ${p[key]} ms`));
        f.svg.append(dot);
      }
    });
  }
  return f.svg;
}

function backlogChart(points) {
  const max = niceMax(Math.max(0, ...points.map((p) => p.pending)));
  const f = frame(points, max, fmtCount);
  if (points.length) {
    let d = `M${f.x(0)},${f.y(0)}`;
    points.forEach((p, i) => {
      d += `L${f.x(i)},${f.y(p.pending)}L${f.x(i) + f.bw},${f.y(p.pending)}`;
    });
    d += `L${f.x(points.length - 1) + f.bw},${f.y(0)}Z`;
    f.svg.append(s("path", { d, fill: "var(--warn)", "fill-opacity": 0.25, stroke: "var(--warn)", "stroke-width": 1.5 }));
  }
  return f.svg;
}

function chartCard(title, svg, legend) {
  return h("div", { class: "card chart" }, h("h3", {}, title), svg,
    h("div", { class: "legend" }, legend.map(([cls, label]) => h("span", {}, h("i", { class: cls }), label))));
}

// ---------------------------------------------------------------- views

const VIEWS = {
  async overview(main) {
    const stats = await fetchStats();
    const t = stats.totals;
    const now = stats.now;
    const rate = t.attempts ? t.succeeded / t.attempts : null;
    const ops = now.operations || {};
    const kpi = (label, value, cls) => h("div", { class: "card kpi" }, h("div", { class: "value " + (cls || "") }, value), h("div", { class: "label" }, label));
    main.append(
      h("div", { class: "grid-kpi" },
        kpi("attempts in window", t.attempts),
        kpi("attempt success rate", pct(rate), rateClass(rate)),
        kpi("latency p50 / p90 / p99", `${t.p50_ms ?? "—"} / ${t.p90_ms ?? "—"} / ${t.p99_ms ?? "—"} ms`),
        kpi("backlog (pending now)", (now.deliveries || {}).pending || 0),
        kpi("dead deliveries", (now.deliveries || {}).failed || 0, (now.deliveries || {}).failed ? "rate poor" : ""),
        kpi("operations queued · running", `${ops.queued || 0} · ${ops.running || 0}`)),
      h("div", { class: "grid-charts" },
        chartCard(`Delivery attempts per ${stats.bucket_seconds / 60} min by outcome`, attemptsChart(stats.attempts),
          [["sw-ok", "succeeded"], ["sw-bad", "failed"]]),
        chartCard("Attempt latency percentiles", latencyChart(stats.attempts),
          [["sw-p50", "p50"], ["sw-p90", "p90"], ["sw-p99", "p99"]]),
        chartCard("Backlog over time (pending deliveries)", backlogChart(stats.backlog), [["sw-backlog", "pending"]])),
      h("p", { class: "muted" }, `Window ${fmtTime(stats.since)} – ${fmtTime(stats.until)}, from the store. Refreshes every 10 s.`));
    state.timer = setInterval(() => {
      if (state.view === "overview" && !document.hidden) refresh();
    }, 10000);
  },

  async deliveries(main, rest) {
    const f = deliveryFilters();
    const list = h("div", { class: "card" });
    const detail = h("div", { class: "card detail", id: "delivery-detail" }, h("p", { class: "muted" }, "Select a delivery to see its attempts."));
    main.append(h("div", { class: "card" }, h("h2", {}, "Deliveries"), f.form), h("div", { class: "split" }, list, detail));
    await loadDeliveries(list, f.values(), null);
    if (rest[0]) await showDelivery(detail, rest[0]);
  },

  async webhooks(main) {
    const [hooks, stats] = await Promise.all([api("GET", "/webhooks" + qs({ page_size: 100 })), fetchStats()]);
    const health = new Map(stats.webhooks.map((w) => [w.id, w]));
    const rows = hooks.webhooks.map((w) => {
      const hl = health.get(w.id) || {};
      const toggle = h("button", { type: "button", class: w.disabled ? "primary" : "danger", "data-action": w.disabled ? "enable" : "disable" },
        w.disabled ? "Enable" : "Disable");
      toggle.addEventListener("click", async () => {
        toggle.disabled = true;
        try {
          await api("PATCH", `/webhooks/${w.id}`, { disabled: !w.disabled });
          toast(`${w.id} ${w.disabled ? "enabled" : "disabled"}`);
          refresh();
        } catch (e) {
          toast(e.message, true);
          toggle.disabled = false;
        }
      });
      return h("tr", { "data-webhook": w.id },
        h("td", {}, h("div", { class: "mono" }, w.id), h("div", {}, truncate(w.url, 60)), w.tenant && h("div", { class: "muted mono" }, w.tenant)),
        h("td", {}, w.events.join(", ")),
        h("td", {}, badge(w.disabled ? "disabled" : "enabled"), w.disabled_reason && h("div", { class: "muted" }, w.disabled_reason),
          hl.circuit && hl.circuit !== "closed" && h("div", { class: "muted", "data-circuit": hl.circuit },
            hl.circuit === "open" ? `circuit open until ${fmtTime(hl.circuit_open_until)}` : "circuit half-open")),
        h("td", { class: "num" }, h("span", { class: rateClass(hl.success_rate) }, pct(hl.success_rate)), h("div", { class: "muted" }, `${hl.attempts || 0} attempts`)),
        h("td", {}, hl.last_error ? [h("div", {}, truncate(hl.last_error, 80)), h("div", { class: "muted" }, fmtTime(hl.last_error_at))] : h("span", { class: "muted" }, "—")),
        h("td", {}, h("a", { href: `#/deliveries?webhook=${w.id}` }, "deliveries"), " ", toggle));
    });
    main.append(h("div", { class: "card" },
      h("h2", {}, "Webhooks"),
      h("p", { class: "muted" }, "Success rate and last error over the selected window."),
      table(["Webhook", "Events", "State", "Success", "Last error", ""], rows, "No webhooks yet.")));
  },

  async operations(main) {
    const type = h("input", { name: "type", placeholder: "any type" });
    const done = h("select", { name: "done" }, h("option", { value: "" }, "any"), h("option", { value: "false" }, "not done"), h("option", { value: "true" }, "done"));
    const list = h("div", {});
    const load = async () => {
      list.replaceChildren();
      const page = await api("GET", "/operations" + qs({ type: type.value.trim(), done: done.value, page_size: 100 }));
      list.append(table(["Operation", "Type", "State", "Progress", "Created", ""], page.operations.map(operationRow), "No operations."));
    };
    const form = h("form", { class: "filters" },
      h("label", {}, "Type", type), h("label", {}, "Done", done), h("button", { type: "submit" }, "Filter"));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      load().catch((err) => toast(err.message, true));
    });
    main.append(h("div", { class: "card" }, h("h2", {}, "Operations"), form, list));
    await load();
  },

  async events(main) {
    const key = h("input", { name: "key", placeholder: "e.g. pay_42" });
    const type = h("input", { name: "type", placeholder: "any type" });
    const list = h("div", {});
    const load = async () => {
      list.replaceChildren();
      const page = await api("GET", "/events" + qs({ key: key.value.trim(), type: type.value.trim(), page_size: 100 }));
      // History reads oldest first; the newest matter most here.
      const rows = page.events.slice().reverse().map((e) =>
        h("tr", { "data-event": e.id },
          h("td", { class: "mono" }, e.id), h("td", {}, e.type), h("td", { class: "mono" }, e.key || "—"),
          h("td", { class: "num" }, e.sequence ?? "—"), h("td", {}, fmtTime(e.created_at)),
          h("td", {}, h("pre", {}, truncate(JSON.stringify(e.data), 300)))));
      list.append(table(["Event", "Type", "Key", "Seq", "Created", "Data"], rows, "No events match."));
      if (page.next_page_token) list.append(h("p", { class: "muted more" }, "Showing the first 100 matches; narrow the search to see more."));
    };
    const form = h("form", { class: "filters" }, h("label", {}, "Key", key), h("label", {}, "Type", type), h("button", { type: "submit", class: "primary" }, "Search"));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      load().catch((err) => toast(err.message, true));
    });
    main.append(h("div", { class: "card" }, h("h2", {}, "Events"), form, list));
    await load();
  },
};

function table(headers, rows, emptyText) {
  return h("table", {},
    h("thead", {}, h("tr", {}, headers.map((t) => h("th", {}, t)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { class: "empty", colspan: headers.length }, emptyText))));
}

/** The state the AIP-151 resource implies: done with a response, an error, or cancelled; else in progress. */
function operationState(op) {
  if (!op.done) return "in progress";
  if (op.error) return op.error.code === "CANCELLED" ? "cancelled" : "failed";
  return "succeeded";
}

function operationRow(op) {
  const id = op.name.replace(/^operations\//, "");
  const st = operationState(op);
  const progress = Number(op.metadata.progress_percent || 0);
  const bar = h("span", { class: "progress" }, h("span", {}));
  bar.firstChild.style.width = Math.max(0, Math.min(100, progress)) + "%";
  let action = null;
  if (!op.done) {
    action = h("button", { type: "button", class: "danger", "data-action": "cancel" }, "Cancel");
    action.addEventListener("click", async () => {
      action.disabled = true;
      try {
        const after = await api("POST", `/operations/${id}:cancel`, {});
        toast(after.done ? `${id} cancelled` : `${id}: cancel requested; the worker stops at its next heartbeat`);
        refresh();
      } catch (e) {
        toast(e.message, true);
        action.disabled = false;
      }
    });
  }
  return h("tr", { "data-operation": id },
    h("td", { class: "mono" }, id),
    h("td", {}, op.metadata.type),
    h("td", {}, badge(st), op.error && h("div", { class: "muted" }, `${op.error.code}: ${truncate(op.error.message, 60)}`)),
    h("td", {}, bar, progress + "%"),
    h("td", {}, fmtTime(idTime(id))),
    h("td", {}, action));
}

// ---------------------------------------------------------------- deliveries

function deliveryFilters() {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const webhook = h("input", { name: "webhook", placeholder: "wh_…", size: 30, value: params.get("webhook") || "", list: "webhook-ids" });
  // Suggestions for the webhook box: the caller's webhooks, by id with their URL.
  const choices = h("datalist", { id: "webhook-ids" });
  api("GET", "/webhooks" + qs({ page_size: 100 }))
    .then((page) => choices.append(...page.webhooks.map((w) => h("option", { value: w.id }, w.url))))
    .catch(() => {});
  const status = h("select", { name: "status" }, ["", "pending", "succeeded", "failed"].map((v) =>
    h("option", { value: v, selected: params.get("status") === v }, v || "any")));
  const eventType = h("input", { name: "event_type", placeholder: "payment.succeeded", value: params.get("event_type") || "" });
  const since = h("input", { name: "since", type: "datetime-local" });
  const until = h("input", { name: "until", type: "datetime-local" });
  const form = h("form", { class: "filters", id: "delivery-filters" },
    h("label", {}, "Webhook", webhook, choices), h("label", {}, "Status", status), h("label", {}, "Event type", eventType),
    h("label", {}, "Since", since), h("label", {}, "Until", until),
    h("button", { type: "submit", class: "primary" }, "Filter"));
  const values = () => ({
    webhook: webhook.value.trim(), status: status.value, event_type: eventType.value.trim(),
    since: localToRfc3339(since.value), until: localToRfc3339(until.value), page_size: 50,
  });
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const list = document.querySelector(".split > .card");
    list.replaceChildren();
    loadDeliveries(list, values(), null).catch((err) => toast(err.message, true));
  });
  return { form, values };
}

async function loadDeliveries(container, filters, token) {
  const page = await api("GET", "/deliveries" + qs({ ...filters, page_token: token || "" }));
  let body = container.querySelector("tbody");
  if (!body) {
    const t = table(["Delivery", "Event type", "Webhook", "Status", "Attempts", "Last result", "Created (UTC)"], [], "No deliveries match.");
    container.append(t);
    body = t.querySelector("tbody");
    if (page.deliveries.length) body.replaceChildren();
  }
  for (const d of page.deliveries) {
    const tr = h("tr", { class: "clickable", "data-delivery": d.id, "data-status": d.status },
      h("td", { class: "mono nowrap", title: d.id }, shortId(d.id)),
      h("td", {}, d.event_type),
      h("td", { class: "mono nowrap", title: d.webhook_id }, shortId(d.webhook_id)),
      h("td", {}, badge(d.status)),
      h("td", { class: "num" }, d.attempts),
      h("td", { class: "nowrap" }, lastResult(d)),
      h("td", { class: "nowrap", title: d.created_at }, fmtCompact(d.created_at)));
    tr.addEventListener("click", () => {
      for (const r of body.querySelectorAll("tr.selected")) r.classList.remove("selected");
      tr.classList.add("selected");
      showDelivery($("delivery-detail"), d.id).catch((e) => toast(e.message, true));
    });
    body.append(tr);
  }
  container.querySelector(".more")?.remove();
  if (page.next_page_token) {
    const more = h("button", { type: "button", class: "more" }, "Load more");
    more.addEventListener("click", () => loadDeliveries(container, filters, page.next_page_token).catch((e) => toast(e.message, true)));
    container.append(more);
  }
}

function lastResult(d) {
  if (d.status === "succeeded") return d.last_status_code ? "HTTP " + d.last_status_code : "ok";
  return [d.last_status_code ? "HTTP " + d.last_status_code : null,
    d.last_error && d.last_error !== "HTTP " + d.last_status_code ? h("div", { class: "muted" }, truncate(d.last_error, 50)) : null];
}

async function showDelivery(panel, id) {
  const d = await api("GET", `/deliveries/${id}`);
  const redeliver = h("button", { type: "button", class: "primary", id: "redeliver" }, "Redeliver");
  const reload = h("button", { type: "button" }, "Refresh");
  reload.addEventListener("click", () => showDelivery(panel, id).catch((e) => toast(e.message, true)));
  redeliver.addEventListener("click", async () => {
    redeliver.disabled = true;
    try {
      await api("POST", `/deliveries/${id}:redeliver`, {});
      toast(`${id} queued for redelivery`);
      await followRedelivery(panel, id, d.attempts);
    } catch (e) {
      toast(e.message, true);
      redeliver.disabled = false;
    }
  });
  const attempts = d.attempt_log.slice().reverse().map((a, i) =>
    h("tr", { "data-attempt": a.id },
      h("td", { class: "num" }, d.attempt_log.length - i),
      h("td", {}, fmtTime(a.at)),
      h("td", {}, a.status_code ? badge(a.status_code >= 200 && a.status_code < 300 ? "succeeded" : "failed") : badge("failed"), " ", a.status_code ?? ""),
      h("td", { class: "num" }, ms(a.latency_ms)),
      h("td", {}, a.error ? h("div", {}, a.error) : null, a.response_excerpt ? h("pre", {}, a.response_excerpt) : null)));
  panel.replaceChildren(
    h("h2", {}, "Delivery ", h("span", { class: "mono" }, d.id)),
    h("div", { class: "actions" }, redeliver, reload),
    h("dl", {},
      h("dt", {}, "Status"), h("dd", { id: "delivery-status" }, badge(d.status)),
      h("dt", {}, "Event"), h("dd", { class: "mono" }, d.event_id, " · ", d.event_type),
      h("dt", {}, "Webhook"), h("dd", { class: "mono" }, d.webhook_id),
      d.tenant ? [h("dt", {}, "Tenant"), h("dd", { class: "mono" }, d.tenant)] : null,
      h("dt", {}, "Attempts"), h("dd", {}, d.attempts),
      h("dt", {}, "Next attempt"), h("dd", {}, fmtTime(d.next_attempt_at)),
      h("dt", {}, "Created"), h("dd", {}, fmtTime(d.created_at))),
    h("h3", {}, "Attempts"),
    table(["#", "At", "Result", "Latency", "Error and response"], attempts, "No attempts yet."));
  // Keep the row in the list in step with what the panel shows.
  const row = document.querySelector(`tr[data-delivery="${d.id}"]`);
  if (row) {
    row.dataset.status = d.status;
    row.children[3].replaceChildren(badge(d.status));
    row.children[4].textContent = d.attempts;
    row.children[5].replaceChildren(...[lastResult(d)].flat().filter(Boolean));
  }
  return d;
}

/** After a redeliver, re-reads the delivery until its next attempt is recorded (up to a minute). */
async function followRedelivery(panel, id, attemptsBefore) {
  for (let i = 0; i < 60; i++) {
    await new Promise((r) => setTimeout(r, 1000));
    if (state.view !== "deliveries") return;
    const d = await showDelivery(panel, id);
    if (d.attempts > attemptsBefore && d.status !== "pending") return;
  }
}

// ---------------------------------------------------------------- start

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    $("login-error").textContent = "";
    $("login-button").disabled = true;
    try {
      await login($("api-key").value.trim());
    } catch (err) {
      $("login-error").textContent = err.message;
    } finally {
      $("login-button").disabled = false;
    }
  });
  $("logout").addEventListener("click", () => logout(""));
  $("window").addEventListener("change", refresh);
  $("tenant-filter").addEventListener("change", (e) => {
    state.tenant = e.target.value.trim();
    refresh();
  });
  window.addEventListener("hashchange", () => {
    $("toast").hidden = true;
    if (state.scope) route();
  });
  const saved = sessionStorage.getItem(KEY_STORAGE);
  if (saved) {
    login(saved).catch(() => logout(""));
  } else {
    logout("");
  }
});
