//! Building and sending one signed webhook request, and judging its result.

use crate::ssrf::{self, SsrfError};
use herald_core::retry::RetrySchedule;
use herald_core::signing::{herald_signature, standard_signature, SignatureFormat};
use herald_core::Timestamp;
use herald_store::{AttemptOutcome, DeliveryJob};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// At most this much of a response body is read and kept with the attempt.
pub const EXCERPT_LIMIT: usize = 4096;
/// The longest wait a `Retry-After` can ask for.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
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
    match job.webhook.format {
        SignatureFormat::Herald => {
            let ts = now.to_rfc3339_seconds();
            let sig = secrets
                .iter()
                .map(|s| herald_signature(s, &ts, body))
                .collect::<Vec<_>>()
                .join(" ");
            headers.push(("X-Event-Id", event_id));
            headers.push(("X-Event-Type", job.event.event_type.clone()));
            headers.push(("X-Timestamp", ts));
            headers.push(("X-Signature", sig));
        }
        SignatureFormat::StandardWebhooks => {
            let unix = now.unix_seconds();
            let sig = secrets
                .iter()
                .map(|s| standard_signature(s, &event_id, unix, body))
                .collect::<Vec<_>>()
                .join(" ");
            headers.push(("webhook-id", event_id));
            headers.push(("webhook-timestamp", unix.to_string()));
            headers.push(("webhook-signature", sig));
        }
    }
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
    let body = match serde_json::to_vec(&job.event.to_body()) {
        Ok(b) => b,
        Err(e) => return SendResult::failed(format!("could not encode the event: {e}"), started),
    };
    let mut request = client.post(url);
    for (name, value) in delivery_headers(job, attempt_number, now, &body) {
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

/// The store's verdict on an attempt: what happens to the delivery, and whether the
/// webhook is disabled.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub outcome: AttemptOutcome,
    pub disable_reason: Option<String>,
}

