// Webhooks end to end: CRUD, real deliveries verified in every format (ed25519 too), tampered and stale ones
// refused, both secrets during a rotation's grace, redelivery and replay deduped, the Express example.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import type { AddressInfo } from "node:net";
import { randomUUID } from "node:crypto";
import {
  BadSignatureError,
  DeliveryInFlightError,
  DeliverySucceededError,
  MemoryDedupe,
  MissingHeaderError,
  NotFoundError,
  OutsideToleranceError,
  WebhookVerifier,
  heraldSignature,
  standardSignature,
  verifyWebhook,
  type Delivery,
} from "@herald/client";
import { createApp } from "../examples/express-receiver.js";
import { Receiver, eventually, newTenant, startHerald, type Server } from "./helpers.js";

let server: Server;
let receiver: Receiver;
before(async () => {
  server = await startHerald();
});
after(() => server.stop());

async function withReceiver<T>(body: (r: Receiver) => Promise<T>): Promise<T> {
  receiver = await Receiver.start();
  try {
    return await body(receiver);
  } finally {
    await receiver.close();
  }
}

test("signature vectors", () => {
  // herald-core's independent vector and the Standard Webhooks specification's example.
  assert.equal(
    heraldSignature("hsec_test", "2026-04-10T15:20:00Z", '{"id":"evt_1"}'),
    "sha256=d58f2414b42865f14d6c748e6a5978b570470c07997a86f563f3ba139db30aaa",
  );
  const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
  const body = '{"test": 2432232314}';
  assert.equal(standardSignature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body), "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
  const headers = {
    "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
    "webhook-timestamp": "1614265330",
    "webhook-signature": "v1,bm9ldHZhbGlk v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
  };
  assert.equal(verifyWebhook(secret, headers, body, { now: 1614265330 }).eventId, "msg_p5jXN8AQM9LWM0D4loKWxJek");
  assert.equal(verifyWebhook(secret, new Headers(headers), new TextEncoder().encode(body), { now: 1614265330 }).format, "standard-webhooks");
  assert.throws(() => verifyWebhook(secret, headers, '{"test": 1}', { now: 1614265330 }), BadSignatureError);
  assert.throws(() => verifyWebhook(secret, headers, body, { now: 1614265330 + 3600 }), OutsideToleranceError);
  assert.throws(() => verifyWebhook(secret, {}, body), MissingHeaderError);
});

test("webhook CRUD", () =>
  withReceiver(async (r) => {
    const tenant = await newTenant(server);
    const hook = await tenant.client.createWebhook({ url: r.url, events: ["order.*"], description: "orders" });
    assert.ok(hook.signing_secret?.startsWith("hsec_"));
    assert.equal(hook.format, "herald");
    const got = await tenant.client.getWebhook(hook.id);
    assert.equal(got.signing_secret, undefined);
    assert.equal(got.url, r.url);
    const ids: string[] = [];
    for await (const h of tenant.client.iterWebhooks()) ids.push(h.id);
    assert.ok(ids.includes(hook.id));
    assert.equal((await tenant.client.updateWebhook(hook.id, { description: "all orders" })).description, "all orders");
    assert.equal((await tenant.client.disableWebhook(hook.id)).disabled, true);
    assert.equal((await tenant.client.enableWebhook(hook.id)).disabled, false);
    await tenant.client.deleteWebhook(hook.id);
    await assert.rejects(tenant.client.getWebhook(hook.id), NotFoundError);
  }));

test("real deliveries verify; tampered and stale ones do not", () =>
  withReceiver(async (r) => {
    const tenant = await newTenant(server);
    const hook = await tenant.client.createWebhook({ url: r.url, events: ["order.*"] });
    const published = await server.admin().publish({ type: "order.paid", data: { order: 7 }, tenant: tenant.id });
    const got = await r.next();
    const verifier = new WebhookVerifier(hook.signing_secret!);
    const verified = verifier.verify(got.headers, got.body);
    assert.deepEqual([verified.format, verified.eventId], ["herald", published.id]);
    assert.throws(() => verifier.verify(got.headers, Buffer.from(got.body.toString().replace("7", "8"))), BadSignatureError);
    assert.throws(() => new WebhookVerifier("hsec_someone_else").verify(got.headers, got.body), BadSignatureError);
    assert.throws(() => verifier.verify(got.headers, got.body, { now: verified.timestamp + 301 }), OutsideToleranceError);
    assert.throws(() => verifier.verify(got.headers, got.body, { now: verified.timestamp - 301 }), OutsideToleranceError);
    assert.equal(verifier.verify(got.headers, got.body, { now: verified.timestamp + 300 }).eventId, published.id);
    const moved = { ...got.headers, "x-timestamp": "2030-01-01T00:00:00Z" };
    assert.throws(() => verifier.verify(moved, got.body, { now: 1893456000 }), BadSignatureError);
  }));

