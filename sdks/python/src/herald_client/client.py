"""The HTTP client: one :class:`Herald` per base URL and key, with a typed method per
route of the API (docs/api.md). Standard library only (``urllib``)."""

from __future__ import annotations

import email.utils
import http.client
import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar, cast

from . import __version__
from ._types import (
    ClaimedOperation,
    Delivery,
    Event,
    EventAccepted,
    EventType,
    HeartbeatReply,
    Key,
    Operation,
    OperationError,
    Tenant,
    Webhook,
)
from .errors import ApiError, DecodeError, TransportError, UnavailableError, RateLimitedError, WaitTimeoutError, api_error

T = TypeVar("T")

WebhookFormat = Literal["herald", "standard-webhooks", "standard-webhooks-ed25519"]
WebhookOrdering = Literal["none", "key"]
ReplayStatus = Literal["failed", "succeeded", "pending", "skipped", "all"]
DeliveryStatus = Literal["pending", "succeeded", "failed", "skipped"]


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list: ``items`` and the token of the next page (``""`` on the last)."""

    items: list[T]
    next_page_token: str


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: Any


def duration(seconds: float) -> str:
    """Seconds as a Herald duration string (``"1500ms"``)."""
    return f"{max(0, round(seconds * 1000))}ms"


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number of seconds, or an HTTP date."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def operation_id(operation: str | Mapping[str, Any]) -> str:
    """``op_…`` from an id, a name ``operations/op_…`` or an Operation."""
    name = operation if isinstance(operation, str) else str(operation["name"])
    return name.removeprefix("operations/")


def _path(*parts: str) -> str:
    """Path segments, each percent-encoded. An empty segment, ``.`` or ``..`` (which URL
    resolution collapses, so ``create_tenant_key("..")`` would POST to ``/keys``) raises
    ValueError before anything is sent."""
    for p in parts:
        if p in ("", ".", ".."):
            raise ValueError(f"not a valid id for a URL path segment: {p!r}")
    return "/".join(urllib.parse.quote(p, safe="") for p in parts)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Herald never redirects; following one would forward the key (and turn a POST into a
    GET). A 3xx is answered as an error naming its Location."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def _drop_none(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


class Herald:
    """A handle on one Herald with one key (admin, tenant or worker).

    Thread-safe: each call opens its own connection. ``timeout`` is the socket timeout
    in seconds; long polls (``claim``, ``wait_long_poll``) add their own wait to it."""

    def __init__(self, base_url: str, key: str, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._key = key
        self.timeout = timeout

    # -- transport ---------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> Answer:
        """One request; a non-2xx answer raises the :class:`ApiError` for its ``code``."""
        url = self.base_url + path
        if query:
            q = {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in query.items() if v is not None}
            if q:
                url += "?" + urllib.parse.urlencode(q)
        headers = {
            "Authorization": f"Bearer {self._key}",
            "Accept": "application/json",
            "User-Agent": f"herald-client-python/{__version__}",
        }
        data = None
        if body is not None:
            try:
                data = json.dumps(body, allow_nan=False).encode()
            except (TypeError, ValueError) as e:
                raise TypeError(f"{method} {path}: the request body is not JSON-serialisable: {e}") from e
            headers["Content-Type"] = "application/json"
        elif method == "POST":
            data = b""
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with _opener.open(req, timeout=timeout or self.timeout) as resp:
                status, resp_headers, raw = resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as e:
            try:
                raw = e.read()
            except (http.client.HTTPException, OSError) as read_error:
                raise TransportError(f"{method} {url}: {e.code} with a body cut short: {read_error}") from read_error
            finally:
                e.close()
            if 300 <= e.code < 400:
                raise TransportError(f"{method} {url}: redirected ({e.code}) to {e.headers.get('Location')!r}; not followed") from None
            answer = self._answer(e.code, e.headers, raw, strict=False)
            raise api_error(e.code, answer.body, parse_retry_after(e.headers.get("Retry-After"))) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            # URLError, socket.timeout, ConnectionError and ssl.SSLError are OSErrors;
            # IncompleteRead, BadStatusLine and LineTooLong are HTTPExceptions.
            raise TransportError(f"{method} {url}: {type(e).__name__}: {e}") from e
        if 300 <= status < 400:
            raise TransportError(f"{method} {url}: redirected ({status}) to {resp_headers.get('Location')!r}; not followed")
        return self._answer(status, resp_headers, raw)

    @staticmethod
    def _answer(status: int, headers: Any, raw: bytes, strict: bool = True) -> Answer:
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError as e:
                if strict:
                    raise DecodeError(f"{status}: body is not JSON: {e}") from e
                body = {"detail": raw[:200].decode(errors="replace")}
        return Answer(status, {k.lower(): v for k, v in headers.items()}, body)

    def _json(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        return self.request(method, path, body, **kw).body

    def _page(self, path: str, plural: str, query: Mapping[str, Any]) -> Page[Any]:
        body = self._json("GET", path, query=query)
        try:
            return Page(list(body[plural]), str(body.get("next_page_token") or ""))
        except (KeyError, TypeError) as e:
            raise DecodeError(f"GET {path}: no {plural!r} list in the answer") from e

    def _iterate(self, path: str, plural: str, query: dict[str, Any]) -> Iterator[Any]:
        token: str | None = None
        while True:
            page = self._page(path, plural, {**query, "page_token": token})
            yield from page.items
            if not page.next_page_token:
                return
            token = page.next_page_token

    # -- tenants and keys (admin) ------------------------------------------------

    def create_tenant(self, name: str) -> Tenant:
        return cast(Tenant, self._json("POST", "/tenants", {"name": name}))

    def get_tenant(self, tenant_id: str) -> Tenant:
        return cast(Tenant, self._json("GET", "/tenants/" + _path(tenant_id)))

    def create_tenant_key(self, tenant_id: str) -> Key:
        """A tenant key (``key`` is shown only in this answer)."""
        return cast(Key, self._json("POST", f"/tenants/{_path(tenant_id)}/keys", {"role": "tenant"}))

    def create_key(
        self,
        role: Literal["admin", "worker"],
        *,
        types: Sequence[str] | None = None,
        tenants: Sequence[str] | None = None,
    ) -> Key:
        """An admin or worker key; a worker key may be scoped to ``types`` and ``tenants``."""
        body = _drop_none({"role": role, "types": list(types) if types else None, "tenants": list(tenants) if tenants else None})
        return cast(Key, self._json("POST", "/keys", body))

    def revoke_key(self, key_id: str) -> None:
        self.request("DELETE", "/keys/" + _path(key_id))

    # -- events -------------------------------------------------------------------

    def publish(
        self,
        type: str,
        data: Any,
        *,
        id: str | None = None,
        tenant: str | None = None,
        key: str | None = None,
        idempotency_key: str | None = None,
    ) -> EventAccepted:
        """``POST /events`` (admin): durable before it returns. ``id`` or
        ``idempotency_key`` make a retry answer the first result."""
        body = _drop_none({"id": id, "type": type, "tenant": tenant, "key": key})
        body["data"] = data
        return cast(EventAccepted, self._json("POST", "/events", body, idempotency_key=idempotency_key))

    def get_event(self, event_id: str) -> Event:
        return cast(Event, self._json("GET", "/events/" + _path(event_id)))

    def list_events(
        self,
        *,
        type: str | None = None,
        key: str | None = None,
        after: str | None = None,
        tenant: str | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
    ) -> Page[Event]:
        """Oldest first."""
        q = {"type": type, "key": key, "after": after, "tenant": tenant, "page_size": page_size, "page_token": page_token}
        return self._page("/events", "events", q)

    def iter_events(self, **filters: Any) -> Iterator[Event]:
        """Every event matching ``filters`` (as :meth:`list_events`), page after page."""
        return self._iterate("/events", "events", filters)

    def put_event_type(self, name: str, schema: Mapping[str, Any]) -> EventType:
        """Registers the JSON Schema that ``data`` of events of this type must match (admin)."""
        return cast(EventType, self._json("PUT", "/event-types/" + _path(name), {"schema": schema}))

    def list_event_types(self) -> list[EventType]:
        """Every registered type, page after page."""
        return cast(list[EventType], list(self._iterate("/event-types", "event_types", {})))

    # -- webhooks -----------------------------------------------------------------

    def create_webhook(
        self,
        url: str,
        events: Sequence[str],
        *,
        format: WebhookFormat | None = None,
        tenant: str | None = None,
        schedule: Sequence[str] | None = None,
        max_concurrency: int | None = None,
        description: str | None = None,
        signing_secret_version: int | None = None,
        ordering: WebhookOrdering | None = None,
        headers: Mapping[str, str] | None = None,
        filter: Mapping[str, Any] | None = None,
        rate_limit: int | None = None,
    ) -> Webhook:
        """``signing_secret`` is in this answer only (and in :meth:`rotate_webhook_secret`'s).
        ``ordering="key"``: deliveries of one event key go one at a time, in ``sequence`` order.
        ``headers`` are sent on every delivery; ``filter`` is the payload filter
        (docs/api.md); ``rate_limit`` caps deliveries per second."""
        body = _drop_none(
            {
                "url": url,
                "events": list(events),
                "format": format,
                "tenant": tenant,
                "schedule": list(schedule) if schedule is not None else None,
                "max_concurrency": max_concurrency,
                "description": description,
                "signing_secret_version": signing_secret_version,
                "ordering": ordering,
                "headers": dict(headers) if headers is not None else None,
                "filter": dict(filter) if filter is not None else None,
                "rate_limit": rate_limit,
            }
        )
        return cast(Webhook, self._json("POST", "/webhooks", body))

    def get_webhook(self, webhook_id: str) -> Webhook:
        return cast(Webhook, self._json("GET", "/webhooks/" + _path(webhook_id)))

    def list_webhooks(
        self, *, tenant: str | None = None, page_size: int | None = None, page_token: str | None = None
    ) -> Page[Webhook]:
        return self._page("/webhooks", "webhooks", {"tenant": tenant, "page_size": page_size, "page_token": page_token})

    def iter_webhooks(self, **filters: Any) -> Iterator[Webhook]:
        return self._iterate("/webhooks", "webhooks", filters)

    def update_webhook(
        self,
        webhook_id: str,
        *,
        url: str | None = None,
        events: Sequence[str] | None = None,
        format: WebhookFormat | None = None,
        disabled: bool | None = None,
        schedule: Sequence[str] | None = None,
        max_concurrency: int | None = None,
        description: str | None = None,
        ordering: WebhookOrdering | None = None,
        headers: Mapping[str, str] | None = None,
        filter: Mapping[str, Any] | None = None,
        rate_limit: int | None = None,
    ) -> Webhook:
        """``PATCH``: only the fields given change (``headers={}`` removes every header)."""
        body = _drop_none(
            {
                "url": url,
                "events": list(events) if events is not None else None,
                "format": format,
                "disabled": disabled,
                "schedule": list(schedule) if schedule is not None else None,
                "max_concurrency": max_concurrency,
                "description": description,
                "ordering": ordering,
                "headers": dict(headers) if headers is not None else None,
                "filter": dict(filter) if filter is not None else None,
                "rate_limit": rate_limit,
            }
        )
        return cast(Webhook, self._json("PATCH", "/webhooks/" + _path(webhook_id), body))

    def delete_webhook(self, webhook_id: str) -> None:
        self.request("DELETE", "/webhooks/" + _path(webhook_id))

    def disable_webhook(self, webhook_id: str) -> Webhook:
        return cast(Webhook, self._json("POST", f"/webhooks/{_path(webhook_id)}:disable"))

    def enable_webhook(self, webhook_id: str) -> Webhook:
        return cast(Webhook, self._json("POST", f"/webhooks/{_path(webhook_id)}:enable"))

    def rotate_webhook_secret(self, webhook_id: str, *, grace: str | None = None) -> Webhook:
        """A new ``signing_secret``; the old one keeps signing for ``grace`` (e.g. ``"1h"``;
        default 24 h), so receivers verify with both meanwhile."""
        body = _drop_none({"grace": grace})
        return cast(Webhook, self._json("POST", f"/webhooks/{_path(webhook_id)}:rotateSecret", body))

    def replay_webhook(
        self,
        webhook_id: str,
        *,
        since: str | None = None,
        until: str | None = None,
        status: ReplayStatus | None = None,
    ) -> dict[str, Any]:
        """Queues again the deliveries whose event is in ``[since, until)``; answers
        ``{"webhook", "replayed", "done"}`` (``done: False``: the rest continues in the background)."""
        body = _drop_none({"since": since, "until": until, "status": status})
        return cast(dict[str, Any], self._json("POST", f"/webhooks/{_path(webhook_id)}:replay", body))

    # -- deliveries ---------------------------------------------------------------

    def list_deliveries(
        self,
        *,
        webhook: str | None = None,
        status: DeliveryStatus | None = None,
        event_type: str | None = None,
        since: str | None = None,
        until: str | None = None,
        tenant: str | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
    ) -> Page[Delivery]:
        """Newest first."""
        q = {
            "webhook": webhook,
            "status": status,
            "event_type": event_type,
            "since": since,
            "until": until,
            "tenant": tenant,
            "page_size": page_size,
            "page_token": page_token,
        }
        return self._page("/deliveries", "deliveries", q)

    def iter_deliveries(self, **filters: Any) -> Iterator[Delivery]:
        return self._iterate("/deliveries", "deliveries", filters)

    def get_delivery(self, delivery_id: str) -> Delivery:
        """With ``attempt_log``."""
        return cast(Delivery, self._json("GET", "/deliveries/" + _path(delivery_id)))

    def redeliver(self, delivery_id: str) -> Delivery:
        """The same event (same event id) again, with a fresh retry window."""
        return cast(Delivery, self._json("POST", f"/deliveries/{_path(delivery_id)}:redeliver"))

    def skip_delivery(self, delivery_id: str) -> Delivery:
        """Gives a delivery up (``skipped``); on an ordered webhook this releases its key's
        line. A delivery that already succeeded is :class:`DeliverySucceededError`."""
        return cast(Delivery, self._json("POST", f"/deliveries/{_path(delivery_id)}:skip"))

    # -- operations ---------------------------------------------------------------

    def trigger(self, path: str, body: Any, *, idempotency_key: str | None = None) -> Operation:
        """A trigger route from config (e.g. ``"/videos"``): ``body`` becomes the
        operation's input; Herald answers 202 with the operation."""
        answer = self.request("POST", path, body, idempotency_key=idempotency_key)
        if answer.status != 202:
            raise DecodeError(f"trigger {path} answered {answer.status} instead of 202")
        return cast(Operation, answer.body)

    def create_operation(
        self,
        type: str,
        *,
        tenant: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        input: Any = None,
        idempotency_key: str | None = None,
    ) -> Operation:
        """``POST /operations`` (admin)."""
        body = _drop_none({"type": type, "tenant": tenant, "metadata": dict(metadata) if metadata else None, "input": input})
        return cast(Operation, self._json("POST", "/operations", body, idempotency_key=idempotency_key))

    def get_operation_with_hint(self, operation: str) -> tuple[Operation, float | None]:
        """The operation and Herald's ``Retry-After`` (seconds) while it is not done."""
        answer = self.request("GET", "/operations/" + _path(operation_id(operation)))
        return cast(Operation, answer.body), parse_retry_after(answer.headers.get("retry-after"))

    def get_operation(self, operation: str) -> Operation:
        return self.get_operation_with_hint(operation)[0]

    def list_operations(
        self,
        *,
        type: str | None = None,
        done: bool | None = None,
        tenant: str | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
    ) -> Page[Operation]:
        """Newest first."""
        q = {"type": type, "done": done, "tenant": tenant, "page_size": page_size, "page_token": page_token}
        return self._page("/operations", "operations", q)

    def iter_operations(self, **filters: Any) -> Iterator[Operation]:
        return self._iterate("/operations", "operations", filters)

    def wait(
        self,
        operation: str,
        *,
        timeout: float = 300.0,
        initial_backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> Operation:
        """Polls until the operation is done. Between polls it sleeps for Herald's
        ``Retry-After`` (also on 429/503), or backs off exponentially when there is
        none; never past ``timeout``, then raises :class:`WaitTimeoutError`. A
        :class:`TransportError`, or a 502/503/504 without a Herald error code (a proxy's
        answer), is polled again likewise rather than ending the wait."""
        deadline = time.monotonic() + timeout
        backoff = initial_backoff
        last: Operation | None = None
        while True:
            try:
                op, hint = self.get_operation_with_hint(operation)
                if op.get("done"):
                    return op
                last = op
            except (RateLimitedError, UnavailableError) as e:
                hint = e.retry_after
            except TransportError:
                hint = None
            except ApiError as e:
                if e.status not in (502, 503, 504) or e.code != "UNKNOWN":
                    raise
                hint = e.retry_after
            if hint is None:
                hint, backoff = backoff, min(backoff * 2, max_backoff)
            pause = max(hint, 0.05)  # Retry-After: 0 must not become a busy loop
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeoutError(operation_id(operation), last)
            time.sleep(min(pause, left))

    def wait_long_poll(self, operation: str, timeout: float = 30.0) -> Operation:
        """``POST /operations/{id}:wait``: one server-side long poll of at most ``timeout``
        seconds (Herald caps it at 60); the latest state, done or not."""
        path = f"/operations/{_path(operation_id(operation))}:wait"
        return cast(Operation, self._json("POST", path, {"timeout": duration(timeout)}, timeout=self.timeout + timeout))

    def cancel(self, operation: str) -> Operation:
        """Not started: done with ``CANCELLED`` at once. Running: the worker is told on its
        next heartbeat."""
        return cast(Operation, self._json("POST", f"/operations/{_path(operation_id(operation))}:cancel"))

    def delete_operation(self, operation: str) -> None:
        """Hides the operation from reads; does not cancel the work."""
        self.request("DELETE", "/operations/" + _path(operation_id(operation)))

    # -- the worker's side --------------------------------------------------------

    def claim(
        self,
        types: Sequence[str] = (),
        *,
        lease: float | None = None,
        max: int = 1,
        wait: float = 20.0,
    ) -> list[ClaimedOperation]:
        """``POST /operations:claim`` (worker key): a long poll of at most ``wait`` seconds.
        ``lease`` in seconds (at least 1); None takes the type's lease from config."""
        body: dict[str, Any] = {"max": max, "wait": duration(wait)}
        if types:
            body["types"] = list(types)
        if lease is not None:
            body["lease"] = duration(lease)
        answer = self._json("POST", "/operations:claim", body, timeout=self.timeout + wait)
        try:
            return cast(list[ClaimedOperation], list(answer["operations"]))
        except (KeyError, TypeError) as e:
            raise DecodeError("claim: no 'operations' in the answer") from e

    def heartbeat(
        self,
        operation: str,
        lease_token: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        lease: float | None = None,
    ) -> HeartbeatReply:
        """Extends the lease, merges ``metadata`` (e.g. ``progress_percent``), and says
        whether a cancel was requested."""
        body: dict[str, Any] = {"lease_token": lease_token}
        if metadata:
            body["metadata"] = dict(metadata)
        if lease is not None:
            body["lease"] = duration(lease)
        return cast(HeartbeatReply, self._json("POST", f"/operations/{_path(operation_id(operation))}:heartbeat", body))

    def complete(self, operation: str, lease_token: str, response: Any) -> Operation:
        body = {"lease_token": lease_token, "response": response}
        return cast(Operation, self._json("POST", f"/operations/{_path(operation_id(operation))}:complete", body))

    def fail(self, operation: str, lease_token: str, error: OperationError, *, retryable: bool = False) -> Operation:
        """``retryable=True`` hands the operation back to the queue (up to ``max_attempts``)."""
        body = {"lease_token": lease_token, "error": dict(error), "retryable": retryable}
        return cast(Operation, self._json("POST", f"/operations/{_path(operation_id(operation))}:fail", body))
