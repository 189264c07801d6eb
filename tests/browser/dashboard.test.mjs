// The dashboard in a real browser: Debian's Chromium driven by playwright-core,
// against a Herald binary started on port 0 with a webhook receiver that fails the
// first request. Logs in, finds the failed delivery, presses Redeliver and sees it
// succeed; also disables a webhook, cancels an operation, searches events by key,
// checks a tenant key's scope, and saves screenshots of the main pages.
//
// Run by crates/herald/tests/browser.rs (HERALD_TEST_BROWSER=1). Needs HERALD_BIN
// (the herald binary) and playwright-core under HERALD_TOOLS_DIR.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import http from "node:http";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const TOOLS_DIR = process.env.HERALD_TOOLS_DIR || "/var/cache/herald-tools";
const HERALD_BIN = process.env.HERALD_BIN;
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SHOTS = process.env.HERALD_SCREENSHOTS_DIR || "";
const ADMIN = "browser-test-admin-key";

const { chromium } = createRequire(path.join(TOOLS_DIR, "package.json"))("playwright-core");

/** Starts `herald serve` on port 0; resolves with its base URL once it listens. */
function startHerald(dir) {
  const config = path.join(dir, "herald.toml");
  fs.writeFileSync(config, `
[[operation_types]]
name = "transcode"
trigger = "POST /videos"
lease = "5m"
max_attempts = 3

[webhooks]
allow_private_destinations = true
schedule = ["0s"]
`);
  const child = spawn(HERALD_BIN, ["serve", "--listen", "127.0.0.1:0", "--database", `sqlite://${dir}/herald.db`, "--config", config], {
    env: { ...process.env, HERALD_ADMIN_KEY: ADMIN, HERALD_LOG: process.env.HERALD_LOG || "warn" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  return new Promise((resolve, reject) => {
    let out = "";
    child.on("exit", (code) => reject(new Error(`herald exited with ${code}: ${out}`)));
    child.stdout.on("data", (chunk) => {
      out += chunk;
      const m = out.match(/herald listening on (http:\/\/\S+)/);
      if (m) resolve({ child, base: m[1] });
    });
  });
}

/**
 * Records every webhook request. `/hooks/payments` answers 500 to its first request and
 * 200 after; `/hooks/invoices` always answers 503; everything else answers 200. A small varying delay gives the latency chart shape.
 */
function startReceiver() {
  const received = [];
  let n = 0;
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const seen = received.filter((r) => r.path === req.url).length;
      received.push({ path: req.url, headers: req.headers, body: Buffer.concat(chunks).toString() });
      const delay = [15, 40, 25, 90, 30, 60][n++ % 6];
      setTimeout(() => {
        if (req.url === "/hooks/invoices") {
          res.writeHead(503, { "content-type": "text/plain" });
          res.end("invoice service unavailable");
        } else if (req.url === "/hooks/payments" && seen === 0) {
          res.writeHead(500, { "content-type": "application/json" });
          res.end('{"error":"payments database is down for maintenance"}');
        } else {
          res.writeHead(200, { "content-type": "text/plain" });
          res.end("ok");
        }
      }, delay);
    });
  });
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => resolve({ server, received, base: `http://127.0.0.1:${server.address().port}` }));
  });
}

