//! The request timeout: a request still running after `request_timeout` is answered
//! 503 `REQUEST_TIMEOUT` (problem details, `Retry-After`) and its handler is dropped, so
//! a stalled store or a slow upload never holds a connection for ever. The long polls
//! (`POST /operations:claim`, `POST /operations/{id}:wait`, `GET /feed` and
//! `GET /consumers/{name}/events`) wait up to
//! [`LONG_POLL_MAX_WAIT`] by design, so they get that on top of the timeout.

use crate::error::ApiError;
use crate::AppState;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::Duration;

/// The longest wait `:claim` and `:wait` accept (their `wait` / `timeout` fields).
pub const LONG_POLL_MAX_WAIT: Duration = Duration::from_secs(60);

/// How long a request to `path` may take.
pub fn limit_for(timeout: Duration, path: &str) -> Duration {
    if is_long_poll(path) {
        timeout + LONG_POLL_MAX_WAIT
    } else {
        timeout
    }
}

fn is_long_poll(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    let custom = |method: &str| {
        lower.ends_with(&format!(":{method}")) || lower.ends_with(&format!("%3a{method}"))
    };
    (lower.starts_with("/operations") && custom("claim"))
        || (lower.starts_with("/operations/") && custom("wait"))
        || lower == "/feed"
        || (lower.starts_with("/consumers/") && lower.ends_with("/events"))
}

pub async fn enforce(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let timeout = state.config.request_timeout;
    let limit = limit_for(timeout, request.uri().path());
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(limit_ms = limit.as_millis() as u64, "request timed out");
            ApiError {
                retry_after: Some(1),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "REQUEST_TIMEOUT",
                    format!(
                        "The request did not finish within {} and was abandoned. A write it had \
                         already handed to the store may still complete: read the resource, or \
                         retry with the same Idempotency-Key, before repeating it.",
                        herald_core::duration::format(limit)
                    ),
                )
            }
            .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_polls_get_their_wait_on_top() {
        let t = Duration::from_secs(30);
        assert_eq!(limit_for(t, "/operations:claim"), t + LONG_POLL_MAX_WAIT);
        assert_eq!(
            limit_for(t, "/operations/op_01HX:wait"),
            t + LONG_POLL_MAX_WAIT
        );
        assert_eq!(
            limit_for(t, "/operations/op_01HX%3Await"),
            t + LONG_POLL_MAX_WAIT
        );
        assert_eq!(limit_for(t, "/operations/op_01HX:cancel"), t);
        assert_eq!(limit_for(t, "/operations/op_01HX"), t);
        assert_eq!(limit_for(t, "/events"), t);
        assert_eq!(limit_for(t, "/feed"), t + LONG_POLL_MAX_WAIT);
        assert_eq!(
            limit_for(t, "/consumers/listen-1/events"),
            t + LONG_POLL_MAX_WAIT
        );
        assert_eq!(limit_for(t, "/consumers/listen-1"), t);
        assert_eq!(limit_for(t, "/webhooks/wh_1:wait"), t);
    }
}
