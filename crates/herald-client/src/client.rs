//! The HTTP client: one [`Client`] per base URL and key, with typed calls for the
//! wire contract in DESIGN.md. Problem-details answers become [`ClientError::Api`].

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::time::{Duration, SystemTime};

pub use herald_core::operation::OperationError;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("request to Herald failed: {0}")]
    Transport(#[from] reqwest::Error),
    /// Herald answered with problem details (`code` is the stable one, e.g. `LEASE_STALE`).
    #[error("Herald answered {status} {code}: {detail}")]
    Api {
        status: u16,
        code: String,
        detail: String,
        /// From `Retry-After`, on 429 and 503.
        retry_after: Option<Duration>,
    },
    #[error("unexpected answer from Herald: {0}")]
    Decode(String),
    /// `wait` gave up; the operation as last seen is attached.
    #[error("operation {} was not done within the wait timeout", .0.id())]
    WaitTimedOut(Box<Operation>),
}

impl ClientError {
    /// The problem's `code`, when Herald answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub type ClientResult<T> = Result<T, ClientError>;

/// The Operation resource: `{ name, metadata, done, response | error }`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    /// `operations/op_…`.
    pub name: String,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    pub done: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<OperationError>,
}

impl Operation {
    /// `op_…`, the id used in paths.
    pub fn id(&self) -> &str {
        self.name.strip_prefix("operations/").unwrap_or(&self.name)
    }
    pub fn progress_percent(&self) -> Option<f64> {
        self.metadata
            .get("progress_percent")
            .and_then(Value::as_f64)
    }
}

/// An event accepted by `POST /events`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct PublishedEvent {
    pub id: String,
    /// Present when the event has a key: 1, 2, 3… per (tenant, key).
    #[serde(default)]
    pub sequence: Option<i64>,
}

