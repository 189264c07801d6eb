"""`v1a` (ed25519, format standard-webhooks-ed25519) verification with a `whpk_` public key,
on known vectors; no server needed. The live delivery is in test_webhooks.py."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from herald_client import (
    BadSignatureError,
    MalformedHeaderError,
    MissingHeaderError,
    OutsideToleranceError,
    WebhookVerifier,
    herald_signature,
    standard_signature,
    verify_webhook,
)

# RFC 8032 7.1 TEST 1's key, as Herald writes it (herald-core's ed25519_matches_rfc_8032_test_1):
# the seed d75a…'s private half is whsk_nWGx…, its public key d75a9801….
RFC_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC_PUBLIC = "whpk_11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
BODY = b'{"id":"evt_1"}'
TS = 1614265330
# ed25519 is deterministic (RFC 8032): this is what Herald's signer (ed25519-dalek, signing
# `id.timestamp.body` with whsk_<base64 of RFC_SEED>) sends for evt_1 at TS.
RFC_SIG = "v1a,P3hclLYxzTlJ2ssZnTSe1UdHHPxu7RYafYAuFuQzv8zhvGIXTKUpYbgXUVJSgQKxwcDLsMPE7vtSoyhcGyNwDQ=="

# A real delivery of Herald (herald serve, a webhook of format standard-webhooks-ed25519),
# captured with its public key: the Rust signer's own output.
HERALD_PUBLIC = "whpk_cAFVjkn8Chs0N7IYMqS2FqYuU01MfsY9++DBsKlMOYY="
HERALD_HEADERS = {
    "webhook-id": "evt_01M8VMAAE6YBEBYH2F5Z7DTTNN",
    "webhook-timestamp": "1796223609",
    "webhook-signature": "v1a,4mswN+FWJr2oAS/J01UbfiFCg61WzEejXbwbiaAbxRMnwjEftErVvNMBCMJhSnF+9plJynLyugp+x6Ks4XN1BQ==",
}
HERALD_BODY = b'{"id":"evt_01M8VMAAE6YBEBYH2F5Z7DTTNN","type":"order.paid","created_at":"2026-12-02T15:00:09Z","data":{"order":1}}'


def headers(sig: str, msg_id: str = "evt_1", ts: int = TS) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sig}


def public_of(key: Ed25519PrivateKey) -> str:
    return "whpk_" + base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def v1a(key: Ed25519PrivateKey, msg_id: str, ts: int, body: bytes) -> str:
    return "v1a," + base64.b64encode(key.sign(f"{msg_id}.{ts}.".encode() + body)).decode()


def test_the_rfc_8032_key_and_its_vector() -> None:
    key = Ed25519PrivateKey.from_private_bytes(RFC_SEED)
    assert public_of(key) == RFC_PUBLIC
    # RFC 8032 TEST 1: the empty message's signature, so this is the RFC's key and algorithm.
    assert key.sign(b"").hex().startswith("e5564300c360ac729086e2cc806e828a")
    assert v1a(key, "evt_1", TS, BODY) == RFC_SIG
    verified = verify_webhook(RFC_PUBLIC, headers(RFC_SIG), BODY, now=TS)
    assert verified.format == "standard-webhooks-ed25519"
    assert (verified.event_id, verified.timestamp) == ("evt_1", TS)


def test_a_delivery_signed_by_herald_verifies() -> None:
    verifier = WebhookVerifier(HERALD_PUBLIC)
    ts = int(HERALD_HEADERS["webhook-timestamp"])
    verified = verifier.verify(HERALD_HEADERS, HERALD_BODY, now=ts)
    assert verified.format == "standard-webhooks-ed25519"
    assert verified.event_id == HERALD_HEADERS["webhook-id"]
    with pytest.raises(BadSignatureError):
        verifier.verify(HERALD_HEADERS, HERALD_BODY.replace(b"1", b"2"), now=ts)
    with pytest.raises(BadSignatureError):
        WebhookVerifier(RFC_PUBLIC).verify(HERALD_HEADERS, HERALD_BODY, now=ts)


def test_anything_changed_is_refused() -> None:
    v = WebhookVerifier(RFC_PUBLIC)
    with pytest.raises(BadSignatureError):
        v.verify(headers(RFC_SIG), b"{}", now=TS)
    with pytest.raises(BadSignatureError):
        v.verify(headers(RFC_SIG, msg_id="evt_2"), BODY, now=TS)
    with pytest.raises(BadSignatureError):
        v.verify(headers(RFC_SIG, ts=TS + 1), BODY, now=TS)
    other = public_of(Ed25519PrivateKey.generate())
    with pytest.raises(BadSignatureError):
        WebhookVerifier(other).verify(headers(RFC_SIG), BODY, now=TS)


def test_the_tolerance_applies_both_ways() -> None:
    v = WebhookVerifier(RFC_PUBLIC)
    assert v.verify(headers(RFC_SIG), BODY, now=TS + 300).event_id == "evt_1"
    assert v.verify(headers(RFC_SIG), BODY, now=TS - 300).event_id == "evt_1"
    with pytest.raises(OutsideToleranceError) as e:
        v.verify(headers(RFC_SIG), BODY, now=TS + 301)
    assert (e.value.skew_seconds, e.value.tolerance_seconds) == (301, 300)
    with pytest.raises(OutsideToleranceError):
        v.verify(headers(RFC_SIG), BODY, now=TS - 301)
    with pytest.raises(OutsideToleranceError):
        WebhookVerifier(RFC_PUBLIC, tolerance=5).verify(headers(RFC_SIG), BODY, now=TS + 6)


def test_missing_and_malformed_headers_are_named_as_for_hmac() -> None:
    v = WebhookVerifier(RFC_PUBLIC)
    with pytest.raises(MissingHeaderError) as missing:
        v.verify({"webhook-signature": RFC_SIG, "webhook-timestamp": str(TS)}, BODY, now=TS)
    assert missing.value.header == "webhook-id"
    with pytest.raises(MissingHeaderError, match="webhook-timestamp"):
        v.verify({"webhook-signature": RFC_SIG, "webhook-id": "evt_1"}, BODY, now=TS)
    with pytest.raises(MalformedHeaderError, match="webhook-timestamp"):
        v.verify({**headers(RFC_SIG), "webhook-timestamp": "soon"}, BODY, now=TS)
    with pytest.raises(MissingHeaderError, match="X-Signature or webhook-signature"):
        v.verify({}, BODY, now=TS)


def test_several_signatures_and_keys_during_a_rotation() -> None:
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    old_pub, new_pub = public_of(old), public_of(new)
    # Herald signs with both keys during the grace, space-separated, new first.
    sig = f"{v1a(new, 'evt_1', TS, BODY)} {v1a(old, 'evt_1', TS, BODY)}"
    for keys in ([old_pub], [new_pub], [new_pub, old_pub], [RFC_PUBLIC, old_pub]):
        assert WebhookVerifier(keys).verify(headers(sig), BODY, now=TS).format == "standard-webhooks-ed25519"
    with pytest.raises(BadSignatureError):
        WebhookVerifier([RFC_PUBLIC]).verify(headers(sig), BODY, now=TS)
    # Values that are not a well-formed v1a signature are skipped, not errors.
    unpadded = RFC_SIG.rstrip("=")
    junk = f"v1a,AAAA v1a,not*base64 v1,abc v1a, {unpadded} {RFC_SIG}"
    assert WebhookVerifier(RFC_PUBLIC).verify(headers(junk), BODY, now=TS).event_id == "evt_1"


def test_only_canonical_base64_is_a_signature() -> None:
    # The signature's last character carries 4 unused bits; another letter there decodes to the
    # same bytes in a lenient decoder, which Herald's Rust SDK refuses: so does this one.
    raw = RFC_SIG.removeprefix("v1a,")
    assert raw.endswith("DQ==")
    lenient = "v1a," + raw[:-3] + "R=="
    assert base64.b64decode(lenient[4:]) == base64.b64decode(raw)
    with pytest.raises(BadSignatureError):
        verify_webhook(RFC_PUBLIC, headers(lenient), BODY, now=TS)
    with pytest.raises(BadSignatureError):
        verify_webhook(RFC_PUBLIC, headers(RFC_SIG.rstrip("=")), BODY, now=TS)


def test_a_public_key_never_keys_an_hmac() -> None:
    # Anyone shown the whpk_ key could otherwise sign a request in the herald or the v1 format.
    v = WebhookVerifier(RFC_PUBLIC)
    ts = "2021-02-25T15:02:10Z"
    forged = {"X-Event-Id": "evt_1", "X-Timestamp": ts, "X-Signature": herald_signature(RFC_PUBLIC, ts, BODY)}
    with pytest.raises(BadSignatureError):
        v.verify(forged, BODY, now=TS)
    with pytest.raises(BadSignatureError):
        v.verify(headers(standard_signature(RFC_PUBLIC, "evt_1", TS, BODY)), BODY, now=TS)


def test_hmac_secrets_and_public_keys_together() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    v = WebhookVerifier([secret, RFC_PUBLIC])
    assert v.verify(headers(RFC_SIG), BODY, now=TS).format == "standard-webhooks-ed25519"
    v1 = standard_signature(secret, "evt_1", TS, BODY)
    assert v.verify(headers(v1), BODY, now=TS).format == "standard-webhooks"
    # A v1a value never matches an HMAC secret, nor a v1 value a public key.
    with pytest.raises(BadSignatureError):
        WebhookVerifier(secret).verify(headers(RFC_SIG), BODY, now=TS)
    with pytest.raises(BadSignatureError):
        WebhookVerifier(RFC_PUBLIC).verify(headers(v1), BODY, now=TS)


@pytest.mark.parametrize(
    "key",
    [
        "whpk_AAAA",  # 3 bytes
        "whpk_" + base64.b64encode(bytes(31)).decode(),
        "whpk_" + base64.b64encode(bytes(33)).decode(),
        "whpk_11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo",  # unpadded
        "whpk_11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n",
        "whpk_",
    ],
)
def test_a_malformed_public_key_is_refused(key: str) -> None:
    with pytest.raises(ValueError, match="whpk_ followed by the base64 of 32 bytes"):
        WebhookVerifier(key)
    with pytest.raises(ValueError):
        WebhookVerifier(["whsec_x", key])


def test_a_private_key_is_refused() -> None:
    # Herald never shows a whsk_ key; a receiver verifies with the public one.
    with pytest.raises(ValueError, match="public_key"):
        WebhookVerifier("whsk_" + base64.b64encode(RFC_SEED).decode())


def test_without_cryptography_hmac_works_and_ed25519_says_what_to_install() -> None:
    # A fresh interpreter where `import cryptography` fails, as without the [ed25519] extra.
    script = f"""
import json, sys
sys.modules["cryptography"] = None
from herald_client import WebhookVerifier, herald_signature, standard_signature
body = b'{{"id":"evt_1"}}'
ts = "2026-04-10T15:20:00Z"
h = {{"X-Event-Id": "evt_1", "X-Timestamp": ts, "X-Signature": herald_signature("hsec_test", ts, body)}}
out = {{"herald": WebhookVerifier("hsec_test").verify(h, body, now=1775834400).format}}
s = {{"webhook-id": "evt_1", "webhook-timestamp": "1775834400",
     "webhook-signature": standard_signature("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "evt_1", 1775834400, body)}}
out["standard"] = WebhookVerifier("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").verify(s, body, now=1775834400).format
try:
    WebhookVerifier({RFC_PUBLIC!r})
except ImportError as e:
    out["ed25519"] = str(e)
print(json.dumps(out))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    out = json.loads(done.stdout)
    assert out["herald"] == "herald" and out["standard"] == "standard-webhooks"
    assert "pip install 'herald-client[ed25519]'" in out["ed25519"], out
