// The tenant portal in a real browser: Debian's Chromium driven by playwright-core, against
// a Herald binary on port 0 and a receiver that fails the first payment it gets. A tenant's
// user opens a magic link, adds an endpoint with a payload filter, sends a test event and
// sees it delivered (and the receiver verifies its signature with the secret the page
// showed once), then sees a failed delivery and replays it; a filtered-out event never
// arrives. Screenshots of the main views (desktop and phone width). Then the portal framed
// by a page of another site (http://localhost vs http://127.0.0.1) the tenant lists: the
// tenant opens it and adds an endpoint inside the frame; an unlisted origin's frame is
// refused (CSP frame-ancestors).
//
// Run by crates/herald/tests/browser.rs (HERALD_TEST_BROWSER=1). Needs HERALD_BIN (the
// herald binary) and playwright-core under HERALD_TOOLS_DIR.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import crypto from "node:crypto";
import http from "node:http";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const TOOLS_DIR = process.env.HERALD_TOOLS_DIR || "/var/cache/herald-tools";
const HERALD_BIN = process.env.HERALD_BIN;
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SHOTS = process.env.HERALD_SCREENSHOTS_DIR || "";
const ADMIN = "portal-browser-test-admin-key";

const { chromium } = createRequire(path.join(TOOLS_DIR, "package.json"))("playwright-core");

