// Faults a real Herald cannot produce on demand, through an injected fetch (a body whose read
// fails midway), and the worker's behaviour when a heartbeat or a handler's result goes wrong.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { Herald, TransportError, WebhookVerifier, verifyWebhook, Worker, type Job } from "@herald/client";
import { newTenant, startHerald, type Server } from "./helpers.js";

let server: Server;
const workers: Worker[] = [];
const unhandled: unknown[] = [];
const onUnhandled = (e: unknown): void => void unhandled.push(e);
before(async () => {
  server = await startHerald();
  process.on("unhandledRejection", onUnhandled);
});
after(async () => {
  for (const w of workers) w.stop();
  process.off("unhandledRejection", onUnhandled);
  await server.stop();
});

/** A 200 whose body read fails as a connection reset does. */
function brokenBody(): Response {
  const stream = new ReadableStream<Uint8Array>({
    start(c) {
      c.enqueue(new TextEncoder().encode('{"lease_expires_at":'));
      c.error(new TypeError("terminated"));
    },
  });
  return new Response(stream, { status: 200, headers: { "content-type": "application/json" } });
}

test("a body read that fails is a TransportError", async () => {
  const client = new Herald("http://127.0.0.1:9", "k", { fetch: async () => brokenBody() });
  await assert.rejects(client.getTenant("ten_1"), TransportError);
});

test("a heartbeat whose body read fails neither kills the process nor the job", async () => {
  const tenant = await newTenant(server);
  let beats = 0;
  const fetchy: typeof fetch = async (input, init) => {
    if (String(input).endsWith(":heartbeat") && ++beats === 1) {
      await globalThis.fetch(input, init); // Herald renews; the answer is lost on the way
      return brokenBody();
    }
    return globalThis.fetch(input, init);
  };
  const workerClient = new Herald(tenant.worker.baseUrl, tenant.workerKey, { fetch: fetchy });
  const attempts: number[] = [];
  const warnings: string[] = [];
  const worker = new Worker(
    workerClient,
    async (job: Job) => {
      attempts.push(job.attempt);
      await new Promise((r) => setTimeout(r, 3000)); // past the 2s lease: later beats must keep it
      return { ok: true };
    },
    { types: ["transcode"], claimWaitMs: 1000, heartbeatEveryMs: 300, onWarning: (m) => void warnings.push(m) },
  );
  workers.push(worker);
  const running = worker.run();
  const op = await tenant.client.trigger("/videos", { n: 1 });
  const done = await tenant.client.wait(op.name, { timeoutMs: 30_000 });
  assert.deepEqual(done.response, { ok: true });
  assert.deepEqual(attempts, [1]);
  assert.ok(beats > 2, `only ${beats} heartbeats`);
  assert.ok(warnings.some((w) => w.startsWith("heartbeat of")));
  worker.stop();
  await running;
  assert.deepEqual(unhandled, []);
});

class ThrowingHeartbeat extends Herald {
  beats = 0;
  override heartbeat(...args: Parameters<Herald["heartbeat"]>): ReturnType<Herald["heartbeat"]> {
    if (++this.beats === 1) return Promise.reject(new RangeError("a bug below the SDK"));
    return super.heartbeat(...args);
  }
}

test("a heartbeat that throws something other than a HeraldError is retried, and run() resolves", async () => {
  const tenant = await newTenant(server);
  const client = new ThrowingHeartbeat(tenant.worker.baseUrl, tenant.workerKey);
  const attempts: number[] = [];
  const worker = new Worker(
    client,
    async (job: Job) => {
      attempts.push(job.attempt);
      await new Promise((r) => setTimeout(r, 3000));
      return { ok: true };
    },
    { types: ["transcode"], claimWaitMs: 1000, heartbeatEveryMs: 300, onWarning: () => undefined },
  );
  workers.push(worker);
  const running = worker.run();
  const op = await tenant.client.trigger("/videos", { n: 1 });
  const done = await tenant.client.wait(op.name, { timeoutMs: 30_000 });
  assert.deepEqual(done.response, { ok: true });
  assert.deepEqual(attempts, [1]);
  worker.stop();
  await running;
  assert.deepEqual(unhandled, []);
});

test("a result that is not JSON fails the operation for good with RESPONSE_NOT_JSON", async () => {
  const tenant = await newTenant(server);
  const attempts: number[] = [];
  const worker = new Worker(
    tenant.worker,
    (job: Job) => {
      attempts.push(job.attempt);
      return { big: 1n };
    },
    { types: ["transcode"], claimWaitMs: 1000, heartbeatEveryMs: 300, onWarning: () => undefined },
  );
  workers.push(worker);
  const running = worker.run();
  const op = await tenant.client.trigger("/videos", { n: 1 });
  const done = await tenant.client.wait(op.name, { timeoutMs: 30_000 });
  assert.equal(done.error?.code, "RESPONSE_NOT_JSON");
  await new Promise((r) => setTimeout(r, 1500)); // retry_after is 1s: a retryable failure would run again
  assert.deepEqual(attempts, [1]);
  worker.stop();
  await running;
});

