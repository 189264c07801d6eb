//! Sending: building one signed webhook request (headers, signatures, traceparent),
//! sending it through the SSRF-guarded client, and describing what came back. What
//! the result means for the delivery is decided in herald-core
//! ([`RetrySchedule::decide`](herald_core::retry::RetrySchedule::decide)).

use crate::ssrf::{self, SsrfError};
use herald_core::retry::AttemptResult;
use herald_core::signing::signature_headers;
use herald_core::Timestamp;
use herald_store::DeliveryJob;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// At most this much of a response body is read and kept with the attempt.
pub const EXCERPT_LIMIT: usize = 4096;
pub use herald_core::retry::MAX_RETRY_AFTER;
pub const USER_AGENT: &str = "Herald/0.1";

/// The reqwest resolver that applies the SSRF rules to the addresses actually used.
#[derive(Debug, Clone, Copy)]
struct GuardedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = ssrf::resolve_allowed(&host, 0, allow_private).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Builds the HTTP client every delivery goes through: no redirects, no proxies (a
/// proxy would connect on our behalf and bypass the address check), the SSRF-aware
/// resolver, and a per-request timeout.
pub(crate) fn build_client(
    timeout: Duration,
    allow_private: bool,
) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(timeout)
        .user_agent(USER_AGENT)
        .dns_resolver(Arc::new(GuardedResolver { allow_private }))
        .build()
}

/// The headers of one delivery request, signature included. `body` must be the exact
/// bytes sent. Pure, so tests can verify the signatures.
pub fn delivery_headers(
    job: &DeliveryJob,
    attempt_number: u32,
    now: Timestamp,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    let event_id = job.event.id.to_string();
    let secrets = job.webhook.live_secrets(now);
    let mut headers = vec![("Content-Type", "application/json".to_owned())];
    headers.extend(signature_headers(
        job.webhook.format,
        &secrets,
        &event_id,
        &job.event.event_type,
        now,
        body,
    ));
    headers.push(("X-Delivery-Id", job.delivery.id.to_string()));
    headers.push(("X-Delivery-Attempt", attempt_number.to_string()));
    headers.push(("traceparent", traceparent(job, attempt_number)));
    headers
}

/// The W3C `traceparent` of one attempt: `00-<trace-id>-<parent-id>-01`.
///
/// The trace is derived from the event: its trace-id is the event id's 128 bits, so
/// every attempt to every webhook for one event (and the event's broker messages) share
/// one trace a consumer can look up by event id. The parent-id is new per attempt:
/// the low 64 bits of the delivery id XOR the attempt number, so it is unique per
/// attempt and the headers stay a pure function of their inputs.
pub fn traceparent(job: &DeliveryJob, attempt_number: u32) -> String {
    traceparent_for(job.event.id, job.delivery.id, attempt_number)
}

/// The W3C `traceparent` of one try of a delivery, webhook or broker: the trace is the
/// event (its id's 128 bits), the span the delivery and attempt.
pub fn traceparent_for(
    event: herald_core::ids::EventId,
    delivery: herald_core::ids::DeliveryId,
    attempt_number: u32,
) -> String {
    let trace_id = event.as_u128();
    let span_id = match (delivery.as_u128() as u64) ^ u64::from(attempt_number) {
        0 => 1, // all-zero ids are invalid
        id => id,
    };
    format!("00-{trace_id:032x}-{span_id:016x}-01")
}

/// What one request came to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SendResult {
    pub status_code: Option<u16>,
    /// Why the attempt failed, short and clear; `None` on a 2xx.
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
    pub latency_ms: u64,
    /// A `Retry-After` that came with a 429 or 503.
    pub retry_after: Option<Duration>,
}

impl SendResult {
    /// A 2xx whose response arrived whole (up to the excerpt) within the timeout.
    pub fn is_success(&self) -> bool {
        matches!(self.status_code, Some(c) if (200..300).contains(&c)) && self.error.is_none()
    }

    /// What the retry decision needs of it.
    pub fn as_attempt(&self) -> AttemptResult {
        AttemptResult {
            succeeded: self.is_success(),
            status_code: self.status_code,
            retry_after: self.retry_after,
        }
    }

    fn failed(error: String, started: Instant) -> Self {
        SendResult {
            error: Some(error),
            latency_ms: started.elapsed().as_millis() as u64,
            ..Default::default()
        }
    }
}

