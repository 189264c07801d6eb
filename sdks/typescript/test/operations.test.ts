// The operation side: trigger, get with Retry-After, wait (polling and :wait), cancel,
// idempotency, and the worker calls with their typed errors.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { LeaseStaleError, NotFoundError, OperationDoneError, WaitTimeoutError, operationId } from "@herald/client";
import { newTenant, startHerald, type Server } from "./helpers.js";

let server: Server;
before(async () => {
  server = await startHerald();
});
after(() => server.stop());

test("trigger is idempotent and get gives Retry-After", async () => {
  const tenant = await newTenant(server);
  const key = "upload-" + randomUUID();
  const op = await tenant.client.trigger("/videos", { source_url: "s3://a.mp4" }, { idempotencyKey: key });
  assert.equal(op.done, false);
  assert.equal(op.metadata.type, "transcode");
  assert.equal((await tenant.client.trigger("/videos", { source_url: "s3://a.mp4" }, { idempotencyKey: key })).name, op.name);
  const got = await tenant.client.getOperationWithHint(op.name);
  assert.equal(got.operation.name, op.name);
  assert.equal(got.retryAfter, 1); // the type's retry_after = "1s"
  const listed = await tenant.client.listOperations({ type: "transcode", done: false });
  assert.ok(listed.items.some((o) => o.name === op.name));
});

test("wait polls until a worker completes; stale and done leases are typed errors", async () => {
  const tenant = await newTenant(server);
  const op = await tenant.client.trigger("/videos", { source_url: "s3://b.mp4" });
  const claimed = await tenant.worker.claim({ types: ["transcode"], waitMs: 10_000 });
  assert.deepEqual(claimed.map((c) => operationId(c)), [operationId(op)]);
  const c = claimed[0]!;
  assert.equal(c.attempt, 1);
  assert.deepEqual(c.input, { source_url: "s3://b.mp4" });
  const beat = await tenant.worker.heartbeat(c.name, c.lease_token, { metadata: { progress_percent: 40 } });
  assert.equal(beat.cancel_requested, false);
  assert.equal((await tenant.client.getOperation(op.name)).metadata.progress_percent, 40);
  await assert.rejects(tenant.worker.complete(c.name, "lt_01" + "0".repeat(24), {}), (e: unknown) => e instanceof LeaseStaleError && e.status === 409);

  const waiting = tenant.client.wait(op.name, { timeoutMs: 60_000 });
  await tenant.worker.complete(c.name, c.lease_token, { duration_seconds: 832 });
  const done = await waiting;
  assert.equal(done.done, true);
  assert.deepEqual(done.response, { duration_seconds: 832 });
  await assert.rejects(tenant.worker.complete(c.name, c.lease_token, { again: true }), OperationDoneError);
});

test(":wait long poll, wait timeout, cancel before start", async () => {
  const tenant = await newTenant(server);
  const op = await tenant.client.trigger("/videos", { source_url: "s3://c.mp4" });
  assert.equal((await tenant.client.waitLongPoll(op.name, 1000)).done, false);
  await assert.rejects(tenant.client.wait(op.name, { timeoutMs: 1500 }), (e: unknown) => {
    assert.ok(e instanceof WaitTimeoutError);
    assert.equal(e.operation?.name, op.name);
    return true;
  });
  const longPoll = tenant.client.waitLongPoll(op.name, 30_000);
  const cancelled = await tenant.client.cancel(op.name);
  assert.equal(cancelled.done, true);
  assert.equal(cancelled.error?.code, "CANCELLED");
  assert.equal((await longPoll).done, true);
});

test("fail: retryable requeues, final fail ends; delete hides", async () => {
  const tenant = await newTenant(server);
  const op = await server.admin().createOperation({ type: "transcode", tenant: tenant.id, input: { n: 1 }, metadata: { video_id: "v1" } });
  const c = (await tenant.worker.claim({ types: ["transcode"], waitMs: 10_000 }))[0]!;
  const again = await tenant.worker.fail(c.name, c.lease_token, { code: "FLAKY", message: "try again" }, { retryable: true });
  assert.equal(again.done, false);
  const c2 = (await tenant.worker.claim({ types: ["transcode"], waitMs: 10_000 }))[0]!;
  assert.equal(c2.name, op.name);
  assert.equal(c2.attempt, 2);
  const final = await tenant.worker.fail(c2.name, c2.lease_token, { code: "SOURCE_UNREACHABLE", message: "404" });
  assert.deepEqual([final.done, final.error], [true, { code: "SOURCE_UNREACHABLE", message: "404" }]);
  await tenant.client.deleteOperation(op.name);
  await assert.rejects(tenant.client.getOperation(op.name), NotFoundError);
});
