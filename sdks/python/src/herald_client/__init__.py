"""Herald's Python SDK: the HTTP API (admin, producer, client, worker), a worker loop,
webhook verification for both signature formats, and dedupe by event id."""

__version__ = "0.1.0"

from ._types import (  # noqa: E402
    ClaimedOperation,
    Delivery,
    Event,
    EventAccepted,
    EventType,
    HeartbeatReply,
    Key,
    Operation,
    OperationError,
    Problem,
    Tenant,
    Webhook,
)
from .client import Herald, Page, operation_id, parse_retry_after  # noqa: E402
from .dedupe import DedupeStore, MemoryDedupe, SqliteDedupe  # noqa: E402
from .errors import (  # noqa: E402
    ApiError,
    AuthenticationError,
    BodyTooLargeError,
    ConflictError,
    DecodeError,
    DeliveryInFlightError,
    DeliverySucceededError,
    HeraldError,
    IdempotencyKeyInUseError,
    IdempotencyKeyReusedError,
    InternalError,
    InvalidRequestError,
    LeaseStaleError,
    NotFoundError,
    OperationDoneError,
    PermissionDeniedError,
    RateLimitedError,
    TransportError,
    UnavailableError,
    WaitTimeoutError,
)
from .verify import (  # noqa: E402
    BadSignatureError,
    MalformedHeaderError,
    MissingHeaderError,
    OutsideToleranceError,
    VerifiedWebhook,
    WebhookVerificationError,
    WebhookVerifier,
    herald_signature,
    standard_signature,
    verify_webhook,
)
from .worker import Job, JobFailed, Worker  # noqa: E402

__all__ = [
    "ApiError", "AuthenticationError", "BadSignatureError", "BodyTooLargeError", "ClaimedOperation",
    "ConflictError", "DecodeError", "DeliveryInFlightError", "DeliverySucceededError", "DedupeStore", "Delivery", "Event", "EventAccepted", "EventType",
    "Herald", "HeraldError", "HeartbeatReply", "IdempotencyKeyInUseError", "IdempotencyKeyReusedError",
    "InternalError", "InvalidRequestError", "Job", "JobFailed", "Key", "LeaseStaleError",
    "MalformedHeaderError", "MemoryDedupe", "MissingHeaderError", "NotFoundError", "Operation",
    "OperationDoneError", "OperationError", "OutsideToleranceError", "Page", "PermissionDeniedError",
    "Problem", "RateLimitedError", "SqliteDedupe", "Tenant", "TransportError", "UnavailableError",
    "VerifiedWebhook", "WaitTimeoutError", "Webhook", "WebhookVerificationError", "WebhookVerifier",
    "Worker", "herald_signature", "operation_id", "parse_retry_after", "standard_signature", "verify_webhook",
]
