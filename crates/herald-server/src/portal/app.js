// The tenant portal: one page over /portal/api (the session cookie names the tenant; every
// change sends the session's CSRF token). No framework, no build step; text only through
// textContent, never innerHTML, so nothing an endpoint or event says can run here.
"use strict";

const $ = (id) => document.getElementById(id);
let session = null;
let catalog = [];
let current = null; // the webhook shown

function say(text, isError) {
  const s = $("status");
  s.textContent = text;
  s.className = isError ? "status error" : "status";
}

async function api(method, path, body) {
  const headers = { "content-type": "application/json" };
  if (session) headers["x-herald-csrf"] = session.csrf_token;
  const r = await fetch("/portal/api" + path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  const data = text ? JSON.parse(text) : null;
  if (!r.ok) {
    const err = new Error((data && (data.detail || data.title)) || "HTTP " + r.status);
    err.status = r.status;
    throw err;
  }
  return data;
}

function el(tag, props, ...children) {
  const e = document.createElement(tag);
  Object.entries(props || {}).forEach(([k, v]) => {
    if (k === "text") e.textContent = v;
    else if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  });
  children.forEach((c) => e.append(c));
  return e;
}

function show(view) {
  ["list-view", "edit-view", "detail-view"].forEach((v) => ($(v).hidden = v !== view));
  $("main").focus();
}

function brand() {
  const q = new URLSearchParams(location.search);
  const b = Object.assign({}, session.branding || {});
  // The query may brand what the settings leave open, within the settings' own bounds.
  const fits = { name: (v) => v.length <= 100, logo_url: (v) => v.length <= 2048, accent: () => true, theme: (v) => v === "light" || v === "dark" };
  ["name", "logo_url", "accent", "theme"].forEach((k) => {
    const v = q.get(k);
    if (b[k] === undefined && v && fits[k](v)) b[k] = v;
  });
  if (b.name) {
    $("brand").textContent = b.name + " webhooks";
    document.title = b.name + " webhooks";
  }
  if (b.accent && /^#[0-9a-fA-F]{6}$/.test(b.accent)) document.documentElement.style.setProperty("--accent", b.accent);
  const dark = b.theme ? b.theme === "dark" : matchMedia("(prefers-color-scheme: dark)").matches;
  document.documentElement.dataset.theme = dark ? "dark" : "light";
  if (b.logo_url && /^https:\/\//.test(b.logo_url)) {
    $("logo").src = b.logo_url;
    $("logo").alt = (b.name || "") + " logo";
    $("logo").hidden = false;
  }
  $("who").textContent = session.tenant_name + (session.read_only ? " · read-only" : "");
  if (session.read_only) document.querySelectorAll("#add, .actions button, #replay button").forEach((b) => (b.disabled = true));
}

async function loadList() {
  const { webhooks } = await api("GET", "/webhooks?page_size=100");
  const ul = $("endpoints");
  ul.replaceChildren();
  $("empty").hidden = webhooks.length > 0;
  webhooks.forEach((w) => {
    const link = el("a", { href: "#" + w.id, text: w.url });
    ul.append(
      el("li", {}, link, " ",
        el("span", { class: "badge " + (w.disabled ? "disabled" : "enabled"), text: w.disabled ? "disabled" : "enabled" }),
        el("div", { class: "muted", text: w.events.join(", ") + (w.description ? " — " + w.description : "") })));
  });
}

function renderCatalog(selected) {
  const box = $("catalog");
  box.replaceChildren();
  const names = catalog.map((t) => t.name);
  (selected || []).forEach((s) => { if (!names.includes(s)) names.push(s); });
  if (names.length === 0) box.append(el("p", { class: "muted", text: "No event types are registered." }));
  names.forEach((name, i) => {
    const id = "ev-" + i;
    const t = catalog.find((c) => c.name === name);
    const input = el("input", { type: "checkbox", id, value: name });
    input.checked = (selected || []).includes(name);
    const info = el("div", {}, el("label", { for: id, text: name }));
    if (t) {
      const example = t.schema && Array.isArray(t.schema.examples) ? t.schema.examples[0] : undefined;
      info.append(el("details", {}, el("summary", { text: "Schema and example" }),
        el("pre", { text: JSON.stringify(t.schema, null, 2) }),
        example === undefined ? "" : el("pre", { text: JSON.stringify(example, null, 2) })));
    }
    box.append(el("div", { class: "type" }, input, info));
  });
}

function openForm(w) {
  current = w || null;
  $("edit-title").textContent = w ? "Edit endpoint" : "Add endpoint";
  $("f-url").value = w ? w.url : "";
  $("f-description").value = w && w.description ? w.description : "";
  $("f-filter").value = w && w.filter ? JSON.stringify(w.filter) : "";
  $("f-headers").value = w ? Object.entries(w.headers || {}).map(([k, v]) => k + ": " + v).join("\n") : "";
  $("f-rate").value = w && w.rate_limit ? w.rate_limit : "";
  $("f-format").value = w ? w.format : "herald";
  $("f-format").disabled = !!w;
  $("form-error").hidden = true;
  renderCatalog(w ? w.events : []);
  show("edit-view");
  $("f-url").focus();
}

function formBody() {
  const events = [...document.querySelectorAll("#catalog input:checked")].map((i) => i.value);
  if (events.length === 0) throw new Error("Choose at least one event type.");
  const body = { url: $("f-url").value.trim(), events, description: $("f-description").value };
  if (!current) body.format = $("f-format").value;
  const filter = $("f-filter").value.trim();
  if (filter) {
    try { body.filter = JSON.parse(filter); } catch (e) { throw new Error("The filter is not valid JSON."); }
  } else if (current) body.filter = null;
  const headers = {};
  $("f-headers").value.split("\n").map((l) => l.trim()).filter(Boolean).forEach((line) => {
    const at = line.indexOf(":");
    if (at < 1) throw new Error("Write each header as `Name: value`.");
    headers[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  });
  body.headers = headers;
  const rate = $("f-rate").value.trim();
  if (rate) body.rate_limit = Number(rate);
  else if (current) body.rate_limit = null;
  return body;
}

async function save(ev) {
  ev.preventDefault();
  const errorBox = $("form-error");
  errorBox.hidden = true;
  try {
    const body = formBody();
    let w;
    if (current) w = await api("PATCH", "/webhooks/" + current.id, body);
    else w = await api("POST", "/webhooks", body);
    say(current ? "Endpoint saved." : "Endpoint added.");
    await openDetail(w.id, w.signing_secret);
  } catch (e) {
    errorBox.textContent = e.message;
    errorBox.hidden = false;
    errorBox.focus && errorBox.focus();
  }
}

function when(t) {
  return t ? new Date(t).toLocaleString() : "";
}

async function health(w) {
  const box = $("health");
  box.replaceChildren();
  const stat = (label, value) => box.append(el("div", {}, el("span", { class: "muted", text: label + " " }), el("strong", { text: String(value) })));
  stat("State", w.disabled ? "disabled" : "enabled");
  if (w.disabled_reason) stat("Reason", w.disabled_reason);
  try {
    const s = await api("GET", "/stats");
    const mine = (s.webhooks || []).find((x) => x.webhook === w.id || x.id === w.id);
    if (mine) {
      if (mine.success_rate !== undefined && mine.success_rate !== null) stat("Success (1 h)", Math.round(mine.success_rate * 100) + "%");
      if (mine.attempts !== undefined) stat("Attempts (1 h)", mine.attempts);
      if (mine.circuit) stat("Circuit", mine.circuit === "open" ? "open until " + when(mine.circuit_open_until) : mine.circuit.replace("_", "-"));
      if (mine.last_error) stat("Last error", mine.last_error);
    }
  } catch (e) { /* health is a hint; the rest of the page works without it */ }
}

async function loadDeliveries(w) {
  const { deliveries } = await api("GET", "/deliveries?page_size=50&webhook=" + w.id);
  const tbody = $("deliveries").querySelector("tbody");
  tbody.replaceChildren();
  deliveries.forEach((d) => {
    const attempts = el("button", { type: "button", class: "link", text: "Attempts", onclick: () => showAttempts(d.id) });
    const redeliver = el("button", { type: "button", text: "Redeliver", onclick: async () => {
      try { await api("POST", "/deliveries/" + d.id + ":redeliver"); say("Redelivery queued."); await refreshSoon(w); } catch (e) { say(e.message, true); }
    } });
    redeliver.disabled = !!session.read_only;
    tbody.append(el("tr", { "data-delivery": d.id, "data-status": d.status },
      el("td", {}, el("code", { text: d.event_type }), el("div", { class: "muted", text: d.event_id })),
      el("td", {}, el("span", { class: "badge " + d.status, text: d.status })),
      el("td", { text: String(d.attempts) }),
      el("td", { text: (d.last_status_code ? "HTTP " + d.last_status_code + " " : "") + (d.last_error || "") }),
      el("td", {}, attempts, " ", redeliver)));
  });
}

async function showAttempts(id) {
  const d = await api("GET", "/deliveries/" + id);
  $("attempts-title").textContent = "Attempts of " + d.id;
  const ol = $("attempt-list");
  ol.replaceChildren();
  (d.attempt_log || []).forEach((a) => {
    ol.append(el("li", {}, el("div", { text: when(a.at) + " — " + (a.status_code ? "HTTP " + a.status_code : "no answer") + " in " + a.latency_ms + " ms" + (a.error ? " — " + a.error : "") }),
      a.response_excerpt ? el("pre", { text: a.response_excerpt }) : ""));
  });
  $("attempts").hidden = false;
  $("attempts-title").focus && $("attempts").scrollIntoView();
}

let refreshTimer = null;
async function refreshSoon(w) {
  clearTimeout(refreshTimer);
  await loadDeliveries(w);
  // Deliveries settle in the background: look again for a little while.
  let left = 10;
  const again = async () => {
    if (!current || current.id !== w.id || --left < 0) return;
    await loadDeliveries(w).catch(() => {});
    refreshTimer = setTimeout(again, 1000);
  };
  refreshTimer = setTimeout(again, 1000);
}

async function openDetail(id, secret) {
  const w = await api("GET", "/webhooks/" + id);
  current = w;
  $("detail-title").textContent = w.url;
  $("detail-meta").textContent = w.events.join(", ") + (w.filter ? " · filter " + JSON.stringify(w.filter) : "") + (w.rate_limit ? " · " + w.rate_limit + "/s" : "");
  $("toggle").textContent = w.disabled ? "Enable" : "Disable";
  $("secret").hidden = !secret;
  $("secret-value").textContent = secret || "";
  $("public-key").hidden = !w.public_key;
  $("public-key-value").textContent = w.public_key || "";
  $("attempts").hidden = true;
  show("detail-view");
  location.hash = w.id;
  await health(w);
  await refreshSoon(w);
}

async function action(fn) {
  try { await fn(); } catch (e) { say(e.message, true); }
}

function localToIso(v) {
  return v ? new Date(v).toISOString().replace(/\.\d{3}Z$/, "Z") : undefined;
}

async function start() {
  try {
    session = await api("GET", "/session");
  } catch (e) {
    say(e.status === 401 ? "This portal session has ended. Ask for a new link." : e.message, true);
    $("list-view").hidden = true;
    return;
  }
  brand();
  catalog = (await api("GET", "/event-types")).event_types;
  $("add").addEventListener("click", () => openForm(null));
  document.querySelectorAll(".back").forEach((b) => b.addEventListener("click", async () => { current = null; location.hash = ""; show("list-view"); await loadList(); }));
  $("form").addEventListener("submit", save);
  $("edit").addEventListener("click", () => openForm(current));
  $("toggle").addEventListener("click", () => action(async () => {
    await api("POST", "/webhooks/" + current.id + (current.disabled ? ":enable" : ":disable"));
    say(current.disabled ? "Endpoint enabled." : "Endpoint disabled.");
    await openDetail(current.id);
  }));
  $("test").addEventListener("click", () => action(async () => {
    const type = current.events.find((e) => catalog.some((c) => c.name === e));
    await api("POST", "/webhooks/" + current.id + ":test", type ? { event_type: type } : {});
    say("Test event sent.");
    await refreshSoon(current);
  }));
  $("rotate").addEventListener("click", () => action(async () => {
    if (!confirm("Rotate the signing secret? The old one keeps signing for a grace period.")) return;
    const w = await api("POST", "/webhooks/" + current.id + ":rotateSecret");
    say("Secret rotated.");
    await openDetail(w.id, w.signing_secret);
  }));
  $("delete").addEventListener("click", () => action(async () => {
    if (!confirm("Delete this endpoint? Its pending deliveries end.")) return;
    await api("DELETE", "/webhooks/" + current.id);
    say("Endpoint deleted.");
    current = null;
    location.hash = "";
    show("list-view");
    await loadList();
  }));
  $("replay").addEventListener("submit", (ev) => { ev.preventDefault(); action(async () => {
    const body = { status: $("r-status").value };
    const since = localToIso($("r-since").value), until = localToIso($("r-until").value);
    if (since) body.since = since;
    if (until) body.until = until;
    const r = await api("POST", "/webhooks/" + current.id + ":replay", body);
    say("Replayed " + r.replayed + " deliveries" + (r.done ? "." : " (more in the background)."));
    await refreshSoon(current);
  }); });
  $("endpoints").addEventListener("click", (ev) => {
    const a = ev.target.closest("a");
    if (!a) return;
    ev.preventDefault();
    action(() => openDetail(a.getAttribute("href").slice(1)));
  });
  await loadList();
  if (location.hash.length > 1) await action(() => openDetail(location.hash.slice(1)));
}

start();
