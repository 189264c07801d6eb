// The admin and producer side: tenants, keys, events, event types, typed errors.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import {
  AuthenticationError,
  Herald,
  IdempotencyKeyReusedError,
  InvalidRequestError,
  NotFoundError,
  PermissionDeniedError,
  type Event,
} from "@herald/client";
import { newTenant, startHerald, type Server } from "./helpers.js";

let server: Server;
before(async () => {
  server = await startHerald();
});
after(() => server.stop());

test("tenants and keys", async () => {
  const admin = server.admin();
  const t = await admin.createTenant("acme");
  assert.ok(t.id.startsWith("tnt_"));
  assert.equal((await admin.getTenant(t.id)).name, "acme");
  const key = await admin.createTenantKey(t.id);
  assert.ok(key.key.startsWith("hrk_"));
  assert.equal(key.role, "tenant");
  const own = new Herald(server.url, key.key);
  assert.equal((await own.getTenant(t.id)).id, t.id);

  const worker = await admin.createKey("worker", { types: ["transcode"], tenants: [t.id] });
  assert.deepEqual([worker.role, worker.types, worker.tenants], ["worker", ["transcode"], [t.id]]);

  // Another tenant's id answers 404, never 403, as problem details.
  const other = await admin.createTenant("other");
  await assert.rejects(own.getTenant(other.id), (e: unknown) => {
    assert.ok(e instanceof NotFoundError);
    assert.equal(e.status, 404);
    assert.equal(e.code, "NOT_FOUND");
    assert.equal(e.problem.status, 404);
    assert.ok(e.title.length > 0);
    return true;
  });
  await assert.rejects(own.createTenantKey(t.id), PermissionDeniedError);
  await admin.revokeKey(key.id);
  await assert.rejects(own.getTenant(t.id), (e: unknown) => e instanceof AuthenticationError && e.code === "UNAUTHENTICATED");
});

test("publish is idempotent and numbered per key", async () => {
  const admin = server.admin();
  const tenant = await newTenant(server);
  const order = "order-" + randomUUID().slice(0, 6);
  const first = await admin.publish({ type: "order.paid", data: { n: 1 }, tenant: tenant.id, key: order }, { idempotencyKey: "pub-" + order });
  const again = await admin.publish({ type: "order.paid", data: { n: 1 }, tenant: tenant.id, key: order }, { idempotencyKey: "pub-" + order });
  assert.deepEqual(again, first);
  assert.equal(first.sequence, 1);
  assert.equal((await admin.publish({ type: "order.paid", data: { n: 2 }, tenant: tenant.id, key: order })).sequence, 2);
  await assert.rejects(
    admin.publish({ type: "order.paid", data: { n: 3 }, tenant: tenant.id, key: order }, { idempotencyKey: "pub-" + order }),
    (e: unknown) => e instanceof IdempotencyKeyReusedError && e.code === "IDEMPOTENCY_KEY_REUSED" && e.status === 422,
  );
  const evt = "evt_01" + randomUUID().replaceAll("-", "").slice(0, 24).toUpperCase();
  const a = await admin.publish({ id: evt, type: "order.shipped", data: {}, tenant: tenant.id });
  assert.deepEqual(await admin.publish({ id: evt, type: "order.shipped", data: {}, tenant: tenant.id }), a);

  const page = await tenant.client.listEvents({ key: order, page_size: 1 });
  assert.equal(page.items.length, 1);
  assert.ok(page.nextPageToken);
  const history: Event[] = [];
  for await (const e of tenant.client.iterEvents({ key: order, page_size: 1 })) history.push(e);
  assert.deepEqual(history.map((e) => [e.sequence, (e.data as { n: number }).n]), [[1, 1], [2, 2]]);
  assert.equal((await tenant.client.getEvent(first.id)).type, "order.paid");
});

test("event types validate data", async () => {
  const admin = server.admin();
  const tenant = await newTenant(server);
  const name = "payment.succeeded." + randomUUID().slice(0, 6);
  assert.equal((await admin.putEventType(name, { type: "object", required: ["payment_id"] })).name, name);
  assert.ok((await admin.listEventTypes()).some((t) => t.name === name));
  await assert.rejects(admin.publish({ type: name, data: { amount: 5 }, tenant: tenant.id }), (e: unknown) => e instanceof InvalidRequestError && e.code === "SCHEMA_VIOLATION");
  assert.ok((await admin.publish({ type: name, data: { payment_id: "p1" }, tenant: tenant.id })).id.startsWith("evt_"));
});

test("bad input is a typed error carrying the problem", async () => {
  const admin = server.admin();
  await assert.rejects(admin.createWebhook({ url: "not a url", events: ["*"] }), (e: unknown) => {
    assert.ok(e instanceof InvalidRequestError);
    assert.equal(e.code, "INVALID_REQUEST");
    assert.equal(e.problem.code, "INVALID_REQUEST");
    assert.ok(e.detail.length > 0);
    return true;
  });
  await assert.rejects(new Herald(server.url, "hrk_wrong").listEventTypes(), AuthenticationError);
});