async function call(base, method, p, key, body) {
  const resp = await fetch(base + p, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body ? { "content-type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await resp.text();
  const json = text ? JSON.parse(text) : null;
  if (!resp.ok) throw new Error(`${method} ${p}: ${resp.status} ${text}`);
  return json;
}

/** Polls `check` until it returns a truthy value (at most `seconds`). */
async function eventually(what, check, seconds = 20) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function shot(page, name) {
  if (!SHOTS) return;
  fs.mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

test("operator finds a failed delivery, redelivers it and sees it succeed", async (t) => {
  assert.ok(HERALD_BIN, "HERALD_BIN must name the herald binary");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "herald-browser-"));
  const receiver = await startReceiver();
  const { child, base } = await startHerald(dir);
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    // playwright gives the browser a new, empty user-data-dir of its own.
  });
  t.after(async () => {
    await browser.close();
    child.kill("SIGTERM");
    receiver.server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  // --- data, through the API
  const acme = await call(base, "POST", "/tenants", ADMIN, { name: "acme" });
  const acmeKey = (await call(base, "POST", `/tenants/${acme.id}/keys`, ADMIN, { role: "tenant" })).key;
  const globex = await call(base, "POST", "/tenants", ADMIN, { name: "globex" });
  const globexKey = (await call(base, "POST", `/tenants/${globex.id}/keys`, ADMIN, { role: "tenant" })).key;
  const payments = await call(base, "POST", "/webhooks", acmeKey, { url: receiver.base + "/hooks/payments", events: ["payment.*"], description: "payments service" });
  const orders = await call(base, "POST", "/webhooks", acmeKey, { url: receiver.base + "/hooks/orders", events: ["order.*"] });
  // Invoices: the endpoint is down and the webhook retries hourly, so its deliveries wait (the backlog).
  const invoices = await call(base, "POST", "/webhooks", acmeKey, { url: receiver.base + "/hooks/invoices", events: ["invoice.*"], schedule: ["0s", "1h"] });

  const payment = await call(base, "POST", "/events", ADMIN, { type: "payment.succeeded", tenant: acme.id, key: "pay_42", data: { payment_id: "pay_42", amount: 4599, currency: "USD" } });
  for (let i = 1; i <= 8; i++) {
    await call(base, "POST", "/events", ADMIN, { type: "order.created", tenant: acme.id, key: `ord_${i}`, data: { order_id: `ord_${i}`, total: i * 1000 } });
  }
  for (let i = 1; i <= 3; i++) {
    await call(base, "POST", "/events", ADMIN, { type: "invoice.issued", tenant: acme.id, key: `inv_${i}`, data: { invoice_id: `inv_${i}` } });
  }
  const videos = [];
  for (const src of ["intro.mp4", "keynote.mov", "demo.webm"]) {
    videos.push(await call(base, "POST", "/videos", acmeKey, { src }));
  }
  const worker = (await call(base, "POST", "/keys", ADMIN, { role: "worker" })).key;
  const claimed = await call(base, "POST", "/operations:claim", worker, { types: ["transcode"], max: 1 });
  const running = claimed.operations[0];
  await call(base, "POST", `/${running.name}:heartbeat`, worker, { lease_token: running.lease_token, metadata: { progress_percent: 42 } });

  await eventually("the invoice deliveries to wait for their retry", async () => {
    const page = await call(base, "GET", `/deliveries?webhook=${invoices.id}&status=pending`, ADMIN);
    return page.deliveries.length === 3 && page.deliveries.every((d) => d.attempts === 1);
  });
  await call(base, "PATCH", `/webhooks/${invoices.id}`, acmeKey, { disabled: true });
  const failed = await eventually("the payment delivery to fail", async () => {
    const page = await call(base, "GET", `/deliveries?webhook=${payments.id}`, ADMIN);
    return page.deliveries.find((d) => d.status === "failed");
  });
  await eventually("the order deliveries to succeed", async () => {
    const page = await call(base, "GET", `/deliveries?webhook=${orders.id}&status=succeeded`, ADMIN);
    return page.deliveries.length === 8;
  });

  // --- the browser
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  // The one expected failure is the 401 of the deliberately wrong key below.
  page.on("console", (m) => m.type() === "error" && !/status of 401/.test(m.text()) && errors.push(m.text()));

  await page.goto(base + "/dashboard");
  await page.locator("#login-form").waitFor();
  await shot(page, "login");
  await page.fill("#api-key", "not-a-key");
  await page.click("#login-button");
  await page.locator("#login-error", { hasText: "not accepted" }).waitFor();
  await page.fill("#api-key", ADMIN);
  await page.click("#login-button");
  await page.locator("#scope", { hasText: "admin" }).waitFor();
  await page.locator(".chart svg rect").first().waitFor();
  await shot(page, "overview");

  // Deliveries: the failed one, its attempt with the response excerpt, Redeliver.
  await page.click('#tabs a[data-view="deliveries"]');
  const failedRows = page.locator('tr[data-status="failed"]');
  await failedRows.first().waitFor();
  assert.equal(await failedRows.count(), 1, "exactly one failed delivery is listed");
  assert.equal(await failedRows.first().getAttribute("data-delivery"), failed.id);
  await failedRows.first().click();
  await page.locator("#delivery-detail pre", { hasText: "payments database is down" }).waitFor();
  await page.locator('#delivery-status [data-status="failed"]').waitFor();
  await shot(page, "delivery-failed");
  await page.click("#redeliver");
  await page.locator('#delivery-status [data-status="succeeded"]').waitFor({ timeout: 30000 });
  await page.locator(`tr[data-delivery="${failed.id}"][data-status="succeeded"]`).waitFor();
  await shot(page, "delivery-redelivered");
  const after = await call(base, "GET", `/deliveries/${failed.id}`, ADMIN);
  assert.equal(after.status, "succeeded");
  assert.equal(after.attempt_log.length, 2);
  const hits = receiver.received.filter((r) => r.path === "/hooks/payments");
  assert.equal(hits.length, 2, "the receiver saw the failed attempt and the redelivery");
  assert.equal(hits[1].headers["x-event-id"], payment.id, "the same event was redelivered");

  // Filters: status=succeeded lists the redelivered one; the event-type filter narrows.
  await page.selectOption('#delivery-filters select[name="status"]', "succeeded");
  await page.fill('#delivery-filters input[name="event_type"]', "payment.succeeded");
  await page.click('#delivery-filters button[type="submit"]');
  await page.locator(`tr[data-delivery="${failed.id}"]`).waitFor();
  await eventually("the filtered list", async () => (await page.locator("tr[data-delivery]").count()) === 1, 10);

  // Webhooks: health, then disable one and see the server agree.
  await page.click('#tabs a[data-view="webhooks"]');
  const ordersRow = page.locator(`tr[data-webhook="${orders.id}"]`);
  await ordersRow.locator(".rate", { hasText: "100%" }).waitFor();
  await page.locator(`tr[data-webhook="${payments.id}"] .rate`, { hasText: "50%" }).waitFor();
  await shot(page, "webhooks");
  await ordersRow.locator('button[data-action="disable"]').click();
  await page.locator(`tr[data-webhook="${orders.id}"] [data-status="disabled"]`).waitFor();
  assert.equal((await call(base, "GET", `/webhooks/${orders.id}`, ADMIN)).disabled, true);
  await page.locator(`tr[data-webhook="${orders.id}"] button[data-action="enable"]`).click();
  await page.locator(`tr[data-webhook="${orders.id}"] [data-status="enabled"]`).waitFor();
  assert.equal((await call(base, "GET", `/webhooks/${orders.id}`, ADMIN)).disabled, false);

  // Operations: progress of the running one; cancel a queued one.
  await page.click('#tabs a[data-view="operations"]');
  const runningId = running.name.replace("operations/", "");
  await page.locator(`tr[data-operation="${runningId}"]`, { hasText: "42%" }).waitFor();
  await shot(page, "operations");
  const target = videos.map((v) => v.name.replace("operations/", "")).find((id) => id !== runningId);
  await page.locator(`tr[data-operation="${target}"] button[data-action="cancel"]`).click();
  await page.locator(`tr[data-operation="${target}"] [data-status="cancelled"]`).waitFor();
  const cancelled = await call(base, "GET", `/operations/${target}`, ADMIN);
  assert.equal(cancelled.done, true);
  assert.equal(cancelled.error.code, "CANCELLED");

  // Events by key.
  await page.click('#tabs a[data-view="events"]');
  await page.locator("tr[data-event]").first().waitFor();
  await page.fill('input[name="key"]', "pay_42");
  await page.click('form.filters button[type="submit"]');
  await eventually("the key search", async () => (await page.locator("tr[data-event]").count()) === 1, 10);
  assert.equal(await page.locator("tr[data-event]").first().getAttribute("data-event"), payment.id);
  await shot(page, "events");

  // A tenant key sees only its own tenant: globex has no deliveries.
  await page.click("#logout");
  await page.fill("#api-key", globexKey);
  await page.click("#login-button");
  await page.locator("#scope", { hasText: globex.id }).waitFor();
  await page.click('#tabs a[data-view="deliveries"]');
  await page.locator("td.empty", { hasText: "No deliveries match" }).waitFor();
  assert.equal(await page.locator("tr[data-delivery]").count(), 0);

  assert.deepEqual(errors, [], "no script errors in the page");
});