/// Decides a delivery's fate after an attempt. `window_attempts` counts attempts made
/// before this one; `now` is when the attempt ended; `jitter` is in `[0, 1)`.
pub fn decide(
    result: &SendResult,
    window_attempts: u32,
    schedule: &RetrySchedule,
    now: Timestamp,
    jitter: f64,
) -> Verdict {
    if result.is_success() {
        return Verdict {
            outcome: AttemptOutcome::Succeeded,
            disable_reason: None,
        };
    }
    if result.status_code == Some(410) {
        return Verdict {
            outcome: AttemptOutcome::Failed,
            disable_reason: Some("endpoint answered 410 Gone".to_owned()),
        };
    }
    let Some(mut wait) = schedule.next_wait(window_attempts.saturating_add(1), jitter) else {
        return Verdict {
            outcome: AttemptOutcome::Failed,
            disable_reason: None,
        };
    };
    if matches!(result.status_code, Some(429 | 503)) {
        if let Some(asked) = result.retry_after {
            wait = wait.max(asked).min(MAX_RETRY_AFTER);
        }
    }
    Verdict {
        outcome: AttemptOutcome::RetryAt(now.plus(wait)),
        disable_reason: None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use herald_core::event::Event;
    use herald_core::ids::*;
    use herald_core::signing::verify_herald;
    use herald_store::{Delivery, DeliveryStatus, Destination, Webhook};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const T0: Timestamp = Timestamp(1_775_834_400_000); // 2026-04-10T15:20:00Z

    pub(crate) fn job(url: &str, format: SignatureFormat) -> DeliveryJob {
        let event = Event {
            id: EventId::generate(),
            tenant: None,
            event_type: "payment.succeeded".into(),
            key: Some("pay_42".into()),
            sequence: Some(3),
            data: serde_json::json!({ "payment_id": "pay_42", "amount": 4599 }),
            created_at: T0,
        };
        let webhook = Webhook {
            id: WebhookId::generate(),
            tenant: None,
            url: url.into(),
            events: vec![],
            format,
            secret: match format {
                SignatureFormat::Herald => "hsec_new".into(),
                SignatureFormat::StandardWebhooks => {
                    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()
                }
            },
            secret_version: 2,
            previous_secret: Some((
                match format {
                    SignatureFormat::Herald => "hsec_old".into(),
                    SignatureFormat::StandardWebhooks => "whsec_c2VjcmV0LW9sZA==".into(),
                },
                T0.plus(Duration::from_secs(3600)),
            )),
            schedule: None,
            max_concurrency: None,
            disabled: false,
            disabled_reason: None,
            description: None,
            created_at: T0,
            updated_at: T0,
        };
        let delivery = Delivery {
            id: DeliveryId::generate(),
            event_id: event.id,
            destination: Destination::Webhook(webhook.id),
            ordering_key: None,
            tenant: None,
            event_type: event.event_type.clone(),
            status: DeliveryStatus::Pending,
            attempts: 0,
            window_attempts: 0,
            next_attempt_at: Some(T0),
            last_status_code: None,
            last_error: None,
            created_at: T0,
            updated_at: T0,
        };
        DeliveryJob {
            delivery,
            event,
            webhook,
            unsendable: None,
        }
    }

    fn header<'a>(headers: &'a [(&'static str, String)], name: &str) -> &'a str {
        headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .unwrap()
    }

    #[test]
    fn herald_headers_sign_with_every_live_secret() {
        let j = job("https://example.com/hooks", SignatureFormat::Herald);
        let body = serde_json::to_vec(&j.event.to_body()).unwrap();
        let h = delivery_headers(&j, 3, T0, &body);
        assert_eq!(header(&h, "X-Timestamp"), "2026-04-10T15:20:00Z");
        assert_eq!(header(&h, "X-Event-Id"), j.event.id.to_string());
        assert_eq!(header(&h, "X-Event-Type"), "payment.succeeded");
        assert_eq!(header(&h, "Content-Type"), "application/json");
        assert_eq!(header(&h, "X-Delivery-Id"), j.delivery.id.to_string());
        assert_eq!(header(&h, "X-Delivery-Attempt"), "3");
        let tp = header(&h, "traceparent");
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(parts.len(), 4, "{tp}");
        assert_eq!(parts[0], "00");
        assert_eq!(parts[1], format!("{:032x}", j.event.id.as_u128()));
        assert_eq!(parts[2].len(), 16);
        assert_ne!(parts[2], "0000000000000000");
        assert_eq!(parts[3], "01");
        // Same event, next attempt: same trace, another parent.
        let next = delivery_headers(&j, 4, T0, &body);
        let next_parts: Vec<&str> = header(&next, "traceparent").split('-').collect();
        assert_eq!(next_parts[1], parts[1]);
        assert_ne!(next_parts[2], parts[2]);
        let sig = header(&h, "X-Signature");
        let parts: Vec<&str> = sig.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.starts_with("sha256=")));
        for secret in ["hsec_new", "hsec_old"] {
            assert!(
                verify_herald(secret, "2026-04-10T15:20:00Z", &body, sig),
                "{secret}"
            );
        }
        assert!(!verify_herald(
            "hsec_other",
            "2026-04-10T15:20:00Z",
            &body,
            sig
        ));
        // Once the grace period is over only the current secret signs.
        let later = T0.plus(Duration::from_secs(7200));
        let h = delivery_headers(&j, 1, later, &body);
        let sig = header(&h, "X-Signature");
        assert!(!sig.contains(' '));
        assert!(verify_herald(
            "hsec_new",
            &later.to_rfc3339_seconds(),
            &body,
            sig
        ));
        assert!(!verify_herald(
            "hsec_old",
            &later.to_rfc3339_seconds(),
            &body,
            sig
        ));
    }

    #[test]
    fn standard_webhooks_headers() {
        let j = job(
            "https://example.com/hooks",
            SignatureFormat::StandardWebhooks,
        );
        let body = serde_json::to_vec(&j.event.to_body()).unwrap();
        let h = delivery_headers(&j, 1, T0, &body);
        let id = j.event.id.to_string();
        assert_eq!(header(&h, "webhook-id"), id);
        assert_eq!(header(&h, "webhook-timestamp"), "1775834400");
        let expected = format!(
            "{} {}",
            standard_signature(
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                &id,
                1775834400,
                &body
            ),
            standard_signature("whsec_c2VjcmV0LW9sZA==", &id, 1775834400, &body)
        );
        assert_eq!(header(&h, "webhook-signature"), expected);
        assert!(h.iter().all(|(n, _)| *n != "X-Signature"));
    }

    #[test]
    fn retry_after_parsing() {
        assert_eq!(parse_retry_after("120", T0), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 ", T0), Some(Duration::ZERO));
        // 2026-04-10T15:20:00Z + 90 s.
        assert_eq!(
            parse_retry_after("Fri, 10 Apr 2026 15:21:30 GMT", T0),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 2026 00:00:00 GMT", T0),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", T0), None);
        assert_eq!(parse_retry_after("-5", T0), None);
        assert_eq!(parse_retry_after("1.5", T0), None);
        assert_eq!(parse_retry_after("", T0), None);
        assert!(parse_retry_after("99999999999999999999999", T0).unwrap() >= MAX_RETRY_AFTER);
    }

    fn status(code: u16, retry_after: Option<u64>) -> SendResult {
        SendResult {
            status_code: Some(code),
            error: (code >= 300).then(|| format!("HTTP {code}")),
            retry_after: retry_after.map(Duration::from_secs),
            ..Default::default()
        }
    }

    #[test]
    fn verdicts() {
        let s = RetrySchedule::default();
        assert_eq!(
            decide(&status(204, None), 0, &s, T0, 0.5).outcome,
            AttemptOutcome::Succeeded
        );
        let gone = decide(&status(410, None), 0, &s, T0, 0.5);
        assert_eq!(gone.outcome, AttemptOutcome::Failed);
        assert_eq!(
            gone.disable_reason.as_deref(),
            Some("endpoint answered 410 Gone")
        );
        // After the first attempt (0 made before it) the wait is the schedule's second entry.
        assert_eq!(
            decide(&status(500, None), 0, &s, T0, 0.5).outcome,
            AttemptOutcome::RetryAt(T0.plus(Duration::from_secs(5)))
        );
        let timeout = SendResult {
            error: Some("timed out after 10s".into()),
            ..Default::default()
        };
        assert_eq!(
            decide(&timeout, 1, &s, T0, 0.5).outcome,
            AttemptOutcome::RetryAt(T0.plus(Duration::from_secs(300)))
        );
        // The tenth attempt failed: the window is used up.
        assert_eq!(
            decide(&status(500, None), 9, &s, T0, 0.5).outcome,
            AttemptOutcome::Failed
        );
        // Retry-After on 429/503 lengthens the wait, capped at 24 h; ignored on other statuses.
        assert_eq!(
            decide(&status(429, Some(60)), 0, &s, T0, 0.5).outcome,
            AttemptOutcome::RetryAt(T0.plus(Duration::from_secs(60)))
        );
        assert_eq!(
            decide(&status(503, Some(1)), 0, &s, T0, 0.5).outcome,
            AttemptOutcome::RetryAt(T0.plus(Duration::from_secs(5)))
        );
        assert_eq!(
            decide(&status(503, Some(10 * 86_400)), 0, &s, T0, 0.5).outcome,
            AttemptOutcome::RetryAt(T0.plus(MAX_RETRY_AFTER))
        );
        assert_eq!(
            decide(&status(500, Some(60)), 0, &s, T0, 0.5).outcome,
            AttemptOutcome::RetryAt(T0.plus(Duration::from_secs(5)))
        );
        assert_eq!(
            decide(&status(429, Some(60)), 9, &s, T0, 0.5).outcome,
            AttemptOutcome::Failed
        );
        // A 3xx is a failure too.
        assert!(matches!(
            decide(&status(301, None), 0, &s, T0, 0.5).outcome,
            AttemptOutcome::RetryAt(_)
        ));
    }

    /// A one-shot HTTP server on loopback: answers every connection with `response`,
    /// and hands back each request it read.
    pub(crate) async fn serve(
        response: Vec<u8>,
    ) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let response = response.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let request = read_request(&mut sock).await;
                    let _ = tx.send(request);
                    let _ = sock.write_all(&response).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        (format!("http://{addr}"), rx)
    }

    pub(crate) async fn read_request(sock: &mut tokio::net::TcpStream) -> String {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = sock.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf);
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text[..end]
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    break;
                }
            }
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    fn response(status: &str, extra: &str, body: &[u8]) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(body);
        out
    }

    #[tokio::test]
    async fn sends_a_signed_request_and_keeps_a_short_excerpt() {
        let big = vec![b'x'; 100_000];
        let (base, mut requests) = serve(response("200 OK", "", &big)).await;
        let client = build_client(Duration::from_secs(5), true).unwrap();
        let j = job(&format!("{base}/hooks"), SignatureFormat::Herald);
        let result = send(&client, &j, 1, T0, Duration::from_secs(5), true).await;
        assert_eq!(result.status_code, Some(200));
        assert!(result.is_success());
        assert_eq!(result.error, None);
        assert_eq!(
            result.response_excerpt.as_ref().map(|s| s.len()),
            Some(EXCERPT_LIMIT)
        );
        let request = requests.recv().await.unwrap();
        assert!(request.starts_with("POST /hooks HTTP/1.1\r\n"), "{request}");
        let lower = request.to_ascii_lowercase();
        assert!(lower.contains("user-agent: herald/0.1\r\n"));
        assert!(lower.contains("content-type: application/json\r\n"));
        let body = serde_json::to_vec(&j.event.to_body()).unwrap();
        assert!(request.ends_with(std::str::from_utf8(&body).unwrap()));
        let sig = request
            .lines()
            .find_map(|l| {
                l.strip_prefix("x-signature: ")
                    .or_else(|| l.strip_prefix("X-Signature: "))
            })
            .unwrap();
        assert!(verify_herald(
            "hsec_old",
            "2026-04-10T15:20:00Z",
            &body,
            sig
        ));
    }

    #[tokio::test]
    async fn statuses_become_clear_errors() {
        let client = build_client(Duration::from_secs(5), true).unwrap();
        let (base, _r) = serve(response(
            "301 Moved Permanently",
            "Location: https://elsewhere.example/\r\n",
            b"",
        ))
        .await;
        let result = send(
            &client,
            &job(&base, SignatureFormat::Herald),
            1,
            T0,
            Duration::from_secs(5),
            true,
        )
        .await;
        assert_eq!(result.status_code, Some(301));
        assert_eq!(
            result.error.as_deref(),
            Some("redirect (301) not followed: Location https://elsewhere.example/")
        );

        let (base, _r) = serve(response(
            "503 Service Unavailable",
            "Retry-After: 120\r\n",
            b"busy",
        ))
        .await;
        let result = send(
            &client,
            &job(&base, SignatureFormat::Herald),
            1,
            T0,
            Duration::from_secs(5),
            true,
        )
        .await;
        assert_eq!(result.error.as_deref(), Some("HTTP 503"));
        assert_eq!(result.retry_after, Some(Duration::from_secs(120)));
        assert_eq!(result.response_excerpt.as_deref(), Some("busy"));

        let (base, _r) = serve(response(
            "500 Internal Server Error",
            "Retry-After: 120\r\n",
            b"",
        ))
        .await;
        let result = send(
            &client,
            &job(&base, SignatureFormat::Herald),
            1,
            T0,
            Duration::from_secs(5),
            true,
        )
        .await;
        assert_eq!(result.retry_after, None);
        assert_eq!(result.response_excerpt, None);
    }

    #[tokio::test]
    async fn connection_failures_and_refusals() {
        // A port nobody listens on: bind, note the port, close.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let client = build_client(Duration::from_secs(5), true).unwrap();
        let url = format!("http://127.0.0.1:{port}/");
        let result = send(
            &client,
            &job(&url, SignatureFormat::Herald),
            1,
            T0,
            Duration::from_secs(5),
            true,
        )
        .await;
        assert_eq!(result.status_code, None);
        assert_eq!(result.error.as_deref(), Some("connection refused"));

        // Loopback refused when private destinations are not allowed: a literal...
        let strict = build_client(Duration::from_secs(5), false).unwrap();
        let result = send(
            &strict,
            &job(&url, SignatureFormat::Herald),
            1,
            T0,
            Duration::from_secs(5),
            false,
        )
        .await;
        assert_eq!(
            result.error.as_deref(),
            Some(
                "destination 127.0.0.1 is a loopback address; set webhooks.allow_private_destinations to allow it"
            )
        );
        // ...and a name, refused by the resolver at connect time.
        let url = format!("http://localhost:{port}/");
        let result = send(
            &strict,
            &job(&url, SignatureFormat::Herald),
            1,
            T0,
            Duration::from_secs(5),
            false,
        )
        .await;
        let error = result.error.unwrap();
        assert!(
            error.starts_with("destination localhost resolves to "),
            "{error}"
        );
        assert!(error.contains("loopback"), "{error}");
    }

    /// A loopback listener that counts the connections it accepts (and answers 200).
    async fn counting_listener() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c = count.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    read_request(&mut sock).await;
                    let _ = sock
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        )
                        .await;
                });
            }
        });
        (port, count)
    }

    /// DNS rebinding: a name is checked against the addresses the connection really
    /// uses, at send time. `localhost` stands in for a name that now resolves to
    /// loopback: with private destinations refused, no connection is even opened.
    #[tokio::test]
    async fn the_connection_uses_the_guarded_resolver() {
        let (port, accepted) = counting_listener().await;
        let url = format!("http://localhost:{port}/");
        let strict = build_client(Duration::from_secs(5), false).unwrap();
        let result = send(
            &strict,
            &job(&url, SignatureFormat::Herald),
            1,
            T0,
            Duration::from_secs(5),
            false,
        )
        .await;
        let error = result.error.unwrap();
        assert!(error.contains("loopback"), "{error}");
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "a refused name was connected to"
        );
        // The control: allowed, the same name reaches the same listener.
        let lenient = build_client(Duration::from_secs(5), true).unwrap();
        let result = send(
            &lenient,
            &job(&url, SignatureFormat::Herald),
            1,
            T0,
            Duration::from_secs(5),
            true,
        )
        .await;
        assert!(result.is_success(), "{result:?}");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    /// A redirect is reported, never followed: its target sees no request, even when
    /// the target would be allowed.
    #[tokio::test]
    async fn redirects_are_never_followed() {
        let (target_port, accepted) = counting_listener().await;
        for status in [
            "301 Moved Permanently",
            "302 Found",
            "307 Temporary Redirect",
            "308 Permanent Redirect",
        ] {
            let location = format!("Location: http://127.0.0.1:{target_port}/next\r\n");
            let (base, _r) = serve(response(status, &location, b"")).await;
            let client = build_client(Duration::from_secs(5), true).unwrap();
            let result = send(
                &client,
                &job(&base, SignatureFormat::Herald),
                1,
                T0,
                Duration::from_secs(5),
                true,
            )
            .await;
            assert!(!result.is_success());
            let error = result.error.unwrap();
            assert!(
                error.starts_with(&format!("redirect ({})", &status[..3])),
                "{error}"
            );
        }
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "a redirect was followed"
        );
    }

    #[tokio::test]
    async fn a_silent_endpoint_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                held.push(sock); // accept, never answer
            }
        });
        let timeout = Duration::from_millis(100);
        let client = build_client(timeout, true).unwrap();
        let result = send(
            &client,
            &job(&format!("http://{addr}/"), SignatureFormat::Herald),
            1,
            T0,
            timeout,
            true,
        )
        .await;
        assert_eq!(result.error.as_deref(), Some("timed out after 100ms"));
    }
}
