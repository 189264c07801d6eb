/**
 * Webhook verification for both formats Herald sends:
 * - Herald's own: `X-Signature: sha256=HEX`, HMAC-SHA256 of `X-Timestamp + "." + raw body`,
 *   keyed with the secret's UTF-8 bytes (`hsec_…`);
 * - Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,BASE64` over
 *   `id.timestamp.body`, keyed with the base64-decoded `whsec_…` secret;
 * - Standard Webhooks with ed25519 (format `standard-webhooks-ed25519`): the same headers,
 *   `webhook-signature: v1a,BASE64`, the ed25519 signature of `id.timestamp.body`, verified with
 *   the webhook's public key `whpk_<base64 of 32 bytes>` (node's own `crypto`).
 * Every signature in the header (two during a rotation) is checked against every secret, HMACs
 * each with `crypto.timingSafeEqual`. Verify the raw bytes, before any JSON parsing.
 */
import { createHmac, createPublicKey, timingSafeEqual, verify as cryptoVerify, type KeyObject } from "node:crypto";

export class WebhookVerificationError extends Error {
  override name = "WebhookVerificationError";
}
export class MissingHeaderError extends WebhookVerificationError {
  override name = "MissingHeaderError";
  constructor(readonly header: string) {
    super(`missing header ${header}`);
  }
}
export class MalformedHeaderError extends WebhookVerificationError {
  override name = "MalformedHeaderError";
  constructor(readonly header: string) {
    super(`header ${header} is malformed`);
  }
}
export class OutsideToleranceError extends WebhookVerificationError {
  override name = "OutsideToleranceError";
  constructor(
    readonly skewSeconds: number,
    readonly toleranceSeconds: number,
  ) {
    super(`timestamp is ${skewSeconds}s away from now, beyond the ${toleranceSeconds}s tolerance`);
  }
}
export class BadSignatureError extends WebhookVerificationError {
  override name = "BadSignatureError";
  constructor() {
    super("no signature matches any of the secrets");
  }
}

/** A request that passed: dedupe on `eventId`. */
export interface VerifiedWebhook {
  format: "herald" | "standard-webhooks" | "standard-webhooks-ed25519";
  /** `X-Event-Id` or `webhook-id`. */
  eventId: string;
  /** Seconds since the Unix epoch, from the signed timestamp. */
  timestamp: number;
}

/** Fetch `Headers`, Node's `IncomingHttpHeaders` (`req.headers`), a record, or `[name, value]` pairs. */
export type HeaderInput =
  | Headers
  | Record<string, string | string[] | undefined>
  | Iterable<readonly [string, string]>;

export type Body = string | Uint8Array;

function lookup(headers: HeaderInput): Map<string, string> {
  const found = new Map<string, string>();
  const add = (k: string, v: string | string[] | undefined): void => {
    if (v === undefined) return;
    const key = k.toLowerCase();
    if (!found.has(key)) found.set(key, Array.isArray(v) ? v.join(" ") : v);
  };
  if (typeof (headers as Iterable<unknown>)[Symbol.iterator] === "function") {
    // Fetch Headers, a Map, or [name, value] pairs.
    for (const [k, v] of headers as Iterable<readonly [string, string]>) add(k, v);
  } else {
    for (const [k, v] of Object.entries(headers as Record<string, string | string[] | undefined>)) add(k, v);
  }
  return found;
}

const bytes = (body: Body): Buffer => (typeof body === "string" ? Buffer.from(body, "utf8") : Buffer.from(body.buffer, body.byteOffset, body.byteLength));

/** `sha256=HEX` of HMAC-SHA256(secret's UTF-8 bytes, `timestamp.body`). */
export function heraldSignature(secret: string, timestamp: string, body: Body): string {
  return "sha256=" + createHmac("sha256", secret).update(`${timestamp}.`).update(bytes(body)).digest("hex");
}

function standardKey(secret: string): Buffer {
  const encoded = secret.startsWith("whsec_") ? secret.slice(6) : secret;
  if (/^[A-Za-z0-9+/]+={0,2}$/.test(encoded) && encoded.length % 4 === 0) return Buffer.from(encoded, "base64");
  return Buffer.from(secret, "utf8");
}

