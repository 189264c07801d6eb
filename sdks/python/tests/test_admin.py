"""The admin and producer side: tenants, keys, events, event types, typed errors."""

from __future__ import annotations

import uuid

import pytest

from herald_client import (
    AuthenticationError,
    Herald,
    IdempotencyKeyReusedError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
)

from .conftest import Server, TenantKit


def test_tenants_and_keys(herald: Server, admin: Herald) -> None:
    t = admin.create_tenant("acme")
    assert t["id"].startswith("tnt_") and t["name"] == "acme"
    assert admin.get_tenant(t["id"])["name"] == "acme"
    key = admin.create_tenant_key(t["id"])
    assert key["key"].startswith("hrk_") and key["role"] == "tenant"
    own = Herald(herald.url, key["key"])
    assert own.get_tenant(t["id"])["id"] == t["id"]

    worker = admin.create_key("worker", types=["transcode"], tenants=[t["id"]])
    assert worker["role"] == "worker" and worker["types"] == ["transcode"] and worker["tenants"] == [t["id"]]

    # Another tenant's id answers 404, never 403, as problem details.
    other = admin.create_tenant("other")
    with pytest.raises(NotFoundError) as e:
        own.get_tenant(other["id"])
    assert e.value.status == 404 and e.value.code == "NOT_FOUND"
    assert e.value.problem["status"] == 404 and e.value.title

    # A tenant key may not mint keys; a revoked key stops working.
    with pytest.raises(PermissionDeniedError):
        own.create_tenant_key(t["id"])
    admin.revoke_key(key["id"])
    with pytest.raises(AuthenticationError) as e2:
        own.get_tenant(t["id"])
    assert e2.value.code == "UNAUTHENTICATED"


def test_publish_is_idempotent_and_numbered_per_key(admin: Herald, tenant: TenantKit) -> None:
    order = "order-" + uuid.uuid4().hex[:6]
    first = admin.publish("order.paid", {"n": 1}, tenant=tenant.id, key=order, idempotency_key="pub-" + order)
    again = admin.publish("order.paid", {"n": 1}, tenant=tenant.id, key=order, idempotency_key="pub-" + order)
    assert again == first and first["sequence"] == 1
    second = admin.publish("order.paid", {"n": 2}, tenant=tenant.id, key=order)
    assert second["sequence"] == 2
    with pytest.raises(IdempotencyKeyReusedError) as e:
        admin.publish("order.paid", {"n": 3}, tenant=tenant.id, key=order, idempotency_key="pub-" + order)
    assert e.value.code == "IDEMPOTENCY_KEY_REUSED" and e.value.status == 422

    # The producer's own event id dedupes too.
    evt = "evt_01" + uuid.uuid4().hex[:24].upper()  # a ULID: hex digits are Crockford base32
    a = admin.publish("order.shipped", {"x": 1}, id=evt, tenant=tenant.id)
    assert admin.publish("order.shipped", {"x": 1}, id=evt, tenant=tenant.id) == a

    # The tenant reads its history, page by page.
    page = tenant.client.list_events(key=order, page_size=1)
    assert len(page.items) == 1 and page.next_page_token
    history = list(tenant.client.iter_events(key=order, page_size=1))
    assert [e["data"]["n"] for e in history] == [1, 2]
    assert [e["sequence"] for e in history] == [1, 2]
    assert tenant.client.get_event(first["id"])["type"] == "order.paid"


def test_event_types_validate_data(admin: Herald, tenant: TenantKit) -> None:
    name = "payment.succeeded." + uuid.uuid4().hex[:6]
    registered = admin.put_event_type(name, {"type": "object", "required": ["payment_id"]})
    assert registered["name"] == name
    assert name in [t["name"] for t in admin.list_event_types()]
    with pytest.raises(InvalidRequestError) as e:
        admin.publish(name, {"amount": 5}, tenant=tenant.id)
    assert e.value.code == "SCHEMA_VIOLATION"
    assert admin.publish(name, {"payment_id": "p1"}, tenant=tenant.id)["id"].startswith("evt_")


def test_bad_input_is_a_typed_error_with_the_problem(admin: Herald) -> None:
    with pytest.raises(InvalidRequestError) as e:
        admin.create_webhook("not a url", ["*"])
    assert e.value.code == "INVALID_REQUEST" and e.value.detail
    assert e.value.problem["code"] == "INVALID_REQUEST"
    with pytest.raises(AuthenticationError):
        Herald(admin.base_url, "hrk_wrong").list_event_types()