/// What `POST /events` takes.
#[derive(Clone, Debug, Default, Serialize)]
pub struct NewEvent {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub data: Value,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Tenant {
    pub id: String,
    pub name: String,
}

/// A key as minted: `key` is shown this once.
#[derive(Clone, Debug, Deserialize)]
pub struct CreatedKey {
    pub id: String,
    pub key: String,
    pub role: String,
}

/// An operation handed to a worker by `:claim`.
#[derive(Clone, Debug, Deserialize)]
pub struct ClaimedOperation {
    pub name: String,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    #[serde(default)]
    pub input: Value,
    pub lease_token: String,
    pub attempt: u32,
}

impl ClaimedOperation {
    pub fn id(&self) -> &str {
        self.name.strip_prefix("operations/").unwrap_or(&self.name)
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct HeartbeatReply {
    pub cancel_requested: bool,
    pub lease_expires_at: String,
}

/// How [`Client::wait`] polls: it sleeps for the server's `Retry-After` when given,
/// otherwise backs off exponentially from `initial_backoff` to `max_backoff`.
#[derive(Clone, Debug)]
pub struct WaitOptions {
    pub timeout: Duration,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for WaitOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(300),
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// A handle on one Herald with one key. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Client {
    pub fn new(base_url: &str, key: &str) -> Self {
        Self::with_http(reqwest::Client::new(), base_url, key)
    }

    /// With a reqwest client of your own (timeouts, proxies, TLS roots).
    pub fn with_http(http: reqwest::Client, base_url: &str, key: &str) -> Self {
        Self {
            http,
            base: base_url.trim_end_matches('/').to_owned(),
            key: key.to_owned(),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> ClientResult<Answer> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some(k) = idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await?;
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .map_err(|e| ClientError::Decode(format!("{status}: body is not JSON: {e}")))?
        };
        if !status.is_success() {
            return Err(ClientError::Api {
                status: status.as_u16(),
                code: body["code"].as_str().unwrap_or("UNKNOWN").to_owned(),
                detail: body["detail"]
                    .as_str()
                    .or(body["title"].as_str())
                    .unwrap_or_default()
                    .to_owned(),
                retry_after: retry_after(&headers),
            });
        }
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// One call without an idempotency key, its body decoded.
    pub(crate) async fn decode_call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> ClientResult<T> {
        Self::decode(self.call(method, path, body, None).await?.body)
    }

    fn decode<T: serde::de::DeserializeOwned>(body: Value) -> ClientResult<T> {
        serde_json::from_value(body).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// `POST /operations` (admin key): creates an operation of `op_type` for `tenant`.
    pub async fn create_operation(
        &self,
        op_type: &str,
        tenant: Option<&str>,
        metadata: Map<String, Value>,
        input: Value,
        idempotency_key: Option<&str>,
    ) -> ClientResult<Operation> {
        let mut body = json!({ "type": op_type, "metadata": metadata, "input": input });
        if let Some(t) = tenant {
            body["tenant"] = json!(t);
        }
        let a = self
            .call(Method::POST, "/operations", Some(&body), idempotency_key)
            .await?;
        Self::decode(a.body)
    }

    /// A trigger route from config (`POST /videos`): the body becomes the operation's
    /// input; Herald answers 202 with the operation.
    pub async fn trigger(
        &self,
        path: &str,
        body: &Value,
        idempotency_key: Option<&str>,
    ) -> ClientResult<Operation> {
        let a = self
            .call(Method::POST, path, Some(body), idempotency_key)
            .await?;
        if a.status != StatusCode::ACCEPTED {
            return Err(ClientError::Decode(format!(
                "trigger {path} answered {} instead of 202",
                a.status
            )));
        }
        Self::decode(a.body)
    }

    /// `GET /operations/{id}`, with the `Retry-After` Herald gives while it is not done.
    pub async fn get_operation_with_hint(
        &self,
        id: &str,
    ) -> ClientResult<(Operation, Option<Duration>)> {
        let a = self
            .call(Method::GET, &format!("/operations/{id}"), None, None)
            .await?;
        let hint = retry_after(&a.headers);
        Ok((Self::decode(a.body)?, hint))
    }

    pub async fn get_operation(&self, id: &str) -> ClientResult<Operation> {
        Ok(self.get_operation_with_hint(id).await?.0)
    }

    /// Polls until the operation is done. Between polls it sleeps for the server's
    /// `Retry-After` (also on 429/503), or backs off exponentially when none is given;
    /// never past `timeout`, after which it fails with [`ClientError::WaitTimedOut`].
    pub async fn wait(&self, id: &str, options: &WaitOptions) -> ClientResult<Operation> {
        let deadline = tokio::time::Instant::now() + options.timeout;
        let mut backoff = options.initial_backoff;
        let mut last: Option<Operation> = None;
        loop {
            let pause = match self.get_operation_with_hint(id).await {
                Ok((op, _)) if op.done => return Ok(op),
                Ok((op, hint)) => {
                    last = Some(op);
                    hint
                }
                Err(ClientError::Api {
                    status: 429 | 503,
                    retry_after,
                    ..
                }) => retry_after,
                Err(e) => return Err(e),
            };
            let pause = pause
                .unwrap_or_else(|| {
                    let b = backoff;
                    backoff = (backoff * 2).min(options.max_backoff);
                    b
                })
                // `Retry-After: 0` must not turn into a busy loop.
                .max(Duration::from_millis(50));
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return match last {
                    Some(op) => Err(ClientError::WaitTimedOut(Box::new(op))),
                    None => Err(ClientError::Decode(
                        "Herald kept answering 429/503 until the wait timed out".into(),
                    )),
                };
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
        }
    }

    /// `POST /operations/{id}:wait`: one server-side long poll of at most `timeout`;
    /// returns the latest state, done or not.
    pub async fn wait_long_poll(&self, id: &str, timeout: Duration) -> ClientResult<Operation> {
        let body = json!({ "timeout": format!("{}ms", timeout.as_millis()) });
        let a = self
            .call(
                Method::POST,
                &format!("/operations/{id}:wait"),
                Some(&body),
                None,
            )
            .await?;
        Self::decode(a.body)
    }

    /// `POST /operations/{id}:cancel`: done with `CANCELLED` if not started yet;
    /// otherwise the worker is told on its next heartbeat.
    pub async fn cancel(&self, id: &str) -> ClientResult<Operation> {
        let a = self
            .call(
                Method::POST,
                &format!("/operations/{id}:cancel"),
                None,
                None,
            )
            .await?;
        Self::decode(a.body)
    }

    /// `POST /events` (admin key).
    pub async fn publish(
        &self,
        event: &NewEvent,
        idempotency_key: Option<&str>,
    ) -> ClientResult<PublishedEvent> {
        let body = serde_json::to_value(event).map_err(|e| ClientError::Decode(e.to_string()))?;
        let a = self
            .call(Method::POST, "/events", Some(&body), idempotency_key)
            .await?;
        Self::decode(a.body)
    }

    /// `POST /tenants` (admin key).
    pub async fn create_tenant(&self, name: &str) -> ClientResult<Tenant> {
        let a = self
            .call(
                Method::POST,
                "/tenants",
                Some(&json!({ "name": name })),
                None,
            )
            .await?;
        Self::decode(a.body)
    }

    /// Mints a key (admin key): `tenant` → `POST /tenants/{id}/keys` with role `tenant`;
    /// otherwise `POST /keys` with `admin` or `worker`.
    pub async fn create_key(&self, role: &str, tenant: Option<&str>) -> ClientResult<CreatedKey> {
        let path = match tenant {
            Some(t) => format!("/tenants/{t}/keys"),
            None => "/keys".to_owned(),
        };
        let a = self
            .call(Method::POST, &path, Some(&json!({ "role": role })), None)
            .await?;
        Self::decode(a.body)
    }

    /// `POST /keys` for a worker key scoped to operation `types` and `tenants` (an empty
    /// list leaves that side unlimited).
    pub async fn create_worker_key(
        &self,
        types: &[String],
        tenants: &[String],
    ) -> ClientResult<CreatedKey> {
        let mut body = json!({ "role": "worker" });
        if !types.is_empty() {
            body["types"] = json!(types);
        }
        if !tenants.is_empty() {
            body["tenants"] = json!(tenants);
        }
        let a = self.call(Method::POST, "/keys", Some(&body), None).await?;
        Self::decode(a.body)
    }

    /// `POST /webhooks`: `registration` is the body of the wire contract; the answer
    /// carries the `id` and the `signing_secret` (shown only now).
    pub async fn create_webhook(&self, registration: &Value) -> ClientResult<Value> {
        Ok(self
            .call(Method::POST, "/webhooks", Some(registration), None)
            .await?
            .body)
    }

    /// `GET /events?key=…`: the history of one key, for consumers that reconcile.
    pub async fn list_events_for_key(&self, key: &str) -> ClientResult<Vec<Value>> {
        let a = self
            .call(Method::GET, &format!("/events?key={key}"), None, None)
            .await?;
        Ok(a.body["events"].as_array().cloned().unwrap_or_default())
    }

    /// `POST /operations:claim` (worker key): a long poll of at most `wait`.
    pub async fn claim(
        &self,
        types: &[String],
        lease: Option<Duration>,
        max: u32,
        wait: Duration,
    ) -> ClientResult<Vec<ClaimedOperation>> {
        let mut body = json!({
            "types": types,
            "max": max,
            "wait": format!("{}ms", wait.as_millis()),
        });
        if let Some(l) = lease {
            body["lease"] = json!(format!("{}s", l.as_secs().max(1)));
        }
        let a = self
            .call(Method::POST, "/operations:claim", Some(&body), None)
            .await?;
        Self::decode(a.body["operations"].clone())
    }

    /// `POST /operations/{id}:heartbeat`: extends the lease, stores `metadata`
    /// (e.g. `progress_percent`), and says whether a cancel was requested.
    pub async fn heartbeat(
        &self,
        id: &str,
        lease_token: &str,
        metadata: Option<Map<String, Value>>,
    ) -> ClientResult<HeartbeatReply> {
        let mut body = json!({ "lease_token": lease_token });
        if let Some(m) = metadata {
            body["metadata"] = Value::Object(m);
        }
        let a = self
            .call(
                Method::POST,
                &format!("/operations/{id}:heartbeat"),
                Some(&body),
                None,
            )
            .await?;
        Self::decode(a.body)
    }

    pub async fn complete(
        &self,
        id: &str,
        lease_token: &str,
        response: Value,
    ) -> ClientResult<Operation> {
        let body = json!({ "lease_token": lease_token, "response": response });
        let a = self
            .call(
                Method::POST,
                &format!("/operations/{id}:complete"),
                Some(&body),
                None,
            )
            .await?;
        Self::decode(a.body)
    }

    /// `retryable = true` hands the operation back to the queue (up to `max_attempts`).
    pub async fn fail(
        &self,
        id: &str,
        lease_token: &str,
        error: &OperationError,
        retryable: bool,
    ) -> ClientResult<Operation> {
        let body = json!({ "lease_token": lease_token, "error": error, "retryable": retryable });
        let a = self
            .call(
                Method::POST,
                &format!("/operations/{id}:fail"),
                Some(&body),
                None,
            )
            .await?;
        Self::decode(a.body)
    }
}

/// `Retry-After` as seconds or as an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(text).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }
}