/** `v1,BASE64` of HMAC-SHA256(decoded secret, `id.timestamp.body`). */
export function standardSignature(secret: string, msgId: string, timestamp: number, body: Body): string {
  return "v1," + createHmac("sha256", standardKey(secret)).update(`${msgId}.${timestamp}.`).update(bytes(body)).digest("base64");
}

/** A key of the `standard-webhooks-ed25519` format: verifies `v1a` only, never an HMAC. */
const isEd25519Key = (secret: string): boolean => secret.startsWith("whpk_") || secret.startsWith("whsk_");

/** Strict standard base64 (padded, no stray characters or trailing bits), as Herald's Rust SDK decodes it; `null` otherwise. */
function canonicalBase64(text: string): Buffer | null {
  if (text.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(text)) return null;
  const raw = Buffer.from(text, "base64");
  return raw.toString("base64") === text ? raw : null;
}

/** The key of a `whpk_<base64 of 32 bytes>` public key; a `TypeError` for a malformed one or a `whsk_` private key. */
function ed25519PublicKey(key: string): KeyObject {
  if (key.startsWith("whsk_")) {
    throw new TypeError(
      "whsk_ is an ed25519 private key, which Herald never shows and a receiver never needs; verify with the webhook's public key (its public_key field, whpk_…)",
    );
  }
  const raw = canonicalBase64(key.slice("whpk_".length));
  if (raw === null || raw.length !== 32) throw new TypeError("an ed25519 public key is whpk_ followed by the base64 of 32 bytes");
  try {
    return createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: raw.toString("base64url") }, format: "jwk" });
  } catch {
    throw new TypeError("an ed25519 public key is whpk_ followed by the base64 of 32 bytes");
  }
}

/** Whether any of the space-separated `v1a,BASE64` values (others ignored) is the ed25519 signature of `id.timestamp.body` by `key`. */
function ed25519Verifies(key: KeyObject, msgId: string, timestamp: number, body: Body, header: string): boolean {
  const content = Buffer.concat([Buffer.from(`${msgId}.${timestamp}.`), bytes(body)]);
  let found = false;
  for (const candidate of header.split(/\s+/).filter(Boolean)) {
    if (!candidate.startsWith("v1a,")) continue;
    const sig = canonicalBase64(candidate.slice(4));
    if (sig === null || sig.length !== 64) continue;
    found = cryptoVerify(null, content, key, sig) || found;
  }
  return found;
}

/** Every candidate is compared, each in constant time. */
function anyEqual(header: string, expected: string): boolean {
  const want = Buffer.from(expected);
  let found = false;
  for (const candidate of header.split(/\s+/).filter(Boolean)) {
    const got = Buffer.from(candidate);
    // Lengths are public (the format fixes them); only equal lengths are compared byte by byte.
    const same = got.length === want.length && timingSafeEqual(got, want);
    found = same || found;
  }
  return found;
}

export interface VerifyOptions {
  /** How far the signed timestamp may be from now, either way, in seconds (default 300). */
  toleranceSeconds?: number;
  /** Verify as of this Unix time in seconds (tests, captured requests). Default: now. */
  now?: number;
}

/**
 * Verifies webhook requests against one or more secrets (several while you rotate), exactly as
 * Herald showed them (`hsec_…` or `whsec_…`, or the `whpk_…` public key of a
 * `standard-webhooks-ed25519` webhook). A `whpk_` key verifies `v1a` signatures only and never
 * keys an HMAC: it is public, so anyone shown it could otherwise sign a request in the `herald`
 * or `v1` format that passes. A malformed one, or a `whsk_` private key, is a `TypeError`.
 */
export class WebhookVerifier {
  readonly secrets: string[];
  readonly toleranceSeconds: number;
  /** Parsed once; `null` for an HMAC secret. */
  readonly #ed25519: (KeyObject | null)[];

