"""The operation side: trigger, get with Retry-After, wait (polling and :wait), cancel,
idempotency, and the worker calls with their typed errors."""

from __future__ import annotations

import threading
import uuid

import pytest

from herald_client import Herald, LeaseStaleError, OperationDoneError, WaitTimeoutError, operation_id

from .conftest import TenantKit


def test_trigger_is_idempotent_and_get_gives_retry_after(tenant: TenantKit) -> None:
    key = "upload-" + uuid.uuid4().hex
    op = tenant.client.trigger("/videos", {"source_url": "s3://a.mp4"}, idempotency_key=key)
    assert op["done"] is False and op["metadata"]["type"] == "transcode"
    again = tenant.client.trigger("/videos", {"source_url": "s3://a.mp4"}, idempotency_key=key)
    assert again["name"] == op["name"]
    got, hint = tenant.client.get_operation_with_hint(op["name"])
    assert got["name"] == op["name"] and hint == 1.0  # the type's retry_after = "1s"
    listed = tenant.client.list_operations(type="transcode", done=False)
    assert op["name"] in [o["name"] for o in listed.items]


def test_wait_polls_until_a_worker_completes(tenant: TenantKit) -> None:
    op = tenant.client.trigger("/videos", {"source_url": "s3://b.mp4"})
    claimed = tenant.worker.claim(["transcode"], wait=10)
    assert [operation_id(c) for c in claimed] == [operation_id(op)]
    c = claimed[0]
    assert c["attempt"] == 1 and c["input"] == {"source_url": "s3://b.mp4"}
    beat = tenant.worker.heartbeat(c["name"], c["lease_token"], metadata={"progress_percent": 40})
    assert beat["cancel_requested"] is False
    assert tenant.client.get_operation(op["name"])["metadata"]["progress_percent"] == 40
    with pytest.raises(LeaseStaleError) as stale:
        tenant.worker.complete(c["name"], "lt_01" + "0" * 24, {})
    assert stale.value.code == "LEASE_STALE" and stale.value.status == 409

    # The poller sleeps Retry-After (1 s) between polls; the worker completes meanwhile.
    started = threading.Event()

    def finish() -> None:
        started.wait()
        tenant.worker.complete(c["name"], c["lease_token"], {"duration_seconds": 832})

    t = threading.Thread(target=finish)
    t.start()
    started.set()
    done = tenant.client.wait(op["name"], timeout=60)
    t.join()
    assert done["done"] is True and done["response"] == {"duration_seconds": 832}
    # Cancelling a finished operation changes nothing.
    assert tenant.client.cancel(op["name"])["response"] == {"duration_seconds": 832}
    with pytest.raises(OperationDoneError):
        tenant.worker.complete(c["name"], c["lease_token"], {"again": True})


def test_wait_long_poll_and_wait_timeout(tenant: TenantKit) -> None:
    op = tenant.client.trigger("/videos", {"source_url": "s3://c.mp4"})
    # Nobody works on it: the long poll answers the latest state at its timeout.
    latest = tenant.client.wait_long_poll(op["name"], timeout=1)
    assert latest["done"] is False
    with pytest.raises(WaitTimeoutError) as e:
        tenant.client.wait(op["name"], timeout=1.5)
    assert e.value.operation is not None and e.value.operation["name"] == op["name"]

    # :wait returns as soon as it is done (here: cancelled before any worker started it).
    result: dict[str, object] = {}
    t = threading.Thread(target=lambda: result.update(tenant.client.wait_long_poll(op["name"], timeout=30)))
    t.start()
    cancelled = tenant.client.cancel(op["name"])
    t.join()
    assert cancelled["done"] is True and cancelled["error"]["code"] == "CANCELLED"
    assert result["done"] is True


def test_fail_retryable_requeues_and_final_fail_ends(tenant: TenantKit, admin: Herald) -> None:
    op = admin.create_operation("transcode", tenant=tenant.id, input={"n": 1}, metadata={"video_id": "v1"})
    c = tenant.worker.claim(["transcode"], wait=10)[0]
    again = tenant.worker.fail(c["name"], c["lease_token"], {"code": "FLAKY", "message": "try again"}, retryable=True)
    assert again["done"] is False
    c2 = tenant.worker.claim(["transcode"], wait=10)[0]
    assert c2["name"] == op["name"] and c2["attempt"] == 2
    final = tenant.worker.fail(c2["name"], c2["lease_token"], {"code": "SOURCE_UNREACHABLE", "message": "404"})
    assert final["done"] is True and final["error"] == {"code": "SOURCE_UNREACHABLE", "message": "404"}
    tenant.client.delete_operation(op["name"])
    from herald_client import NotFoundError

    with pytest.raises(NotFoundError):
        tenant.client.get_operation(op["name"])
