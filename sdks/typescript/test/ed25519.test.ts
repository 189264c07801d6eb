// `v1a` (ed25519, format standard-webhooks-ed25519) verification with a `whpk_` public key, on
// known vectors; no server needed. The live delivery is in webhooks.test.ts.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createPrivateKey, generateKeyPairSync, sign, type KeyObject } from "node:crypto";
import {
  BadSignatureError,
  MalformedHeaderError,
  MissingHeaderError,
  OutsideToleranceError,
  WebhookVerifier,
  heraldSignature,
  standardSignature,
  verifyWebhook,
} from "@herald/client";

// RFC 8032 7.1 TEST 1's key, as Herald writes it (herald-core's ed25519_matches_rfc_8032_test_1).
const RFC_SEED = Buffer.from("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60", "hex");
const RFC_PUBLIC = "whpk_11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
const BODY = '{"id":"evt_1"}';
const TS = 1614265330;
// ed25519 is deterministic (RFC 8032): what Herald's signer (ed25519-dalek, signing
// `id.timestamp.body` with whsk_<base64 of RFC_SEED>) sends for evt_1 at TS. The Python SDK's
// tests hold the same vector, computed there with the cryptography package.
const RFC_SIG = "v1a,P3hclLYxzTlJ2ssZnTSe1UdHHPxu7RYafYAuFuQzv8zhvGIXTKUpYbgXUVJSgQKxwcDLsMPE7vtSoyhcGyNwDQ==";

// A real delivery of Herald (herald serve, a webhook of format standard-webhooks-ed25519),
// captured with its public key: the Rust signer's own output.
const HERALD_PUBLIC = "whpk_cAFVjkn8Chs0N7IYMqS2FqYuU01MfsY9++DBsKlMOYY=";
const HERALD_HEADERS: Record<string, string> = {
  "webhook-id": "evt_01M8VMAAE6YBEBYH2F5Z7DTTNN",
  "webhook-timestamp": "1796223609",
  "webhook-signature": "v1a,4mswN+FWJr2oAS/J01UbfiFCg61WzEejXbwbiaAbxRMnwjEftErVvNMBCMJhSnF+9plJynLyugp+x6Ks4XN1BQ==",
};
const HERALD_BODY = '{"id":"evt_01M8VMAAE6YBEBYH2F5Z7DTTNN","type":"order.paid","created_at":"2026-12-02T15:00:09Z","data":{"order":1}}';

const headers = (sig: string, msgId = "evt_1", ts = TS): Record<string, string> => ({
  "webhook-id": msgId,
  "webhook-timestamp": String(ts),
  "webhook-signature": sig,
});

const publicOf = (key: KeyObject): string => {
  const jwk = key.export({ format: "jwk" });
  return "whpk_" + Buffer.from(jwk.x!, "base64url").toString("base64");
};

const v1a = (key: KeyObject, msgId: string, ts: number, body: string): string =>
  "v1a," + sign(null, Buffer.from(`${msgId}.${ts}.${body}`), key).toString("base64");

const rfcKey = (): KeyObject =>
  createPrivateKey({
    key: { kty: "OKP", crv: "Ed25519", d: RFC_SEED.toString("base64url"), x: Buffer.from(RFC_PUBLIC.slice(5), "base64").toString("base64url") },
    format: "jwk",
  });

const newKey = (): KeyObject => generateKeyPairSync("ed25519").privateKey;

test("the RFC 8032 key and its vector", () => {
  const key = rfcKey();
  assert.equal(publicOf(key), RFC_PUBLIC);
  // RFC 8032 TEST 1: the empty message's signature, so this is the RFC's key and algorithm.
  assert.ok(sign(null, Buffer.alloc(0), key).toString("hex").startsWith("e5564300c360ac729086e2cc806e828a"));
  assert.equal(v1a(key, "evt_1", TS, BODY), RFC_SIG);
  const verified = verifyWebhook(RFC_PUBLIC, headers(RFC_SIG), BODY, { now: TS });
  assert.deepEqual(verified, { format: "standard-webhooks-ed25519", eventId: "evt_1", timestamp: TS });
  // Bytes and fetch Headers as for HMAC.
  assert.equal(verifyWebhook(RFC_PUBLIC, new Headers(headers(RFC_SIG)), new TextEncoder().encode(BODY), { now: TS }).eventId, "evt_1");
});

