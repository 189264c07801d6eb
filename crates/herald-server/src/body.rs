//! Reading request bodies: a size limit answered as 413 problem details, JSON errors
//! answered as 400 (malformed) or 422 (wrong shape), and `Idempotency-Key` handling.

use crate::error::{ApiError, ApiResult};
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

pub async fn read_body(body: Body, limit: usize) -> ApiResult<Bytes> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        // axum wraps http-body-util's LengthLimitError; its message is the stable part.
        let mut too_large = false;
        let mut source: Option<&dyn std::error::Error> = Some(&e);
        while let Some(err) = source {
            too_large |= err.to_string().contains("length limit exceeded");
            source = err.source();
        }
        if too_large {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "BODY_TOO_LARGE",
                format!("The request body is larger than the limit of {limit} bytes."),
            )
        } else {
            ApiError::bad_request(
                "BODY_UNREADABLE",
                format!("The request body could not be read: {e}"),
            )
        }
    })
}

/// Parses JSON: bad syntax is 400 `INVALID_JSON`; valid JSON of the wrong shape is 422 `INVALID_REQUEST`.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "INVALID_JSON",
            "The request body is empty; send a JSON object.",
        ));
    }
    if has_escaped_nul(bytes) {
        return Err(nul_refused());
    }
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            ApiError::invalid(format!("The request body does not fit: {e}"))
        }
        _ => ApiError::bad_request(
            "INVALID_JSON",
            format!("The request body is not valid JSON: {e}"),
        ),
    })
}

/// Like [`parse_json`], but an empty body means `T::default()`.
pub fn parse_json_or_default<T: DeserializeOwned + Default>(bytes: &[u8]) -> ApiResult<T> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_json(bytes)
}

pub fn request_hash(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    hex::encode(h.finalize())
}

/// The `Idempotency-Key` header, checked: 1–255 visible ASCII characters.
pub fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .ok()
        .filter(|t| !t.is_empty() && t.len() <= 255 && t.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::bad_request(
                "INVALID_IDEMPOTENCY_KEY",
                "Idempotency-Key must be 1 to 255 visible ASCII characters.",
            )
        })?;
    Ok(Some(text.to_owned()))
}

/// Idempotency keys whose first request is still being handled on this node: a
/// concurrent retry gets 409 instead of racing the first.
#[derive(Default, Clone)]
pub struct InFlight(Arc<Mutex<HashSet<String>>>);

pub struct InFlightGuard {
    set: InFlight,
    key: String,
}

impl InFlight {
    pub fn enter(&self, key: String) -> ApiResult<InFlightGuard> {
        let mut set = self.0.lock().expect("in-flight lock");
        if !set.insert(key.clone()) {
            return Err(ApiError::conflict(
                "IDEMPOTENCY_KEY_IN_USE",
                "A request with this Idempotency-Key is still being processed; retry after it finishes.",
            ));
        }
        Ok(InFlightGuard {
            set: self.clone(),
            key,
        })
    }

    /// How many keys are in progress now.
    pub fn len(&self) -> usize {
        self.0.lock().expect("in-flight lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.set.0.lock().expect("in-flight lock").remove(&self.key);
    }
}

/// Parses a `page_size` (default 50, at most 1000).
pub fn page_size(requested: Option<u32>) -> ApiResult<u32> {
    match requested {
        None => Ok(50),
        Some(0) => Err(ApiError::invalid("`page_size` must be at least 1.")),
        Some(n) => Ok(n.min(herald_store::MAX_PAGE_SIZE)),
    }
}

/// Whether a JSON text has a string with the NUL character (`\u0000`; a raw NUL byte is
/// not valid JSON anyway). Herald refuses it in every request: PostgreSQL cannot store it
/// in a text column, and both backends answer alike.
fn has_escaped_nul(json: &[u8]) -> bool {
    let mut i = 0;
    let mut in_string = false;
    while i < json.len() {
        match json[i] {
            b'"' => in_string = !in_string,
            b'\\' if in_string => {
                if json.get(i + 1) == Some(&b'u') && json.get(i + 2..i + 6) == Some(b"0000") {
                    return true;
                }
                i += 1; // the escaped character, whatever it is
            }
            _ => {}
        }
        i += 1;
    }
    false
}

fn nul_refused() -> ApiError {
    ApiError::invalid("Strings may not contain the NUL character (U+0000).")
}

/// Refuses a request whose path or query has an encoded NUL (`%00`), for the same reason
/// as [`parse_json`] refuses `\u0000`.
pub async fn refuse_nul_in_uri(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if request.uri().to_string().contains("%00") {
        return nul_refused().into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod nul_tests {
    use super::has_escaped_nul;

    #[test]
    fn finds_an_escaped_nul_in_strings_only() {
        assert!(has_escaped_nul(br#"{"name":"a\u0000b"}"#));
        assert!(has_escaped_nul(br#"{"a\u0000":1}"#));
        assert!(
            !has_escaped_nul(br#"{"name":"a\\u0000b"}"#),
            "an escaped backslash"
        );
        assert!(!has_escaped_nul(br#"{"name":"a\u0001b","n":0}"#));
        assert!(!has_escaped_nul(br#"{"name":"\"u0000"}"#));
    }
}