test("Standard Webhooks deliveries verify", () =>
  withReceiver(async (r) => {
    const tenant = await newTenant(server);
    const hook = await tenant.client.createWebhook({ url: r.url, events: ["order.*"], format: "standard-webhooks" });
    assert.ok(hook.signing_secret?.startsWith("whsec_"));
    const published = await server.admin().publish({ type: "order.paid", data: { order: 8 }, tenant: tenant.id });
    const got = await r.next();
    const verified = verifyWebhook(hook.signing_secret!, got.headers, got.body);
    assert.deepEqual([verified.format, verified.eventId], ["standard-webhooks", published.id]);
    assert.throws(() => verifyWebhook(hook.signing_secret!, got.headers, Buffer.concat([got.body, Buffer.from(" ")])), BadSignatureError);
    assert.throws(() => verifyWebhook(hook.signing_secret!, got.headers, got.body, { now: verified.timestamp + 301 }), OutsideToleranceError);
  }));

test("ed25519 deliveries verify with the public key", () =>
  withReceiver(async (r) => {
    const tenant = await newTenant(server);
    const hook = await tenant.client.createWebhook({ url: r.url, events: ["order.*"], format: "standard-webhooks-ed25519" });
    assert.equal(hook.signing_secret, undefined); // the private key never leaves Herald
    const publicKey = hook.public_key!;
    assert.ok(publicKey.startsWith("whpk_"), publicKey);
    const published = await server.admin().publish({ type: "order.paid", data: { order: 12 }, tenant: tenant.id });
    let got = await r.next();
    assert.ok(String(got.headers["webhook-signature"]).startsWith("v1a,"));
    const verifier = new WebhookVerifier(publicKey);
    const verified = verifier.verify(got.headers, got.body);
    assert.deepEqual([verified.format, verified.eventId], ["standard-webhooks-ed25519", published.id]);
    assert.throws(() => verifier.verify(got.headers, Buffer.from(got.body.toString().replace("12", "13"))), BadSignatureError);
    assert.throws(() => verifier.verify(got.headers, got.body, { now: verified.timestamp + 301 }), OutsideToleranceError);
    // Anyone shown the public key cannot sign a v1 request with it that passes.
    const forged = { ...got.headers, "webhook-signature": standardSignature(publicKey, verified.eventId, verified.timestamp, got.body) };
    assert.throws(() => verifier.verify(forged, got.body), BadSignatureError);

    // A rotation: both keys sign during the grace; either verifies.
    const rotated = await tenant.client.rotateWebhookSecret(hook.id, { grace: "1h" });
    const newKey = rotated.public_key!;
    assert.notEqual(newKey, publicKey);
    assert.equal(rotated.previous_public_key, publicKey);
    await server.admin().publish({ type: "order.paid", data: { order: 13 }, tenant: tenant.id });
    got = await r.next();
    assert.deepEqual(String(got.headers["webhook-signature"]).split(" ").map((v) => v.slice(0, 4)), ["v1a,", "v1a,"]);
    for (const keys of [[publicKey], [newKey], [newKey, publicKey]]) {
      assert.equal(new WebhookVerifier(keys).verify(got.headers, got.body).format, "standard-webhooks-ed25519");
    }
    const other = await tenant.client.createWebhook({ url: r.url + "/other", events: ["nothing.*"], format: "standard-webhooks-ed25519" });
    assert.ok(other.public_key && ![publicKey, newKey].includes(other.public_key));
    assert.throws(() => new WebhookVerifier(other.public_key!).verify(got.headers, got.body), BadSignatureError);
  }));