test("a delivery signed by Herald verifies", () => {
  const verifier = new WebhookVerifier(HERALD_PUBLIC);
  const ts = Number(HERALD_HEADERS["webhook-timestamp"]);
  const verified = verifier.verify(HERALD_HEADERS, HERALD_BODY, { now: ts });
  assert.equal(verified.format, "standard-webhooks-ed25519");
  assert.equal(verified.eventId, HERALD_HEADERS["webhook-id"]);
  assert.throws(() => verifier.verify(HERALD_HEADERS, HERALD_BODY.replace("1", "2"), { now: ts }), BadSignatureError);
  assert.throws(() => new WebhookVerifier(RFC_PUBLIC).verify(HERALD_HEADERS, HERALD_BODY, { now: ts }), BadSignatureError);
});

test("anything changed is refused", () => {
  const v = new WebhookVerifier(RFC_PUBLIC);
  assert.throws(() => v.verify(headers(RFC_SIG), "{}", { now: TS }), BadSignatureError);
  assert.throws(() => v.verify(headers(RFC_SIG, "evt_2"), BODY, { now: TS }), BadSignatureError);
  assert.throws(() => v.verify(headers(RFC_SIG, "evt_1", TS + 1), BODY, { now: TS }), BadSignatureError);
  assert.throws(() => new WebhookVerifier(publicOf(newKey())).verify(headers(RFC_SIG), BODY, { now: TS }), BadSignatureError);
});

test("the tolerance applies both ways", () => {
  const v = new WebhookVerifier(RFC_PUBLIC);
  assert.equal(v.verify(headers(RFC_SIG), BODY, { now: TS + 300 }).eventId, "evt_1");
  assert.equal(v.verify(headers(RFC_SIG), BODY, { now: TS - 300 }).eventId, "evt_1");
  assert.throws(
    () => v.verify(headers(RFC_SIG), BODY, { now: TS + 301 }),
    (e: unknown) => e instanceof OutsideToleranceError && e.skewSeconds === 301 && e.toleranceSeconds === 300,
  );
  assert.throws(() => v.verify(headers(RFC_SIG), BODY, { now: TS - 301 }), OutsideToleranceError);
  assert.throws(() => new WebhookVerifier(RFC_PUBLIC, { toleranceSeconds: 5 }).verify(headers(RFC_SIG), BODY, { now: TS + 6 }), OutsideToleranceError);
});

test("missing and malformed headers are named as for HMAC", () => {
  const v = new WebhookVerifier(RFC_PUBLIC);
  assert.throws(
    () => v.verify({ "webhook-signature": RFC_SIG, "webhook-timestamp": String(TS) }, BODY, { now: TS }),
    (e: unknown) => e instanceof MissingHeaderError && e.header === "webhook-id",
  );
  assert.throws(() => v.verify({ "webhook-signature": RFC_SIG, "webhook-id": "evt_1" }, BODY, { now: TS }), /missing header webhook-timestamp/);
  assert.throws(() => v.verify({ ...headers(RFC_SIG), "webhook-timestamp": "soon" }, BODY, { now: TS }), MalformedHeaderError);
  assert.throws(() => v.verify({}, BODY, { now: TS }), /X-Signature or webhook-signature/);
});

