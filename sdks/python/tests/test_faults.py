"""Faults a real Herald cannot produce on demand, against small local HTTP servers (a body cut
short, a garbled status line, a redirect), and the worker's behaviour when a handler or a
heartbeat goes wrong in ways other than a clean exception."""

from __future__ import annotations

import http.server
import math
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from herald_client import Herald, Job, Worker
from herald_client.errors import HeraldError, TransportError
from herald_client.verify import WebhookVerifier

from .conftest import TenantKit


class RawServer:
    """A TCP server on loopback whose every connection is handed to ``serve(conn, request)``."""

    def __init__(self, serve: Callable[[socket.socket, bytes], None]) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.serve = serve
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                self.serve(conn, data)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw() -> Iterator[Callable[[Callable[[socket.socket, bytes], None]], RawServer]]:
    servers: list[RawServer] = []

    def make(serve: Callable[[socket.socket, bytes], None]) -> RawServer:
        s = RawServer(serve)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


def test_a_body_cut_short_is_a_transport_error(raw: Any) -> None:
    def serve(conn: socket.socket, _: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"name\":")
        conn.shutdown(socket.SHUT_RDWR)

    s = raw(serve)
    with pytest.raises(TransportError):
        Herald(s.url, "k", timeout=5).get_tenant("ten_1")


def test_a_garbled_status_line_is_a_transport_error(raw: Any) -> None:
    s = raw(lambda conn, _: conn.sendall(b"NOT HTTP AT ALL\r\n\r\n"))
    with pytest.raises(TransportError):
        Herald(s.url, "k", timeout=5).get_tenant("ten_1")


def test_a_body_that_is_not_json_is_refused_before_sending(raw: Any) -> None:
    hits: list[bytes] = []

    def serve(conn: socket.socket, req: bytes) -> None:
        hits.append(req)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")

    s = raw(serve)
    with pytest.raises(TypeError, match="JSON"):
        Herald(s.url, "k", timeout=5).publish("order.created", {1, 2})
    assert hits == []


def test_a_redirect_is_not_followed_and_the_key_is_not_forwarded() -> None:
    seen: list[dict[str, str]] = []

    class Target(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            seen.append(dict(self.headers.items()))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        do_POST = do_GET

        def log_message(self, *args: Any) -> None:
            pass

    target = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Target)
    where = f"http://127.0.0.1:{target.server_address[1]}/elsewhere"

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.send_response(302)
            self.send_header("Location", where)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST

        def log_message(self, *args: Any) -> None:
            pass

    redirect = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    for srv in (target, redirect):
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        client = Herald(f"http://127.0.0.1:{redirect.server_address[1]}", "secret-key", timeout=5)
        with pytest.raises(HeraldError, match="elsewhere"):
            client.create_tenant("x")
        with pytest.raises(HeraldError, match="elsewhere"):
            client.get_tenant("ten_1")
        assert seen == []
    finally:
        for srv in (target, redirect):
            srv.shutdown()
            srv.server_close()


@pytest.mark.parametrize("key", ["whpk_AAAA", "whsk_AAAA"])
def test_a_malformed_public_key_or_a_private_key_is_refused(key: str) -> None:
    # A well-formed whpk_ key verifies v1a signatures and never keys an HMAC (test_ed25519.py).
    with pytest.raises(ValueError):
        WebhookVerifier(key)
    with pytest.raises(ValueError):
        WebhookVerifier(["whsec_x", key])


@pytest.mark.parametrize("tolerance", [math.nan, math.inf, -1.0])
def test_a_tolerance_that_is_not_a_finite_non_negative_number_is_refused(tolerance: float) -> None:
    with pytest.raises(ValueError):
        WebhookVerifier("whsec_x", tolerance=tolerance)


@pytest.mark.parametrize("bad", [".", "..", ""])
def test_ids_that_would_change_the_path_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        Herald("http://127.0.0.1:9", "k").create_tenant_key(bad)


class Escape(BaseException):
    """Like SystemExit or a test framework's failure: not an Exception."""


def test_a_handler_raising_a_base_exception_releases_its_slot_and_stops_beating(tenant: TenantKit) -> None:
    attempts: list[int] = []
    errors: list[BaseException | None] = []
    old_hook = threading.excepthook
    threading.excepthook = lambda args: errors.append(args.exc_value)

    def handler(job: Job) -> Any:
        attempts.append(job.attempt)
        if job.attempt == 1:
            raise Escape("out")
        return {"ok": True}

    worker = Worker(tenant.worker, handler, types=["transcode"], claim_wait=1, heartbeat_every=0.2, concurrency=1)
    t = threading.Thread(target=worker.run, daemon=True)
    t.start()
    try:
        op = tenant.client.trigger("/videos", {"n": 1})
        done = tenant.client.wait(op["name"], timeout=20)
        assert done["response"] == {"ok": True}
        assert attempts == [1, 2]
        assert any(isinstance(e, Escape) for e in errors)  # re-raised after the cleanup
    finally:
        worker.stop()
        t.join(10)
        threading.excepthook = old_hook


