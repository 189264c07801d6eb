//! The sender's tests, against the kit's receiver; raw loopback sockets only where a test
//! reads the request's bytes or counts connections.

use super::*;
use herald_core::event::Event;
use herald_core::ids::*;
use herald_core::signing::{generate_secret, standard_signature, verify_herald, SignatureFormat};
use herald_store::{Delivery, DeliveryStatus, Destination, Webhook};
use herald_testkit::receiver::{Behavior, Receiver};
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
            SignatureFormat::StandardWebhooks => "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            SignatureFormat::StandardWebhooksEd25519 => generate_secret(format),
        },
        secret_version: 2,
        previous_secret: Some((
            match format {
                SignatureFormat::Herald => "hsec_old".into(),
                SignatureFormat::StandardWebhooks => "whsec_c2VjcmV0LW9sZA==".into(),
                SignatureFormat::StandardWebhooksEd25519 => generate_secret(format),
            },
            T0.plus(Duration::from_secs(3600)),
        )),
        schedule: None,
        max_concurrency: None,
        ordering: Default::default(),
        options: Default::default(),
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
        sequence: None,
        held_by: None,
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
        event: herald_store::SharedEvent::new(event),
        webhook: std::sync::Arc::new(webhook),
        unsendable: None,
        lease_until: T0.plus(std::time::Duration::from_secs(70)),
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

/// A one-shot HTTP server on loopback: answers every connection with `response`,
/// and hands back each request it read.
// Raw TCP: its test asserts on the request's bytes as sent (request line, header lines).
async fn serve(response: Vec<u8>) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
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

async fn read_request(sock: &mut tokio::net::TcpStream) -> String {
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
    let receiver = Receiver::start().await;
    receiver.script([
        Behavior::Redirect("https://elsewhere.example/".into()),
        Behavior::StatusWithBody(503, vec![("retry-after", "120".into())], "busy"),
        Behavior::StatusWithBody(500, vec![("retry-after", "120".into())], ""),
    ]);
    let result = send(
        &client,
        &job(&receiver.base, SignatureFormat::Herald),
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

    let result = send(
        &client,
        &job(&receiver.base, SignatureFormat::Herald),
        1,
        T0,
        Duration::from_secs(5),
        true,
    )
    .await;
    assert_eq!(result.error.as_deref(), Some("HTTP 503"));
    assert_eq!(result.retry_after, Some(Duration::from_secs(120)));
    assert_eq!(result.response_excerpt.as_deref(), Some("busy"));

    let result = send(
        &client,
        &job(&receiver.base, SignatureFormat::Herald),
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
    // A port nobody listens on (raw: a refused connection): bind, note the port, close.
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
// Raw TCP: it counts connections opened, not requests, which an HTTP server cannot see.
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
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
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
    let target = Receiver::start().await;
    for status in [
        "301 Moved Permanently",
        "302 Found",
        "307 Temporary Redirect",
        "308 Permanent Redirect",
    ] {
        let redirecting = Receiver::start().await;
        redirecting.set_fallback(Behavior::StatusWith(
            status[..3].parse().unwrap(),
            vec![("location", target.url("/next"))],
        ));
        let client = build_client(Duration::from_secs(5), true).unwrap();
        let result = send(
            &client,
            &job(&redirecting.base, SignatureFormat::Herald),
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
    assert_eq!(target.count(), 0, "a redirect was followed");
}

#[tokio::test]
async fn a_silent_endpoint_times_out() {
    let receiver = Receiver::start().await;
    receiver.set_fallback(Behavior::Hang(Duration::from_secs(60)));
    let timeout = Duration::from_millis(100);
    let client = build_client(timeout, true).unwrap();
    let result = send(
        &client,
        &job(&receiver.url("/"), SignatureFormat::Herald),
        1,
        T0,
        timeout,
        true,
    )
    .await;
    assert_eq!(result.error.as_deref(), Some("timed out after 100ms"));
}