test("setMetadata refuses a value that is not JSON", async () => {
  const tenant = await newTenant(server);
  let thrown: unknown;
  const worker = new Worker(
    tenant.worker,
    (job: Job) => {
      try {
        job.setMetadata("n", 1n);
      } catch (e) {
        thrown = e;
      }
      return { ok: true };
    },
    { types: ["transcode"], claimWaitMs: 1000, heartbeatEveryMs: 300, onWarning: () => undefined },
  );
  workers.push(worker);
  const running = worker.run();
  const op = await tenant.client.trigger("/videos", { n: 1 });
  const done = await tenant.client.wait(op.name, { timeoutMs: 30_000 });
  assert.deepEqual(done.response, { ok: true });
  assert.ok(thrown instanceof TypeError);
  worker.stop();
  await running;
});

test("a tolerance that is not a finite, non-negative number is refused", () => {
  for (const toleranceSeconds of [NaN, Infinity, -1]) {
    assert.throws(() => new WebhookVerifier("whsec_x", { toleranceSeconds }), TypeError);
    assert.throws(() => verifyWebhook("whsec_x", {}, "", { toleranceSeconds }), TypeError);
  }
});

test("a malformed ed25519 public key or a private key is refused", () => {
  // A well-formed whpk_ key verifies v1a signatures and never keys an HMAC (ed25519.test.ts).
  for (const key of ["whpk_AAAA", "whsk_AAAA"]) {
    assert.throws(() => new WebhookVerifier(key), TypeError);
    assert.throws(() => new WebhookVerifier(["whsec_x", key]), TypeError);
  }
});

test("ids that URL resolution would collapse are refused before sending", async () => {
  let sent = 0;
  const client = new Herald("http://127.0.0.1:9", "k", {
    fetch: async () => {
      sent++;
      return new Response("{}", { status: 200 });
    },
  });
  for (const bad of [".", "..", ""]) await assert.rejects(async () => client.createTenantKey(bad), TypeError);
  assert.equal(sent, 0);
});

test("wait() rides out a gateway error and a dropped connection", async () => {
  const answers = ["502", "drop", "504", "done"];
  const client = new Herald("http://127.0.0.1:9", "k", {
    fetch: async () => {
      const what = answers.shift();
      if (what === "drop") throw new TypeError("fetch failed");
      if (what === "done") return new Response(JSON.stringify({ name: "operations/op_1", done: true, response: 7 }), { status: 200 });
      return new Response("", { status: Number(what) }); // a proxy's answer: no problem body, no code
    },
  });
  const op = await client.wait("op_1", { timeoutMs: 10_000, initialBackoffMs: 50 });
  assert.equal(op.response, 7);
});

test("listEventTypes follows next_page_token", async () => {
  const client = new Herald("http://127.0.0.1:9", "k", {
    fetch: async (input) => {
      const page = String(input).includes("page_token=p2")
        ? { event_types: [{ name: "b" }], next_page_token: "" }
        : { event_types: [{ name: "a" }], next_page_token: "p2" };
      return new Response(JSON.stringify(page), { status: 200 });
    },
  });
  assert.deepEqual((await client.listEventTypes()).map((t) => t.name), ["a", "b"]);
});

test("a redirect is not followed and the key is not forwarded", async () => {
  const { createServer } = await import("node:http");
  const seen: string[] = [];
  const target = createServer((req, res) => {
    seen.push(String(req.headers.authorization));
    res.writeHead(200, { "content-type": "application/json" }).end("{}");
  });
  await new Promise<void>((ok) => target.listen(0, "127.0.0.1", ok));
  const where = `http://127.0.0.1:${(target.address() as { port: number }).port}/elsewhere`;
  const redirect = createServer((_req, res) => void res.writeHead(302, { location: where }).end());
  await new Promise<void>((ok) => redirect.listen(0, "127.0.0.1", ok));
  try {
    const client = new Herald(`http://127.0.0.1:${(redirect.address() as { port: number }).port}`, "secret-key", { timeoutMs: 5000 });
    await assert.rejects(client.createTenant("x"), (e: unknown) => e instanceof TransportError && e.message.includes("elsewhere"));
    await assert.rejects(client.getTenant("ten_1"), (e: unknown) => e instanceof TransportError && e.message.includes("elsewhere"));
    assert.deepEqual(seen, []);
  } finally {
    redirect.closeAllConnections();
    target.closeAllConnections();
    await new Promise((ok) => redirect.close(ok));
    await new Promise((ok) => target.close(ok));
  }
});