function startHerald(dir) {
  const config = path.join(dir, "herald.toml");
  fs.writeFileSync(config, `
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

/** Records every request; the first `payment.succeeded` is answered 500, the rest 200. */
function startReceiver() {
  const received = [];
  let failedOnce = false;
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString();
      received.push({ path: req.url, headers: req.headers, body });
      const type = JSON.parse(body).type;
      if (type === "payment.succeeded" && !failedOnce) {
        failedOnce = true;
        res.writeHead(500, { "content-type": "application/json" });
        res.end('{"error":"ledger unavailable"}');
      } else {
        res.writeHead(200, { "content-type": "text/plain" });
        res.end("ok");
      }
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
  if (!resp.ok) throw new Error(`${method} ${p}: ${resp.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

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

/** Herald's signature, computed here independently: HMAC-SHA256(secret, ts + "." + body). */
function verified(request, secret) {
  const expected = "sha256=" + crypto.createHmac("sha256", secret).update(request.headers["x-timestamp"] + "." + request.body).digest("hex");
  return request.headers["x-signature"].split(" ").includes(expected);
}

test("a tenant opens a magic link, adds a filtered endpoint, tests it and replays a failure", async (t) => {
  assert.ok(HERALD_BIN, "HERALD_BIN must name the herald binary");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "herald-portal-"));
  const receiver = await startReceiver();
  const { child, base } = await startHerald(dir);
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  t.after(async () => {
    await browser.close();
    child.kill("SIGTERM");
    receiver.server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  // --- the API owner's backend: a tenant, its catalog, its branding, a link
  const acme = await call(base, "POST", "/tenants", ADMIN, { name: "acme" });
  await call(base, "PUT", "/event-types/payment.succeeded", ADMIN, {
    schema: { type: "object", required: ["amount", "currency"], properties: { amount: { type: "integer" }, currency: { type: "string" } },
      examples: [{ payment_id: "pay_42", amount: 4599, currency: "USD" }] },
  });
  await call(base, "PUT", "/event-types/invoice.paid", ADMIN, { schema: { type: "object" } });
  await call(base, "PUT", `/tenants/${acme.id}/portal`, ADMIN, { branding: { name: "Acme Payments", accent: "#0b6e4f", theme: "light" } });
  const minted = await call(base, "POST", `/tenants/${acme.id}/portal-sessions`, ADMIN, { expires_in: "30m" });

  const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));

  // --- the magic link: its page spends nothing (as a link scanner would fetch it); its
  // button exchanges the token for the cookie, then the portal without the token
  const scanned = await fetch(minted.url, { redirect: "manual" });
  assert.equal(scanned.status, 200);
  assert.equal(scanned.headers.get("set-cookie"), null);
  await page.goto(minted.url);
  await page.getByRole("button", { name: "Open the portal" }).click();
  await page.waitForURL((u) => u.pathname === "/portal");
  assert.equal(new URL(page.url()).pathname, "/portal");
  assert.ok(!page.url().includes("token"), page.url());
  await page.getByRole("heading", { name: "Acme Payments webhooks" }).waitFor();
  const cookies = await context.cookies();
  const cookie = cookies.find((c) => c.name === "herald_portal");
  assert.ok(cookie && cookie.httpOnly && cookie.sameSite === "Strict", JSON.stringify(cookies));
  assert.equal(await page.evaluate(() => document.cookie), "", "the cookie is HttpOnly");
  // The link was good once: its page says so, and a POST of its token opens nothing.
  const again = await fetch(minted.url, { redirect: "manual" });
  assert.equal(again.status, 401);
  const token = new URL(minted.url).searchParams.get("token");
  const replayed = await fetch(new URL("/portal/open", base), {
    method: "POST", redirect: "manual", body: new URLSearchParams({ token }), headers: { origin: base },
  });
  assert.equal(replayed.status, 401);

  // --- add an endpoint with a filter
  await page.getByRole("button", { name: "Add endpoint" }).click();
  await page.getByLabel("Endpoint URL").fill(receiver.base + "/hooks/acme");
  await page.getByLabel("Description").fill("ledger");
  await page.getByLabel("payment.succeeded").check();
  const paymentType = page.locator(".type", { hasText: "payment.succeeded" });
  await paymentType.getByText("Schema and example").click();
  await paymentType.locator("pre").last().getByText('"pay_42"').waitFor();
  await page.getByText("Advanced").click();
  await page.getByLabel("Payload filter (JSON)").fill('{"/data/currency": {"$in": ["USD"]}}');
  await page.getByLabel(/Custom headers/).fill("X-Team: ledger");
  await shot(page, "portal-add-endpoint");
  await page.getByRole("button", { name: "Save" }).click();
  await page.locator("#secret-value").waitFor();
  const secret = await page.locator("#secret-value").textContent();
  assert.match(secret, /^hsec_/);
  await page.getByText('filter {"/data/currency":{"$in":["USD"]}}', { exact: false }).waitFor();

  // --- a test event: delivered, and it verifies with the secret shown
  await page.getByRole("button", { name: "Send test event" }).click();
  await page.locator('#deliveries tr[data-status="succeeded"]', { hasText: "webhook.test" }).waitFor();
  const test = receiver.received.find((r) => JSON.parse(r.body).type === "webhook.test");
  assert.ok(test, "the receiver got the test event");
  assert.ok(verified(test, secret), "its signature verifies with the secret the page showed");
  assert.equal(test.headers["x-team"], "ledger");
  assert.deepEqual(JSON.parse(test.body).data.example, { payment_id: "pay_42", amount: 4599, currency: "USD" });

  // --- real events: a euro one is filtered out; the dollar one fails (500, schedule used up)
  await call(base, "POST", "/events", ADMIN, { type: "payment.succeeded", tenant: acme.id, data: { amount: 100, currency: "EUR" } });
  const usd = await call(base, "POST", "/events", ADMIN, { type: "payment.succeeded", tenant: acme.id, data: { amount: 4599, currency: "USD" } });
  await eventually("the failed attempt", () => receiver.received.some((r) => JSON.parse(r.body).id === usd.id));
  await page.reload();
  await page.locator("#deliveries tr", { hasText: usd.id }).locator('[class="badge failed"]').waitFor();
  await page.locator("#deliveries tr", { hasText: usd.id }).getByRole("button", { name: "Attempts" }).click();
  await page.getByText("ledger unavailable").waitFor();
  await shot(page, "portal-endpoint-failed");

  // --- replay the failed ones: it succeeds
  await page.getByLabel("status").selectOption("failed");
  await page.getByRole("button", { name: "Replay" }).click();
  await page.getByText("Replayed 1 deliveries").waitFor();
  await page.locator("#deliveries tr", { hasText: usd.id }).locator('[class="badge succeeded"]').waitFor();
  const arrived = receiver.received.filter((r) => JSON.parse(r.body).id === usd.id);
  assert.equal(arrived.length, 2, "sent, failed, replayed");
  assert.ok(verified(arrived[1], secret));
  assert.ok(!receiver.received.some((r) => JSON.parse(r.body).data.currency === "EUR"), "the filter kept the euro payment out");
  await shot(page, "portal-endpoint");

  // --- the list, and a phone's width
  await page.getByRole("button", { name: "← All endpoints" }).first().click();
  await page.getByRole("link", { name: receiver.base + "/hooks/acme" }).waitFor();
  await shot(page, "portal-list");
  await page.setViewportSize({ width: 390, height: 844 });
  await page.getByRole("link", { name: receiver.base + "/hooks/acme" }).click();
  await page.getByRole("button", { name: "Send test event" }).waitFor();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.ok(overflow <= 0, `no sideways scrolling at phone width (${overflow}px)`);
  await shot(page, "portal-phone");

  // --- an ed25519 endpoint: its public key is shown, no secret is
  await page.setViewportSize({ width: 1100, height: 900 });
  await page.getByRole("button", { name: "← All endpoints" }).first().click();
  await page.getByRole("button", { name: "Add endpoint" }).click();
  await page.getByLabel("Endpoint URL").fill(receiver.base + "/hooks/signed");
  await page.locator("#catalog input").first().check();
  await page.locator("summary", { hasText: "Advanced" }).click();
  await page.getByLabel("Signature format").selectOption("standard-webhooks-ed25519");
  await page.getByRole("button", { name: "Save" }).click();
  await page.locator("#public-key-value").waitFor();
  assert.match(await page.locator("#public-key-value").textContent(), /^whpk_/);
  assert.ok(await page.locator("#secret").isHidden(), "no signing secret for an ed25519 endpoint");
  assert.deepEqual(errors, [], "no script errors");
});

/** Serves one page that frames `src`, on `host` (so another site than Herald's 127.0.0.1). */
function startFramer(host, src) {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end(`<!doctype html><title>Acme dashboard</title><h1>Acme dashboard</h1>
<iframe id="portal" title="Webhooks portal" src="${src}" style="width:1100px;height:800px"></iframe>`);
  });
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => resolve({ server, origin: `http://${host}:${server.address().port}` }));
  });
}