test("both secrets sign during a rotation's grace", () =>
  withReceiver(async (r) => {
    const tenant = await newTenant(server);
    const hook = await tenant.client.createWebhook({ url: r.url, events: ["order.*"] });
    const rotated = await tenant.client.rotateWebhookSecret(hook.id, { grace: "1h" });
    const [oldSecret, newSecret] = [hook.signing_secret!, rotated.signing_secret!];
    assert.notEqual(newSecret, oldSecret);
    assert.equal(rotated.signing_secret_version, hook.signing_secret_version + 1);
    await server.admin().publish({ type: "order.paid", data: { order: 9 }, tenant: tenant.id });
    const got = await r.next();
    assert.equal(String(got.headers["x-signature"]).split(" ").length, 2);
    for (const secrets of [[oldSecret], [newSecret], [newSecret, oldSecret]]) {
      assert.equal(new WebhookVerifier(secrets).verify(got.headers, got.body).format, "herald");
    }
    assert.throws(() => new WebhookVerifier(["hsec_neither"]).verify(got.headers, got.body), BadSignatureError);
  }));

test("deliveries: redeliver and replay are deduped", () =>
  withReceiver(async (r) => {
    const tenant = await newTenant(server);
    const hook = await tenant.client.createWebhook({ url: r.url, events: ["order.*"] });
    const verifier = new WebhookVerifier(hook.signing_secret!);
    const dedupe = new MemoryDedupe(100);
    const applied: string[] = [];
    const consume = async (): Promise<void> => {
      const got = await r.next();
      const { eventId } = verifier.verify(got.headers, got.body);
      if (dedupe.firstTime(eventId)) applied.push(eventId);
    };
    const published = await server.admin().publish({ type: "order.paid", data: { order: 10 }, tenant: tenant.id });
    await consume();
    const delivery = await eventually<Delivery>("the delivery to succeed", async () =>
      (await tenant.client.listDeliveries({ webhook: hook.id })).items.find((d) => d.status === "succeeded"),
    );
    assert.equal(delivery.event_id, published.id);
    assert.equal((await tenant.client.getDelivery(delivery.id)).attempt_log?.[0]?.status_code, 200);
    await tenant.client.redeliver(delivery.id);
    await consume();
    // The redelivery's success is recorded after the receiver answered: replay once it is.
    await eventually("the redelivery to be recorded", async () => {
      const d = await tenant.client.getDelivery(delivery.id);
      return d.attempts >= 2 && d.status === "succeeded";
    });
    const replay = await tenant.client.replayWebhook(hook.id, { status: "succeeded" });
    assert.deepEqual([replay.replayed, replay.done], [1, true]);
    await consume();
    assert.deepEqual(applied, [published.id], "the redelivery and the replay were applied again");
    assert.equal(dedupe.size, 1);
  }));

test("the Express example applies a real delivery once and refuses unsigned requests", async () => {
  const tenant = await newTenant(server);
  const applied: string[] = [];
  let secret = "";
  const app = createApp(() => [secret], new MemoryDedupe(), (e) => void applied.push(e.id));
  const http = app.listen(0, "127.0.0.1");
  await new Promise((ok) => http.once("listening", ok));
  try {
    const url = `http://127.0.0.1:${(http.address() as AddressInfo).port}/hooks/herald`;
    const hook = await tenant.client.createWebhook({ url, events: ["order.*"] });
    secret = hook.signing_secret!;
    const published = await server.admin().publish({ type: "order.paid", data: { order: 11 }, tenant: tenant.id });
    const delivery = await eventually<Delivery>("the example to answer 2xx", async () =>
      (await tenant.client.listDeliveries({ webhook: hook.id })).items.find((d) => d.status === "succeeded"),
    );
    await tenant.client.redeliver(delivery.id);
    await eventually("the redelivery to succeed", async () => {
      const d = await tenant.client.getDelivery(delivery.id);
      return d.attempts >= 2 && d.status === "succeeded";
    });
    assert.deepEqual(applied, [published.id]);
    const unsigned = await fetch(url, { method: "POST", body: "{}" });
    assert.equal(unsigned.status, 400);
  } finally {
    http.closeAllConnections();
    await new Promise((ok) => http.close(ok));
  }
});

