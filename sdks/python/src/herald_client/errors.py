"""Errors: every answer Herald gives with problem details (RFC 9457) becomes an
:class:`ApiError` subclass chosen by its stable ``code``; the rest are transport errors."""

from __future__ import annotations

from typing import Any


class HeraldError(Exception):
    """Base of every error this SDK raises."""


class TransportError(HeraldError):
    """The request did not get an HTTP answer (connection refused, reset, timed out)."""


class DecodeError(HeraldError):
    """Herald answered something this SDK cannot read (not JSON, not the expected shape)."""


class ApiError(HeraldError):
    """Herald answered with problem details.

    ``code`` is the stable code (``NOT_FOUND``, ``LEASE_STALE``…), ``problem`` the whole
    body, ``retry_after`` the ``Retry-After`` header in seconds (429 and 503)."""

    def __init__(
        self,
        status: int,
        code: str,
        title: str,
        detail: str,
        problem: dict[str, Any],
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"Herald answered {status} {code}: {detail or title}")
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.type = str(problem.get("type", "about:blank"))
        self.problem = problem
        self.retry_after = retry_after


class InvalidRequestError(ApiError):
    """400/422: ``INVALID_JSON``, ``INVALID_REQUEST``, ``SCHEMA_VIOLATION``, ``LIMIT_REACHED``."""


class IdempotencyKeyReusedError(InvalidRequestError):
    """422 ``IDEMPOTENCY_KEY_REUSED``: the key (or event id) was used with another body."""


class BodyTooLargeError(ApiError):
    """413 ``BODY_TOO_LARGE``."""


class AuthenticationError(ApiError):
    """401 ``UNAUTHENTICATED``: no key, or an unknown or revoked one."""


class PermissionDeniedError(ApiError):
    """403 ``FORBIDDEN``: the key's role (or a worker key's scope) may not do this."""


class NotFoundError(ApiError):
    """404 ``NOT_FOUND``: no such resource, or not this tenant's."""


class ConflictError(ApiError):
    """409."""


class LeaseStaleError(ConflictError):
    """409 ``LEASE_STALE``: the lease token is not the current one; nothing changed."""


class OperationDoneError(ConflictError):
    """409 ``OPERATION_DONE``: the operation already ended."""


class IdempotencyKeyInUseError(ConflictError):
    """409 ``IDEMPOTENCY_KEY_IN_USE``: the first request with this key is still running."""


class DeliverySucceededError(ConflictError):
    """409 ``DELIVERY_SUCCEEDED``: a delivery that succeeded cannot be skipped."""


class DeliveryInFlightError(ConflictError):
    """409 ``DELIVERY_IN_FLIGHT``: the delivery's attempt is in flight; skip it once that attempt ended."""


class RateLimitedError(ApiError):
    """429 ``RATE_LIMITED``; ``retry_after`` says when to retry."""


class UnavailableError(ApiError):
    """503 ``OVERLOADED`` or ``REQUEST_TIMEOUT``; ``retry_after`` says when to retry."""


class InternalError(ApiError):
    """500 ``INTERNAL``."""


_BY_CODE: dict[str, type[ApiError]] = {
    "INVALID_JSON": InvalidRequestError,
    "INVALID_REQUEST": InvalidRequestError,
    "SCHEMA_VIOLATION": InvalidRequestError,
    "LIMIT_REACHED": InvalidRequestError,
    "IDEMPOTENCY_KEY_REUSED": IdempotencyKeyReusedError,
    "BODY_TOO_LARGE": BodyTooLargeError,
    "UNAUTHENTICATED": AuthenticationError,
    "FORBIDDEN": PermissionDeniedError,
    "NOT_FOUND": NotFoundError,
    "LEASE_STALE": LeaseStaleError,
    "OPERATION_DONE": OperationDoneError,
    "IDEMPOTENCY_KEY_IN_USE": IdempotencyKeyInUseError,
    "DELIVERY_SUCCEEDED": DeliverySucceededError,
    "DELIVERY_IN_FLIGHT": DeliveryInFlightError,
    "RATE_LIMITED": RateLimitedError,
    "OVERLOADED": UnavailableError,
    "REQUEST_TIMEOUT": UnavailableError,
    "INTERNAL": InternalError,
}

_BY_STATUS: dict[int, type[ApiError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: BodyTooLargeError,
    422: InvalidRequestError,
    429: RateLimitedError,
    500: InternalError,
    503: UnavailableError,
}


def api_error(status: int, body: Any, retry_after: float | None) -> ApiError:
    problem: dict[str, Any] = body if isinstance(body, dict) else {}
    code = str(problem.get("code") or "UNKNOWN")
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status, ApiError)
    return cls(
        status=status,
        code=code,
        title=str(problem.get("title", "")),
        detail=str(problem.get("detail", "")),
        problem=problem,
        retry_after=retry_after,
    )


class WaitTimeoutError(HeraldError):
    """:meth:`Herald.wait` gave up; ``operation`` is the operation as last seen (or None)."""

    def __init__(self, operation_id: str, operation: Any) -> None:
        super().__init__(f"operation {operation_id} was not done within the wait timeout")
        self.operation = operation