test("several signatures and keys during a rotation", () => {
  const [oldKey, newKeyPair] = [newKey(), newKey()];
  const [oldPub, newPub] = [publicOf(oldKey), publicOf(newKeyPair)];
  // Herald signs with both keys during the grace, space-separated, new first.
  const sig = `${v1a(newKeyPair, "evt_1", TS, BODY)} ${v1a(oldKey, "evt_1", TS, BODY)}`;
  for (const keys of [[oldPub], [newPub], [newPub, oldPub], [RFC_PUBLIC, oldPub]]) {
    assert.equal(new WebhookVerifier(keys).verify(headers(sig), BODY, { now: TS }).format, "standard-webhooks-ed25519");
  }
  assert.throws(() => new WebhookVerifier([RFC_PUBLIC]).verify(headers(sig), BODY, { now: TS }), BadSignatureError);
  // Values that are not a well-formed v1a signature are skipped, not errors.
  const junk = `v1a,AAAA v1a,not*base64 v1,abc v1a, ${RFC_SIG.replace(/=+$/, "")} ${RFC_SIG}`;
  assert.equal(new WebhookVerifier(RFC_PUBLIC).verify(headers(junk), BODY, { now: TS }).eventId, "evt_1");
});

test("only canonical base64 is a signature", () => {
  // The signature's last character carries 4 unused bits; another letter there decodes to the
  // same bytes in a lenient decoder (Buffer's), which Herald's Rust SDK refuses: so does this one.
  const raw = RFC_SIG.slice(4);
  assert.ok(raw.endsWith("DQ=="));
  const lenient = "v1a," + raw.slice(0, -3) + "R==";
  assert.deepEqual(Buffer.from(lenient.slice(4), "base64"), Buffer.from(raw, "base64"));
  assert.throws(() => verifyWebhook(RFC_PUBLIC, headers(lenient), BODY, { now: TS }), BadSignatureError);
  assert.throws(() => verifyWebhook(RFC_PUBLIC, headers(RFC_SIG.replace(/=+$/, "")), BODY, { now: TS }), BadSignatureError);
  // Buffer skips characters outside the alphabet; a signature with one is not one.
  assert.throws(() => verifyWebhook(RFC_PUBLIC, headers("v1a,!" + raw.slice(1)), BODY, { now: TS }), BadSignatureError);
});

test("a public key never keys an HMAC", () => {
  // Anyone shown the whpk_ key could otherwise sign a request in the herald or the v1 format.
  const v = new WebhookVerifier(RFC_PUBLIC);
  const ts = "2021-02-25T15:02:10Z";
  const forged = { "X-Event-Id": "evt_1", "X-Timestamp": ts, "X-Signature": heraldSignature(RFC_PUBLIC, ts, BODY) };
  assert.throws(() => v.verify(forged, BODY, { now: TS }), BadSignatureError);
  assert.throws(() => v.verify(headers(standardSignature(RFC_PUBLIC, "evt_1", TS, BODY)), BODY, { now: TS }), BadSignatureError);
});

test("HMAC secrets and public keys together", () => {
  const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
  const v = new WebhookVerifier([secret, RFC_PUBLIC]);
  assert.equal(v.verify(headers(RFC_SIG), BODY, { now: TS }).format, "standard-webhooks-ed25519");
  const v1 = standardSignature(secret, "evt_1", TS, BODY);
  assert.equal(v.verify(headers(v1), BODY, { now: TS }).format, "standard-webhooks");
  // A v1a value never matches an HMAC secret, nor a v1 value a public key.
  assert.throws(() => new WebhookVerifier(secret).verify(headers(RFC_SIG), BODY, { now: TS }), BadSignatureError);
  assert.throws(() => new WebhookVerifier(RFC_PUBLIC).verify(headers(v1), BODY, { now: TS }), BadSignatureError);
});

test("a malformed public key is refused", () => {
  for (const key of [
    "whpk_AAAA", // 3 bytes
    "whpk_" + Buffer.alloc(31).toString("base64"),
    "whpk_" + Buffer.alloc(33).toString("base64"),
    RFC_PUBLIC.replace(/=$/, ""), // unpadded
    RFC_PUBLIC + "\n",
    "whpk_",
  ]) {
    assert.throws(() => new WebhookVerifier(key), /whpk_ followed by the base64 of 32 bytes/, key);
    assert.throws(() => new WebhookVerifier(["whsec_x", key]), TypeError, key);
  }
});

test("a private key is refused", () => {
  // Herald never shows a whsk_ key; a receiver verifies with the public one.
  assert.throws(() => new WebhookVerifier("whsk_" + RFC_SEED.toString("base64")), /public_key/);
});