/// Sends one request. `now` is the attempt's time (the signed timestamp).
pub(crate) async fn send(
    client: &reqwest::Client,
    job: &DeliveryJob,
    attempt_number: u32,
    now: Timestamp,
    timeout: Duration,
    allow_private: bool,
) -> SendResult {
    let started = Instant::now();
    let url = match ssrf::check_url_shape(&job.webhook.url) {
        Ok(u) => u,
        Err(e) => return SendResult::failed(e.to_string(), started),
    };
    // IP-literal hosts never reach the resolver: check them here.
    let literal = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        _ => None,
    };
    if let Some(ip) = literal {
        if let Err(e) = ssrf::check_ip(ip, allow_private) {
            return SendResult::failed(e.to_string(), started);
        }
    }
    // Serialised once per event, whichever of its deliveries goes first (SharedEvent).
    let body = job.event.body();
    let mut request = client.post(url);
    for (name, value) in delivery_headers(job, attempt_number, now, &body) {
        request = request.header(name, value);
    }
    // The subscriber's own: checked at registration never to name one of the above.
    for (name, value) in job.webhook.options.headers.iter() {
        request = request.header(name, value);
    }
    let mut response = match request.body(body).send().await {
        Ok(r) => r,
        Err(e) => return SendResult::failed(describe_error(&e, timeout), started),
    };
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .map(|v| truncate(&String::from_utf8_lossy(v.as_bytes()), 200));
    let retry_after = if status == 429 || status == 503 {
        response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, now))
    } else {
        None
    };
    let (excerpt, body_error) = read_excerpt(&mut response).await;
    let latency_ms = started.elapsed().as_millis() as u64;
    let error = match status {
        // The status line said yes, but the response broke (reset, timeout) before its
        // first bytes were in: the receiver may not have finished, so try again.
        200..=299 => {
            body_error.map(|e| format!("response failed: {}", describe_error(&e, timeout)))
        }
        300..=399 => Some(match location {
            Some(loc) => format!("redirect ({status}) not followed: Location {loc}"),
            None => format!("redirect ({status}) not followed"),
        }),
        _ => Some(format!("HTTP {status}")),
    };
    SendResult {
        status_code: Some(status),
        error,
        response_excerpt: excerpt,
        latency_ms,
        retry_after,
    }
}

/// Reads at most [`EXCERPT_LIMIT`] bytes of the body, chunk by chunk; the rest is
/// never read (dropping the response closes the connection). A body that fails before
/// the limit keeps what arrived, and the failure is handed back.
async fn read_excerpt(
    response: &mut reqwest::Response,
) -> (Option<String>, Option<reqwest::Error>) {
    let mut buf: Vec<u8> = Vec::new();
    let mut failure = None;
    while buf.len() < EXCERPT_LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let take = chunk.len().min(EXCERPT_LIMIT - buf.len());
                buf.extend_from_slice(&chunk[..take]);
            }
            Ok(None) => break,
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let excerpt = if buf.is_empty() {
        None
    } else {
        Some(String::from_utf8_lossy(&buf).into_owned())
    };
    (excerpt, failure)
}

fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        text.to_owned()
    } else {
        let mut out: String = text.chars().take(max_chars).collect();
        out.push('…');
        out
    }
}

/// A short, clear description of a failed request.
pub(crate) fn describe_error(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("timed out after {}", humantime::format_duration(timeout));
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut innermost = e.to_string();
    while let Some(err) = source {
        if let Some(ssrf) = err.downcast_ref::<SsrfError>() {
            return ssrf.to_string();
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(ssrf) = io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<SsrfError>())
            {
                return ssrf.to_string();
            }
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return "connection refused".into(),
                std::io::ErrorKind::ConnectionReset => return "connection reset by peer".into(),
                std::io::ErrorKind::TimedOut => {
                    return format!("timed out after {}", humantime::format_duration(timeout))
                }
                _ => {}
            }
        }
        innermost = err.to_string();
        source = err.source();
    }
    if is_tls_failure(e) {
        return format!("TLS handshake failed: {innermost}");
    }
    if e.is_connect() {
        format!("connection failed: {innermost}")
    } else {
        format!("request failed: {innermost}")
    }
}

/// Whether a connect error came from TLS (rustls names its errors in their text;
/// it is not a dependency here, so the chain is searched by message).
fn is_tls_failure(e: &reqwest::Error) -> bool {
    if !e.is_connect() {
        return false;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        let text = err.to_string().to_ascii_lowercase();
        if [
            "tls",
            "certificate",
            "handshake",
            "corrupt message",
            "invalid peer",
        ]
        .iter()
        .any(|needle| text.contains(needle))
        {
            return true;
        }
        source = err.source();
    }
    false
}

/// Parses `Retry-After`: delta-seconds or an HTTP-date (a date in the past is a zero wait).
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Absurdly long numbers saturate; the caller caps the wait anyway.
        let secs = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs.min(MAX_RETRY_AFTER.as_secs() * 2)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let millis = match at.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_millis().min(i64::MAX as u128) as i64,
        Err(_) => 0,
    };
    Some(now.until(Timestamp::from_millis(millis)))
}

#[cfg(test)]
pub(crate) mod tests;
