//! One error type for the whole API, answered as RFC 9457 problem details with a
//! stable `code`. Internal failures are logged and answered without their details.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use herald_store::StoreError;
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable, machine-readable: `INVALID_JSON`, `NOT_FOUND`, `LEASE_STALE`, …
    pub code: &'static str,
    pub detail: String,
    /// Seconds, for 429/503 answers.
    pub retry_after: Option<u64>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            retry_after: None,
        }
    }
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }
    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST", detail)
    }
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("{what} was not found."),
        )
    }
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", detail)
    }
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "FORBIDDEN", detail)
    }
    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, detail)
    }
    pub fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "Herald hit an internal error; it has been logged.",
        )
    }

    /// 503 `OVERLOADED` with `Retry-After: 1`: a store queue is full; the client may
    /// retry shortly.
    pub fn overloaded(detail: impl Into<String>) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "OVERLOADED", detail)
        }
    }

    /// Maps a store error, naming the resource for a 404.
    pub fn from_store(err: StoreError, what: &str) -> Self {
        match err {
            StoreError::NotFound => Self::not_found(what),
            StoreError::IdempotencyMismatch => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "IDEMPOTENCY_KEY_REUSED",
                "This Idempotency-Key (or event id) was already used with a different request body.",
            ),
            StoreError::StaleLease => Self::conflict(
                "LEASE_STALE",
                "The lease_token is not this operation's current lease (it expired or belongs to another claim); nothing was changed.",
            ),
            StoreError::AlreadyDone => Self::conflict("OPERATION_DONE", "The operation is already done; nothing was changed."),
            StoreError::Overloaded => Self::overloaded(
                "Herald's store has more requests queued than it takes; this one was refused and changed nothing. Retry after the Retry-After delay.",
            ),
            StoreError::LimitReached => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "LIMIT_REACHED",
                "A configured limit is reached; nothing was changed.",
            ),
            StoreError::DeliverySucceeded => Self::conflict(
                "DELIVERY_SUCCEEDED",
                "The delivery already succeeded: there is nothing to skip. Nothing was changed.",
            ),
            StoreError::DeliveryInFlight => Self::conflict(
                "DELIVERY_IN_FLIGHT",
                "The delivery's attempt is in flight; skip it once that attempt has ended (its result is in the delivery log). Nothing was changed.",
            ),
            StoreError::AlreadyExists => Self::conflict(
                "ALREADY_EXISTS",
                "A resource with this name exists already; nothing was changed.",
            ),
            StoreError::CursorNotDelivered => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "CURSOR_NOT_DELIVERED",
                "The cursor is past what this consumer has been handed; nothing was changed.",
            ),
            StoreError::Backend(e) => Self::internal(e),
        }
    }

    fn title(&self) -> &'static str {
        self.status.canonical_reason().unwrap_or("Error")
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        Self::from_store(err, "The resource")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "type": format!("https://herald.dev/problems/{}", self.code.to_ascii_lowercase().replace('_', "-")),
            "title": self.title(),
            "status": self.status.as_u16(),
            "detail": self.detail,
            "code": self.code,
        });
        let mut response = (self.status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
