"""Webhook verification for both formats Herald sends:

- Herald's own: ``X-Signature: sha256=HEX``, HMAC-SHA256 of ``X-Timestamp + "." + raw body``
  keyed with the secret's UTF-8 bytes (``hsec_…``);
- Standard Webhooks: ``webhook-id``, ``webhook-timestamp``, ``webhook-signature: v1,BASE64``
  over ``id.timestamp.body``, keyed with the base64-decoded ``whsec_…`` secret;
- Standard Webhooks with ed25519 (format ``standard-webhooks-ed25519``): the same headers,
  ``webhook-signature: v1a,BASE64``, the ed25519 signature of ``id.timestamp.body``, verified
  with the webhook's public key ``whpk_<base64 of 32 bytes>``. This needs the
  ``cryptography`` package (``pip install 'herald-client[ed25519]'``); the HMAC formats do not.

Several signatures in one header (space-separated, as during a secret rotation) and
several secrets are all compared, HMACs each with :func:`hmac.compare_digest`. A timestamp
outside the tolerance is refused, so a captured request cannot be replayed later.
Verify the raw bytes, before any JSON parsing."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal, Union

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

Headers = Union[Mapping[str, str], Iterable[tuple[str, str]]]


class WebhookVerificationError(Exception):
    """The request is not a genuine, fresh Herald delivery. Answer it with 400 or 401."""


class MissingHeaderError(WebhookVerificationError):
    def __init__(self, header: str) -> None:
        super().__init__(f"missing header {header}")
        self.header = header


class MalformedHeaderError(WebhookVerificationError):
    def __init__(self, header: str) -> None:
        super().__init__(f"header {header} is malformed")
        self.header = header


class OutsideToleranceError(WebhookVerificationError):
    def __init__(self, skew_seconds: int, tolerance_seconds: int) -> None:
        super().__init__(
            f"timestamp is {skew_seconds}s away from now, beyond the {tolerance_seconds}s tolerance"
        )
        self.skew_seconds = skew_seconds
        self.tolerance_seconds = tolerance_seconds


class BadSignatureError(WebhookVerificationError):
    def __init__(self) -> None:
        super().__init__("no signature matches any of the secrets")


@dataclass(frozen=True)
class VerifiedWebhook:
    """A request that passed: dedupe on ``event_id``."""

    format: Literal["herald", "standard-webhooks", "standard-webhooks-ed25519"]
    #: ``X-Event-Id`` or ``webhook-id``.
    event_id: str
    #: Seconds since the Unix epoch, from the signed timestamp.
    timestamp: int


def herald_signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=HEX`` of HMAC-SHA256(secret's UTF-8 bytes, ``timestamp.body``)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def _standard_key(secret: str) -> bytes:
    encoded = secret.removeprefix("whsec_")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return secret.encode()


def standard_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,BASE64`` of HMAC-SHA256(decoded secret, ``id.timestamp.body``)."""
    mac = hmac.new(_standard_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def _is_ed25519_key(secret: str) -> bool:
    """A key of the ``standard-webhooks-ed25519`` format: verifies ``v1a`` only, never an HMAC."""
    return secret.startswith(("whpk_", "whsk_"))


def _canonical_b64(text: str) -> bytes | None:
    """Strict standard base64 (padded, no stray characters or trailing bits), as Herald's
    Rust SDK decodes it; ``None`` for anything else."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if base64.b64encode(raw).decode() == text else None


_NO_CRYPTOGRAPHY = (
    "verifying v1a (ed25519) signatures needs the cryptography package: "
    "pip install 'herald-client[ed25519]' (or pip install cryptography)"
)


def _ed25519_public_key(key: str) -> Ed25519PublicKey:
    """The key of a ``whpk_<base64 of 32 bytes>`` public key; ``ValueError`` for a malformed
    one, ``ImportError`` without the ``cryptography`` package."""
    if key.startswith("whsk_"):
        raise ValueError(
            "whsk_ is an ed25519 private key, which Herald never shows and a receiver never needs; "
            "verify with the webhook's public key (its public_key field, whpk_…)"
        )
    try:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    except ImportError as e:
        raise ImportError(_NO_CRYPTOGRAPHY) from e
    raw = _canonical_b64(key.removeprefix("whpk_"))
    if raw is None or len(raw) != 32:
        raise ValueError("an ed25519 public key is whpk_ followed by the base64 of 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def _ed25519_verifies(key: Ed25519PublicKey, msg_id: str, timestamp: int, body: bytes, header: str) -> bool:
    """Whether any of the space-separated ``v1a,BASE64`` values (others ignored) is the
    ed25519 signature of ``id.timestamp.body`` by ``key``."""
    from cryptography.exceptions import InvalidSignature

    content = f"{msg_id}.{timestamp}.".encode() + body
    found = False
    for candidate in header.split():
        if not candidate.startswith("v1a,"):
            continue
        sig = _canonical_b64(candidate[4:])
        if sig is None or len(sig) != 64:
            continue
        try:
            key.verify(sig, content)
            found = True
        except InvalidSignature:
            pass
    return found


def _lookup(headers: Headers) -> dict[str, str]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    found: dict[str, str] = {}
    for k, v in items:
        found.setdefault(k.lower(), v)
    return found


def _any_equal(header: str, expected: str) -> bool:
    """Every candidate is compared, each in constant time, so timing tells nothing."""
    found = False
    want = expected.encode()
    for candidate in header.split():
        found |= hmac.compare_digest(candidate.encode(), want)
    return found


class WebhookVerifier:
    """Verifies webhook requests against one or more secrets (several while you rotate),
    exactly as Herald showed them (``hsec_…`` or ``whsec_…``, or the ``whpk_…`` public key
    of a ``standard-webhooks-ed25519`` webhook).

    A ``whpk_`` key verifies ``v1a`` signatures only and never keys an HMAC: it is public, so
    anyone shown it could otherwise sign a request in the ``herald`` or ``v1`` format that
    passes. It needs the ``cryptography`` package (``ImportError`` here without it); a
    malformed one, or a ``whsk_`` private key, is a ``ValueError``."""

    def __init__(self, secrets: str | Sequence[str], *, tolerance: float = 300.0) -> None:
        self.secrets = [secrets] if isinstance(secrets, str) else list(secrets)
        if not self.secrets:
            raise ValueError("at least one secret is needed")
        # Parsed once; None for an HMAC secret.
        self._ed25519: list[Ed25519PublicKey | None] = [
            _ed25519_public_key(s) if _is_ed25519_key(s) else None for s in self.secrets
        ]
        # NaN would disable the replay check (no skew compares greater than NaN).
        if not isinstance(tolerance, (int, float)) or not math.isfinite(tolerance) or tolerance < 0:
            raise ValueError(f"tolerance must be a finite number of seconds, 0 or more: {tolerance!r}")
        self.tolerance = int(tolerance)

    def verify(self, headers: Headers, body: bytes, *, now: float | None = None) -> VerifiedWebhook:
        """Raises a :class:`WebhookVerificationError` unless the request is genuine and
        within the tolerance of ``now`` (default: the system clock). The format is chosen
        by the headers present. ``headers`` is any mapping (names matched case-insensitively,
        e.g. Flask's ``request.headers``) or a list of pairs."""
        h = _lookup(headers)
        at = int(time.time() if now is None else now)
        if "webhook-signature" in h:
            return self._standard(h, body, at)
        if "x-signature" in h:
            return self._herald(h, body, at)
        raise MissingHeaderError("X-Signature or webhook-signature")

    def _check_skew(self, timestamp: int, now: int) -> None:
        skew = now - timestamp
        if abs(skew) > self.tolerance:
            raise OutsideToleranceError(skew, self.tolerance)

    def _herald(self, h: dict[str, str], body: bytes, now: int) -> VerifiedWebhook:
        signature = h["x-signature"]
        ts_text = h.get("x-timestamp")
        if ts_text is None:
            raise MissingHeaderError("X-Timestamp")
        event_id = h.get("x-event-id")
        if event_id is None:
            raise MissingHeaderError("X-Event-Id")
        try:
            parsed = datetime.fromisoformat(ts_text.strip())
            if parsed.tzinfo is None:
                raise ValueError("no offset")
            ts = int(parsed.timestamp())
        except ValueError:
            raise MalformedHeaderError("X-Timestamp") from None
        self._check_skew(ts, now)
        matched = False
        for secret, key in zip(self.secrets, self._ed25519):
            if key is None:  # an ed25519 public key never keys an HMAC
                matched |= _any_equal(signature, herald_signature(secret, ts_text, body))
        if not matched:
            raise BadSignatureError()
        return VerifiedWebhook("herald", event_id, ts)

    def _standard(self, h: dict[str, str], body: bytes, now: int) -> VerifiedWebhook:
        signature = h["webhook-signature"]
        msg_id = h.get("webhook-id")
        if msg_id is None:
            raise MissingHeaderError("webhook-id")
        ts_text = h.get("webhook-timestamp")
        if ts_text is None:
            raise MissingHeaderError("webhook-timestamp")
        try:
            ts = int(ts_text.strip())
        except ValueError:
            raise MalformedHeaderError("webhook-timestamp") from None
        self._check_skew(ts, now)
        # Every secret is tried; the format is that of the first (in order) that matched.
        matched: Literal["standard-webhooks", "standard-webhooks-ed25519"] | None = None
        for secret, key in zip(self.secrets, self._ed25519):
            if key is None:
                ok = _any_equal(signature, standard_signature(secret, msg_id, ts, body))
                kind: Literal["standard-webhooks", "standard-webhooks-ed25519"] = "standard-webhooks"
            else:
                ok = _ed25519_verifies(key, msg_id, ts, body, signature)
                kind = "standard-webhooks-ed25519"
            if ok and matched is None:
                matched = kind
        if matched is None:
            raise BadSignatureError()
        return VerifiedWebhook(matched, msg_id, ts)


def verify_webhook(
    secrets: str | Sequence[str],
    headers: Headers,
    body: bytes,
    *,
    tolerance: float = 300.0,
    now: float | None = None,
) -> VerifiedWebhook:
    """The framework-agnostic one-call form of :meth:`WebhookVerifier.verify`."""
    return WebhookVerifier(secrets, tolerance=tolerance).verify(headers, body, now=now)