def test_a_response_that_is_not_json_fails_the_operation_for_good(tenant: TenantKit) -> None:
    attempts: list[int] = []

    def handler(job: Job) -> Any:
        attempts.append(job.attempt)
        return {1, 2}

    worker = Worker(tenant.worker, handler, types=["transcode"], claim_wait=1, heartbeat_every=0.2)
    t = threading.Thread(target=worker.run, daemon=True)
    t.start()
    try:
        op = tenant.client.trigger("/videos", {"n": 1})
        done = tenant.client.wait(op["name"], timeout=20)
        assert done["error"]["code"] == "RESPONSE_NOT_JSON"
        time.sleep(1.5)  # the type's retry_after is 1s: a retryable failure would run again
        assert attempts == [1]
    finally:
        worker.stop()
        t.join(10)


def test_metadata_that_is_not_json_is_refused_when_set(tenant: TenantKit) -> None:
    from herald_client.worker import Job as J

    job = J({"name": "operations/op_1", "lease_token": "t", "attempt": 1, "input": None, "metadata": {}})  # type: ignore[typeddict-item]
    with pytest.raises(TypeError):
        job.set_metadata("bad", {1, 2})


class FlakyHeartbeat(Herald):
    """The real client, whose first heartbeat fails with an error that is not a HeraldError."""

    def __init__(self, inner: Herald) -> None:
        super().__init__(inner.base_url, inner._key, timeout=inner.timeout)
        self.beats = 0

    def heartbeat(self, *args: Any, **kw: Any) -> Any:
        self.beats += 1
        if self.beats == 1:
            raise RuntimeError("a bug in a proxy layer")
        return super().heartbeat(*args, **kw)


def test_the_heartbeat_survives_an_unexpected_error(tenant: TenantKit) -> None:
    client = FlakyHeartbeat(tenant.worker)
    attempts: list[int] = []

    def handler(job: Job) -> Any:
        attempts.append(job.attempt)
        time.sleep(4)  # twice the 2s lease: only later heartbeats keep it
        return {"ok": True}

    worker = Worker(client, handler, types=["transcode"], claim_wait=1, heartbeat_every=0.3)
    t = threading.Thread(target=worker.run, daemon=True)
    t.start()
    try:
        op = tenant.client.trigger("/videos", {"n": 1})
        done = tenant.client.wait(op["name"], timeout=30)
        assert done["response"] == {"ok": True} and attempts == [1]
        assert client.beats > 2
    finally:
        worker.stop()
        t.join(10)


class FlakyClaim(Herald):
    def __init__(self, inner: Herald) -> None:
        super().__init__(inner.base_url, inner._key, timeout=inner.timeout)
        self.claims = 0

    def claim(self, *args: Any, **kw: Any) -> Any:
        self.claims += 1
        if self.claims == 1:
            raise RuntimeError("unexpected")
        return super().claim(*args, **kw)


def test_run_survives_an_unexpected_claim_error(tenant: TenantKit) -> None:
    client = FlakyClaim(tenant.worker)
    worker = Worker(client, lambda job: {"ok": True}, types=["transcode"], claim_wait=1, heartbeat_every=0.3)
    t = threading.Thread(target=worker.run, daemon=True)
    t.start()
    try:
        op = tenant.client.trigger("/videos", {"n": 1})
        done = tenant.client.wait(op["name"], timeout=20)
        assert done["response"] == {"ok": True}
    finally:
        worker.stop()
        t.join(10)


def _reply(conn: socket.socket, status: str, body: bytes = b"") -> None:
    conn.sendall(f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)


def test_wait_rides_out_a_gateway_error_and_a_dropped_connection(raw: Any) -> None:
    answers = iter(["502", "drop", "504", "done"])

    def serve(conn: socket.socket, _: bytes) -> None:
        what = next(answers)
        if what == "drop":
            conn.shutdown(socket.SHUT_RDWR)  # no answer at all
        elif what == "done":
            _reply(conn, "200 OK", b'{"name": "operations/op_1", "done": true, "response": 7}')
        else:
            _reply(conn, f"{what} Bad Gateway")  # a proxy's answer: no problem body, no code

    s = raw(serve)
    op = Herald(s.url, "k", timeout=5).wait("op_1", timeout=10, initial_backoff=0.05)
    assert op["response"] == 7


def test_list_event_types_follows_next_page_token(raw: Any) -> None:
    def serve(conn: socket.socket, req: bytes) -> None:
        line = req.split(b"\r\n", 1)[0].decode()
        if "page_token=p2" in line:
            _reply(conn, "200 OK", b'{"event_types": [{"name": "b"}], "next_page_token": ""}')
        else:
            _reply(conn, "200 OK", b'{"event_types": [{"name": "a"}], "next_page_token": "p2"}')

    s = raw(serve)
    assert [t["name"] for t in Herald(s.url, "k", timeout=5).list_event_types()] == ["a", "b"]