test("the portal works framed by a listed origin of another site, and not by others", async (t) => {
  assert.ok(HERALD_BIN, "HERALD_BIN must name the herald binary");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "herald-portal-frame-"));
  const { child, base } = await startHerald(dir);
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const framers = [];
  t.after(async () => {
    await browser.close();
    child.kill("SIGTERM");
    for (const f of framers) f.server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const acme = await call(base, "POST", "/tenants", ADMIN, { name: "acme" });
  await call(base, "PUT", "/event-types/payment.succeeded", ADMIN, { schema: { type: "object" } });
  const mint = () => call(base, "POST", `/tenants/${acme.id}/portal-sessions`, ADMIN, { expires_in: "30m" });

  // The API owner's dashboard, on localhost (another site than 127.0.0.1), listed.
  const listedUrl = (await mint()).url;
  const listed = await startFramer("localhost", listedUrl);
  framers.push(listed);
  await call(base, "PUT", `/tenants/${acme.id}/portal`, ADMIN, { frame_origins: [listed.origin], branding: { name: "Acme Payments" } });
  const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(listed.origin + "/");
  const frame = page.frameLocator("#portal");
  await frame.getByRole("button", { name: "Open the portal" }).click();
  await frame.getByRole("heading", { name: "Acme Payments webhooks" }).waitFor();
  // The session cookie is partitioned to the framing site, and sent inside the frame.
  const all = await context.cookies();
  const cookie = all.find((c) => c.name === "herald_portal");
  assert.ok(cookie && cookie.httpOnly && cookie.secure && cookie.sameSite === "None", JSON.stringify(all));
  await frame.getByRole("button", { name: "Add endpoint" }).click();
  await frame.getByLabel("Endpoint URL").fill("http://127.0.0.1:9/hooks/framed");
  await frame.getByLabel("payment.succeeded").check();
  await frame.getByRole("button", { name: "Save" }).click();
  await frame.locator("#secret-value").waitFor();
  const hooks = await call(base, "GET", `/webhooks?tenant=${acme.id}`, ADMIN);
  assert.deepEqual(hooks.webhooks.map((w) => w.url), ["http://127.0.0.1:9/hooks/framed"], "made inside the frame");
  await shot(page, "portal-framed");

  // An origin the tenant does not list: the link's page is refused in its frame.
  const other = await startFramer("localhost", (await mint()).url);
  framers.push(other);
  const refused = [];
  const page2 = await context.newPage();
  page2.on("console", (m) => refused.push(m.text()));
  await page2.goto(other.origin + "/");
  await eventually("the frame refused", () => refused.some((m) => m.includes("frame-ancestors")), 10);
  const child2 = page2.frames().find((f) => f !== page2.mainFrame());
  assert.equal(await child2.getByRole("button", { name: "Open the portal" }).count(), 0);
  assert.deepEqual(errors, [], "no script errors");
});