test("an ordered webhook holds a key behind its failing head until it is skipped", () =>
  withReceiver(async (r) => {
    const tenant = await newTenant(server);
    const admin = server.admin();
    const hook = await tenant.client.createWebhook({ url: r.url, events: ["order.*"], ordering: "key" });
    assert.equal(hook.ordering, "key");
    const verifier = new WebhookVerifier(hook.signing_secret!);
    const key = "order-" + randomUUID().slice(0, 8);
    const firstId = "evt_01" + randomUUID().replaceAll("-", "").slice(0, 24).toUpperCase();
    r.failEvents.add(firstId); // the head of the line keeps failing
    await admin.publish({ id: firstId, type: "order.created", data: { n: 1 }, tenant: tenant.id, key });
    const second = await admin.publish({ type: "order.paid", data: { n: 2 }, tenant: tenant.id, key });
    const byEvent = async (eventId: string): Promise<Delivery | undefined> => {
      for await (const d of tenant.client.iterDeliveries({ webhook: hook.id })) if (d.event_id === eventId) return d;
      return undefined;
    };
    const head = await eventually("the head's delivery", () => byEvent(firstId));
    const held = await eventually("the second to be held by the head", async () => {
      const d = await byEvent(second.id);
      return d?.held_by === head.id ? d : undefined;
    });
    assert.deepEqual([held.status, held.sequence], ["pending", 2]);

    // Not while its attempt is in flight (the next would go beside it): then again.
    const gaveUp = await eventually<Delivery>("the head to be skipped", async () => {
      try {
        return await tenant.client.skipDelivery(head.id);
      } catch (e) {
        if (e instanceof DeliveryInFlightError) return undefined;
        throw e;
      }
    });
    assert.equal(gaveUp.status, "skipped");
    // Released: the key's second event arrives now (the head's failed tries came before it).
    for (;;) {
      const got = await r.next();
      if (verifier.verify(got.headers, got.body).eventId === second.id) break;
    }
    const done = await eventually("the second to be recorded", async () => {
      const d = await byEvent(second.id);
      return d?.status === "succeeded" ? d : undefined;
    });
    await assert.rejects(tenant.client.skipDelivery(done.id), (e: unknown) => e instanceof DeliverySucceededError && e.code === "DELIVERY_SUCCEEDED");
    const skipped = await tenant.client.listDeliveries({ webhook: hook.id, status: "skipped" });
    assert.deepEqual(skipped.items.map((d) => d.id), [head.id]);
  }));

test("the Express example answers 409 to a copy arriving during an apply, and a failed apply is not seen", async () => {
  const secret = "hsec_" + "ab".repeat(16);
  let started!: () => void;
  const startedP = new Promise<void>((r) => (started = r));
  let goOn!: () => void;
  const goOnP = new Promise<void>((r) => (goOn = r));
  const applied: string[] = [];
  let failNext = true;
  const app = createApp(() => [secret], new MemoryDedupe(), async (e) => {
    started();
    await goOnP;
    if (failNext) {
      failNext = false;
      throw new Error("the database is down");
    }
    applied.push(e.id);
  });
  app.use((_err: unknown, _req: unknown, res: { status: (n: number) => { end: () => void } }, _next: unknown) => res.status(500).end());
  const http = app.listen(0, "127.0.0.1");
  await new Promise((ok) => http.once("listening", ok));
  try {
    const url = `http://127.0.0.1:${(http.address() as AddressInfo).port}/hooks/herald`;
    const body = JSON.stringify({ id: "evt_1", type: "order.paid", data: {} });
    const post = (): Promise<Response> => {
      const ts = new Date().toISOString().replace(/\.\d+Z$/, "Z");
      return fetch(url, {
        method: "POST",
        body,
        headers: { "content-type": "application/json", "x-signature": heraldSignature(secret, ts, body), "x-timestamp": ts, "x-event-id": "evt_1" },
      });
    };
    const first = post();
    await startedP;
    const during = await post(); // a retry arriving while the first apply runs
    assert.equal(during.status, 409);
    assert.equal(during.headers.get("retry-after"), "1");
    goOn();
    assert.equal((await first).status, 500);
    assert.deepEqual(applied, []); // the first apply failed: not seen
    assert.equal((await post()).status, 204); // Herald's retry applies it
    assert.deepEqual(applied, ["evt_1"]);
    assert.equal((await post()).status, 204); // now a duplicate
    assert.deepEqual(applied, ["evt_1"]);
  } finally {
    http.closeAllConnections();
    await new Promise((ok) => http.close(ok));
  }
});