  constructor(secrets: string | string[], options: { toleranceSeconds?: number } = {}) {
    this.secrets = typeof secrets === "string" ? [secrets] : [...secrets];
    if (this.secrets.length === 0) throw new TypeError("at least one secret is needed");
    this.#ed25519 = this.secrets.map((s) => (isEd25519Key(s) ? ed25519PublicKey(s) : null));
    const tolerance = options.toleranceSeconds ?? 300;
    // NaN would disable the replay check (no skew compares greater than NaN).
    if (typeof tolerance !== "number" || !Number.isFinite(tolerance) || tolerance < 0) {
      throw new TypeError(`toleranceSeconds must be a finite number of seconds, 0 or more: ${String(tolerance)}`);
    }
    this.toleranceSeconds = tolerance;
  }

  /** Throws a {@link WebhookVerificationError} unless the request is genuine and fresh. The format is chosen by the headers. */
  verify(headers: HeaderInput, body: Body, options: { now?: number } = {}): VerifiedWebhook {
    const h = lookup(headers);
    const now = Math.floor(options.now ?? Date.now() / 1000);
    if (h.has("webhook-signature")) return this.#standard(h, body, now);
    if (h.has("x-signature")) return this.#herald(h, body, now);
    throw new MissingHeaderError("X-Signature or webhook-signature");
  }

  #checkSkew(timestamp: number, now: number): void {
    const skew = now - timestamp;
    if (!Number.isFinite(skew) || Math.abs(skew) > this.toleranceSeconds) throw new OutsideToleranceError(skew, this.toleranceSeconds);
  }

  #herald(h: Map<string, string>, body: Body, now: number): VerifiedWebhook {
    const signature = h.get("x-signature") ?? "";
    const tsText = h.get("x-timestamp");
    if (tsText === undefined) throw new MissingHeaderError("X-Timestamp");
    const eventId = h.get("x-event-id");
    if (eventId === undefined) throw new MissingHeaderError("X-Event-Id");
    if (!/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/.test(tsText.trim())) throw new MalformedHeaderError("X-Timestamp");
    const ms = Date.parse(tsText.trim());
    if (Number.isNaN(ms)) throw new MalformedHeaderError("X-Timestamp");
    const ts = Math.floor(ms / 1000);
    this.#checkSkew(ts, now);
    let matched = false;
    for (const [i, secret] of this.secrets.entries()) {
      // An ed25519 public key never keys an HMAC.
      if (this.#ed25519[i] === null) matched = anyEqual(signature, heraldSignature(secret, tsText, body)) || matched;
    }
    if (!matched) throw new BadSignatureError();
    return { format: "herald", eventId, timestamp: ts };
  }

  #standard(h: Map<string, string>, body: Body, now: number): VerifiedWebhook {
    const signature = h.get("webhook-signature") ?? "";
    const msgId = h.get("webhook-id");
    if (msgId === undefined) throw new MissingHeaderError("webhook-id");
    const tsText = h.get("webhook-timestamp");
    if (tsText === undefined) throw new MissingHeaderError("webhook-timestamp");
    if (!/^-?\d+$/.test(tsText.trim())) throw new MalformedHeaderError("webhook-timestamp");
    const ts = Number(tsText.trim());
    this.#checkSkew(ts, now);
    // Every secret is tried; the format is that of the first (in order) that matched.
    let matched: "standard-webhooks" | "standard-webhooks-ed25519" | null = null;
    for (const [i, secret] of this.secrets.entries()) {
      const key = this.#ed25519[i] ?? null;
      const ok = key === null ? anyEqual(signature, standardSignature(secret, msgId, ts, body)) : ed25519Verifies(key, msgId, ts, body, signature);
      if (ok && matched === null) matched = key === null ? "standard-webhooks" : "standard-webhooks-ed25519";
    }
    if (matched === null) throw new BadSignatureError();
    return { format: matched, eventId: msgId, timestamp: ts };
  }
}

/** The framework-agnostic one-call form of {@link WebhookVerifier.verify}. */
export function verifyWebhook(secrets: string | string[], headers: HeaderInput, body: Body, options: VerifyOptions = {}): VerifiedWebhook {
  return new WebhookVerifier(secrets, options).verify(headers, body, options);
}
