"""Wire types generated from Herald's /openapi.json by scripts/gen_types.py. Do not edit.

tests/test_openapi.py regenerates this file from a running Herald and fails on any difference.
"""

from typing import Any, Literal, NotRequired, TypedDict


class Attempt(TypedDict):
    id: NotRequired[str]
    at: NotRequired[str]
    status_code: NotRequired[int | None]
    latency_ms: NotRequired[int | None]
    error: NotRequired[str | None]
    response_excerpt: NotRequired[str | None]


class ClaimRequest(TypedDict):
    types: NotRequired[list[str]]
    lease: NotRequired[str]
    max: NotRequired[int]
    wait: NotRequired[str]


class ClaimedOperation(TypedDict):
    name: str
    metadata: dict[str, Any]
    input: Any
    lease_token: str
    lease_expires_at: NotRequired[str]
    attempt: int


class Complete(TypedDict):
    lease_token: str
    response: NotRequired[Any]


class Consumer(TypedDict):
    name: str
    tenant: NotRequired[str]
    types: list[str]
    cursor: str
    created_at: str
    updated_at: str


class CreateConsumer(TypedDict):
    name: str
    types: NotRequired[list[str]]
    start: NotRequired[Literal["earliest", "latest"]]
    tenant: NotRequired[str]


class CreateEvent(TypedDict):
    id: NotRequired[str]
    type: str
    tenant: NotRequired[str]
    key: NotRequired[str]
    data: Any


class CreateKey(TypedDict):
    role: Literal["admin", "worker"]
    types: NotRequired[list[str]]
    tenants: NotRequired[list[str]]


class CreateOperation(TypedDict):
    type: str
    tenant: NotRequired[str]
    metadata: NotRequired[dict[str, Any]]
    input: NotRequired[Any]


class CreateTenantKey(TypedDict):
    role: Literal["tenant"]


class CreateWebhook(TypedDict):
    url: str
    events: list[str]
    signing_secret_version: NotRequired[int]
    format: NotRequired[Literal["herald", "standard-webhooks", "standard-webhooks-ed25519"]]
    tenant: NotRequired[str]
    schedule: NotRequired[list[str]]
    max_concurrency: NotRequired[int]
    ordering: NotRequired[Literal["none", "key"]]
    description: NotRequired[str]
    headers: NotRequired[dict[str, Any]]
    filter: NotRequired[dict[str, Any]]
    rate_limit: NotRequired[int]


class Delivery(TypedDict):
    id: str
    event_id: str
    event_type: str
    webhook_id: str
    tenant: NotRequired[str | None]
    status: Literal["pending", "succeeded", "failed", "skipped"]
    key: NotRequired[str | None]
    sequence: NotRequired[int | None]
    held_by: NotRequired[str | None]
    attempts: int
    next_attempt_at: NotRequired[str | None]
    last_status_code: NotRequired[int | None]
    last_error: NotRequired[str | None]
    attempt_log: NotRequired[list["Attempt"]]
    created_at: NotRequired[str]
    updated_at: NotRequired[str]


Document = dict[str, Any]


class Event(TypedDict):
    id: str
    type: str
    created_at: str
    key: NotRequired[str]
    sequence: NotRequired[int]
    tenant: NotRequired[str]
    data: Any


class EventAccepted(TypedDict):
    id: str
    sequence: NotRequired[int | None]


class EventType(TypedDict):
    name: str
    schema: dict[str, Any]


class Fail(TypedDict):
    lease_token: str
    error: "OperationError"
    retryable: NotRequired[bool]


class FeedPage(TypedDict):
    events: list["Event"]
    next_cursor: str


class Heartbeat(TypedDict):
    lease_token: str
    metadata: NotRequired[dict[str, Any]]
    lease: NotRequired[str]


class HeartbeatReply(TypedDict):
    cancel_requested: bool
    lease_expires_at: str


class Key(TypedDict):
    id: str
    key: str
    role: str
    tenant: NotRequired[str]
    types: NotRequired[list[str]]
    tenants: NotRequired[list[str]]


class Operation(TypedDict):
    """AIP-151. `done=false`: neither `response` nor `error`. `done=true`: exactly one of them."""

    name: str
    metadata: dict[str, Any]
    done: bool
    response: NotRequired[Any]
    error: NotRequired["OperationError"]


class OperationError(TypedDict):
    code: str
    message: str


class PatchWebhook(TypedDict):
    url: NotRequired[str]
    events: NotRequired[list[str]]
    format: NotRequired[Literal["herald", "standard-webhooks", "standard-webhooks-ed25519"]]
    disabled: NotRequired[bool]
    description: NotRequired[str]
    schedule: NotRequired[list[str]]
    max_concurrency: NotRequired[int]
    ordering: NotRequired[Literal["none", "key"]]
    headers: NotRequired[dict[str, Any]]
    filter: NotRequired[dict[str, Any] | None]
    rate_limit: NotRequired[int | None]


class PortalSession(TypedDict):
    id: str
    tenant: str
    read_only: bool
    event_types: NotRequired[list[str] | None]
    expires_at: str
    created_at: NotRequired[str]
    opened_at: NotRequired[str | None]
    revoked: NotRequired[bool]
    token: NotRequired[str]
    url: NotRequired[str]


class PortalSettings(TypedDict):
    frame_origins: NotRequired[list[str]]
    branding: NotRequired[dict[str, Any]]


class Problem(TypedDict):
    """RFC 9457 problem details with a stable `code`."""

    type: str
    title: str
    status: int
    detail: str
    code: str


class Replay(TypedDict):
    since: NotRequired[str]
    until: NotRequired[str]
    status: NotRequired[Literal["failed", "succeeded", "pending", "skipped", "all"]]


class Status(TypedDict):
    status: NotRequired[str]


class Tenant(TypedDict):
    id: str
    name: str
    created_at: NotRequired[str]


class Wait(TypedDict):
    timeout: NotRequired[str]


class Webhook(TypedDict):
    id: str
    tenant: NotRequired[str | None]
    url: str
    events: list[str]
    format: Literal["herald", "standard-webhooks", "standard-webhooks-ed25519"]
    signing_secret_version: int
    signing_secret: NotRequired[str]
    public_key: NotRequired[str | None]
    previous_public_key: NotRequired[str | None]
    schedule: NotRequired[list[str] | None]
    max_concurrency: NotRequired[int | None]
    ordering: NotRequired[Literal["none", "key"]]
    headers: NotRequired[dict[str, Any]]
    filter: NotRequired[dict[str, Any] | None]
    rate_limit: NotRequired[int | None]
    disabled: bool
    disabled_reason: NotRequired[str | None]
    description: NotRequired[str | None]
    created_at: NotRequired[str]
    updated_at: NotRequired[str]
