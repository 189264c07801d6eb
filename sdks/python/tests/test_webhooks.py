"""Webhooks end to end: CRUD, real deliveries verified in every format (ed25519 too), tampered
and stale ones refused, both secrets during a rotation's grace, redelivery and replay deduped."""

from __future__ import annotations

import datetime
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from herald_client import (
    BadSignatureError,
    Delivery,
    DeliveryInFlightError,
    DeliverySucceededError,
    Herald,
    MemoryDedupe,
    MissingHeaderError,
    NotFoundError,
    OutsideToleranceError,
    SqliteDedupe,
    WebhookVerifier,
    herald_signature,
    standard_signature,
    verify_webhook,
)

from .conftest import Receiver, Server, TenantKit

T = TypeVar("T")


def eventually(what: str, probe: Callable[[], T | None], timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = probe()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what}")


def test_signature_vectors() -> None:
    # The independent vector of herald-core, and the Standard Webhooks specification's example.
    assert (
        herald_signature("hsec_test", "2026-04-10T15:20:00Z", b'{"id":"evt_1"}')
        == "sha256=d58f2414b42865f14d6c748e6a5978b570470c07997a86f563f3ba139db30aaa"
    )
    body = b'{"test": 2432232314}'
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    assert standard_signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == (
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,bm9ldHZhbGlk v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    assert verify_webhook(secret, headers, body, now=1614265330).event_id == "msg_p5jXN8AQM9LWM0D4loKWxJek"
    with pytest.raises(BadSignatureError):
        verify_webhook(secret, headers, b'{"test": 1}', now=1614265330)
    with pytest.raises(OutsideToleranceError):
        verify_webhook(secret, headers, body, now=1614265330 + 3600)
    with pytest.raises(MissingHeaderError):
        verify_webhook(secret, {}, body)


def test_webhook_crud(tenant: TenantKit, receiver: Receiver) -> None:
    hook = tenant.client.create_webhook(receiver.url, ["order.*"], description="orders")
    assert hook["signing_secret"].startswith("hsec_") and hook["format"] == "herald"
    got = tenant.client.get_webhook(hook["id"])
    assert "signing_secret" not in got and got["url"] == receiver.url
    assert hook["id"] in [h["id"] for h in tenant.client.iter_webhooks()]
    assert tenant.client.update_webhook(hook["id"], description="all orders")["description"] == "all orders"
    assert tenant.client.disable_webhook(hook["id"])["disabled"] is True
    assert tenant.client.enable_webhook(hook["id"])["disabled"] is False
    tenant.client.delete_webhook(hook["id"])
    with pytest.raises(NotFoundError):
        tenant.client.get_webhook(hook["id"])


def test_real_deliveries_verify_and_tampered_ones_do_not(admin: Herald, tenant: TenantKit, receiver: Receiver) -> None:
    hook = tenant.client.create_webhook(receiver.url, ["order.*"])
    secret = hook["signing_secret"]
    published = admin.publish("order.paid", {"order": 7}, tenant=tenant.id)
    got = receiver.next()
    verifier = WebhookVerifier(secret)
    verified = verifier.verify(got.headers, got.body)
    assert verified.format == "herald" and verified.event_id == published["id"]

    with pytest.raises(BadSignatureError):
        verifier.verify(got.headers, got.body.replace(b"7", b"8"))
    with pytest.raises(BadSignatureError):
        WebhookVerifier("hsec_someone_else").verify(got.headers, got.body)
    with pytest.raises(OutsideToleranceError):
        verifier.verify(got.headers, got.body, now=verified.timestamp + 301)
    with pytest.raises(OutsideToleranceError):
        verifier.verify(got.headers, got.body, now=verified.timestamp - 301)
    assert verifier.verify(got.headers, got.body, now=verified.timestamp + 300).event_id == published["id"]
    # A replayed capture with a fresh timestamp does not carry a valid signature.
    moved = {k: v for k, v in got.headers.items() if k.lower() != "x-timestamp"}
    moved["X-Timestamp"] = "2030-01-01T00:00:00Z"
    with pytest.raises(BadSignatureError):
        verifier.verify(moved, got.body, now=1893456000)


def test_standard_webhooks_deliveries_verify(admin: Herald, tenant: TenantKit, receiver: Receiver) -> None:
    hook = tenant.client.create_webhook(receiver.url, ["order.*"], format="standard-webhooks")
    assert hook["signing_secret"].startswith("whsec_")
    published = admin.publish("order.paid", {"order": 8}, tenant=tenant.id)
    got = receiver.next()
    verified = verify_webhook(hook["signing_secret"], got.headers, got.body)
    assert verified.format == "standard-webhooks" and verified.event_id == published["id"]
    with pytest.raises(BadSignatureError):
        verify_webhook(hook["signing_secret"], got.headers, got.body + b" ")
    with pytest.raises(OutsideToleranceError):
        verify_webhook(hook["signing_secret"], got.headers, got.body, now=verified.timestamp + 301)


def test_ed25519_deliveries_verify_with_the_public_key(admin: Herald, tenant: TenantKit, receiver: Receiver) -> None:
    hook = tenant.client.create_webhook(receiver.url, ["order.*"], format="standard-webhooks-ed25519")
    assert "signing_secret" not in hook  # the private key never leaves Herald
    public = hook.get("public_key")
    assert public is not None and public.startswith("whpk_")
    published = admin.publish("order.paid", {"order": 12}, tenant=tenant.id)
    got = receiver.next()
    assert got.headers["webhook-signature"].startswith("v1a,")
    verifier = WebhookVerifier(public)
    verified = verifier.verify(got.headers, got.body)
    assert verified.format == "standard-webhooks-ed25519" and verified.event_id == published["id"]
    with pytest.raises(BadSignatureError):
        verifier.verify(got.headers, got.body.replace(b"12", b"13"))
    with pytest.raises(OutsideToleranceError):
        verifier.verify(got.headers, got.body, now=verified.timestamp + 301)
    # Anyone shown the public key cannot sign a v1 request with it that passes.
    forged = {**got.headers, "webhook-signature": standard_signature(public, verified.event_id, verified.timestamp, got.body)}
    with pytest.raises(BadSignatureError):
        verifier.verify(forged, got.body)

    # A rotation: both keys sign during the grace; either verifies.
    rotated = tenant.client.rotate_webhook_secret(hook["id"], grace="1h")
    new = rotated.get("public_key")
    assert new is not None and new != public and rotated.get("previous_public_key") == public
    admin.publish("order.paid", {"order": 13}, tenant=tenant.id)
    got = receiver.next()
    assert [v[:4] for v in got.headers["webhook-signature"].split()] == ["v1a,", "v1a,"]
    for keys in ([public], [new], [new, public]):
        assert WebhookVerifier(keys).verify(got.headers, got.body).format == "standard-webhooks-ed25519"
    other = tenant.client.create_webhook(receiver.url + "/other", ["nothing.*"], format="standard-webhooks-ed25519")
    assert other.get("public_key") not in (None, public, new)
    with pytest.raises(BadSignatureError):
        WebhookVerifier(str(other.get("public_key"))).verify(got.headers, got.body)


def test_both_secrets_sign_during_a_rotation(admin: Herald, tenant: TenantKit, receiver: Receiver) -> None:
    hook = tenant.client.create_webhook(receiver.url, ["order.*"])
    old = hook["signing_secret"]
    rotated = tenant.client.rotate_webhook_secret(hook["id"], grace="1h")
    new = rotated["signing_secret"]
    assert new != old and rotated["signing_secret_version"] == hook["signing_secret_version"] + 1
    admin.publish("order.paid", {"order": 9}, tenant=tenant.id)
    got = receiver.next()
    assert len(got.headers["x-signature"].split()) == 2
    for secrets in ([old], [new], [new, old]):
        assert WebhookVerifier(secrets).verify(got.headers, got.body).format == "herald"
    with pytest.raises(BadSignatureError):
        WebhookVerifier(["hsec_neither"]).verify(got.headers, got.body)


def test_deliveries_redeliver_and_replay_are_deduped(
    admin: Herald, tenant: TenantKit, receiver: Receiver, tmp_path: object
) -> None:
    hook = tenant.client.create_webhook(receiver.url, ["order.*"])
    verifier = WebhookVerifier(hook["signing_secret"])
    dedupe = MemoryDedupe(100)
    applied: list[str] = []

    def consume() -> None:
        got = receiver.next()
        event_id = verifier.verify(got.headers, got.body).event_id
        if dedupe.first_time(event_id):
            applied.append(event_id)

    published = admin.publish("order.paid", {"order": 10}, tenant=tenant.id)
    consume()

    def succeeded() -> Delivery | None:
        page = tenant.client.list_deliveries(webhook=hook["id"])
        return next((d for d in page.items if d["status"] == "succeeded"), None)

    delivery = eventually("the delivery to succeed", succeeded)
    assert delivery["event_id"] == published["id"]
    detail = tenant.client.get_delivery(delivery["id"])
    assert detail["attempt_log"][0]["status_code"] == 200

    tenant.client.redeliver(delivery["id"])
    consume()

    # The redelivery's success is recorded after the receiver answered: replay once it is.
    def recorded() -> bool | None:
        d = tenant.client.get_delivery(delivery["id"])
        return (d["attempts"] >= 2 and d["status"] == "succeeded") or None

    eventually("the redelivery to be recorded", recorded)
    replay = tenant.client.replay_webhook(hook["id"], status="succeeded")
    assert replay["replayed"] == 1 and replay["done"] is True
    consume()
    assert applied == [published["id"]], "the redelivery and the replay were applied again"
    assert len(dedupe) == 1

    # The SQLite store dedupes across instances (a restart).
    path = str(tmp_path) + "/seen.db"  # type: ignore[operator]
    s1 = SqliteDedupe(path)
    assert s1.first_time(published["id"]) and not s1.first_time(published["id"])
    s1.close()
    s2 = SqliteDedupe(path)
    assert not s2.first_time(published["id"])
    s2.forget(published["id"])
    assert s2.first_time(published["id"])
    s2.close()


def test_the_flask_example_receives_a_real_delivery(admin: Herald, tenant: TenantKit) -> None:
    from werkzeug.serving import make_server

    from examples.flask_receiver import create_app

    applied: list[dict[str, object]] = []
    hook_holder: dict[str, str] = {}
    app = create_app(lambda: [hook_holder["secret"]], MemoryDedupe(), applied.append)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/hooks/herald"
        hook = tenant.client.create_webhook(url, ["order.*"])
        hook_holder["secret"] = hook["signing_secret"]
        published = admin.publish("order.paid", {"order": 11}, tenant=tenant.id)

        def succeeded() -> Delivery | None:
            return next((d for d in tenant.client.list_deliveries(webhook=hook["id"]).items if d["status"] == "succeeded"), None)

        delivery = eventually("the example to answer 2xx", succeeded)
        tenant.client.redeliver(delivery["id"])

        def redelivered() -> bool | None:
            d = tenant.client.get_delivery(delivery["id"])
            return (d["attempts"] >= 2 and d["status"] == "succeeded") or None

        eventually("the redelivery to succeed", redelivered)
        assert [e["id"] for e in applied] == [published["id"]]
        # Unsigned requests are refused by the example.
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(urllib.request.Request(url, data=b"{}", method="POST"))
        assert e.value.code == 400
    finally:
        server.shutdown()


def test_an_ordered_webhook_holds_a_key_behind_its_failing_head_until_skipped(
    admin: Herald, tenant: TenantKit, receiver: Receiver
) -> None:
    hook = tenant.client.create_webhook(receiver.url, ["order.*"], ordering="key")
    assert hook["ordering"] == "key"
    verifier = WebhookVerifier(hook["signing_secret"])
    key = "order-" + uuid.uuid4().hex[:8]
    first_id = "evt_01" + uuid.uuid4().hex[:24].upper()
    receiver.fail_events.add(first_id)  # the head of the line keeps failing
    admin.publish("order.created", {"n": 1}, id=first_id, tenant=tenant.id, key=key)
    second = admin.publish("order.paid", {"n": 2}, tenant=tenant.id, key=key)

    def by_event(event_id: str) -> Delivery | None:
        return next((d for d in tenant.client.iter_deliveries(webhook=hook["id"]) if d["event_id"] == event_id), None)

    head = eventually("the head's delivery", lambda: by_event(first_id))
    held = eventually("the second to be held by the head", lambda: (d := by_event(second["id"])) and d.get("held_by") == head["id"] and d)
    assert held["status"] == "pending" and held["sequence"] == 2

    # Not while its attempt is in flight (the next would go beside it): then again.
    def skip() -> Delivery | None:
        try:
            return tenant.client.skip_delivery(head["id"])
        except DeliveryInFlightError:
            return None

    skipped = eventually("the head to be skipped", skip)
    assert skipped["status"] == "skipped"
    # Released: the second event of the key arrives now (the head's failed tries came before it).
    while True:
        got = receiver.next()
        if verifier.verify(got.headers, got.body).event_id == second["id"]:
            break
    done = eventually("the second to be recorded", lambda: (d := by_event(second["id"])) and d["status"] == "succeeded" and d)
    with pytest.raises(DeliverySucceededError) as e:
        tenant.client.skip_delivery(done["id"])
    assert e.value.code == "DELIVERY_SUCCEEDED" and e.value.status == 409
    assert [d["id"] for d in tenant.client.list_deliveries(webhook=hook["id"], status="skipped").items] == [head["id"]]


def test_the_flask_example_answers_409_to_a_copy_arriving_during_an_apply_and_keeps_a_failed_one() -> None:
    from examples.flask_receiver import create_app

    from herald_client.verify import herald_signature

    secret = "hsec_" + "ab" * 16
    started = threading.Event()
    go_on = threading.Event()
    applied: list[str] = []
    fail_next = [True]

    def apply(event: dict[str, Any]) -> None:
        started.set()
        assert go_on.wait(10)
        if fail_next[0]:
            fail_next[0] = False
            raise RuntimeError("the database is down")
        applied.append(str(event["id"]))

    app = create_app(lambda: [secret], MemoryDedupe(), apply)
    app.config["PROPAGATE_EXCEPTIONS"] = False  # a failed apply answers 500, as in production
    body = json.dumps({"id": "evt_1", "type": "order.paid", "data": {}}).encode()

    def post() -> Any:
        ts = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        headers = {"X-Signature": herald_signature(secret, ts, body), "X-Timestamp": ts, "X-Event-Id": "evt_1"}
        return app.test_client().post("/hooks/herald", data=body, headers=headers)

    first: list[Any] = []
    t = threading.Thread(target=lambda: first.append(post()))
    t.start()
    assert started.wait(10)
    during = post()  # a retry arriving while the first apply runs
    assert during.status_code == 409 and during.headers["Retry-After"] == "1"
    go_on.set()
    t.join(10)
    assert first[0].status_code == 500 and applied == []  # the first apply failed: not seen
    again = post()  # Herald's retry
    assert again.status_code == 204 and applied == ["evt_1"]
    assert post().status_code == 204 and applied == ["evt_1"]  # now a duplicate
