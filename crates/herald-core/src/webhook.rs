//! A webhook subscription: where events go and how they are signed.

use crate::ids::*;
use crate::pattern::EventPattern;
use crate::payload_filter::PayloadFilter;
use crate::retry::RetrySchedule;
use crate::signing::SignatureFormat;
use crate::Timestamp;

/// Whether a webhook's deliveries keep their events' order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ordering {
    /// As today: deliveries go concurrently, retries overtake (`sequence` lets a consumer
    /// rebuild order).
    #[default]
    None,
    /// Deliveries of one event key go one at a time, in `sequence` order, retries included;
    /// a failing or dead one holds back only its own key. Events without a key are unordered.
    Key,
}

impl Ordering {
    pub fn as_str(&self) -> &'static str {
        match self {
            Ordering::None => "none",
            Ordering::Key => "key",
        }
    }
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "none" => Some(Self::None),
            "key" => Some(Self::Key),
            _ => None,
        }
    }
}

/// `Debug` leaves the secrets out, so a webhook can be logged.
#[derive(Clone, PartialEq)]
pub struct Webhook {
    pub id: WebhookId,
    pub tenant: Option<TenantId>,
    pub url: String,
    pub events: Vec<EventPattern>,
    pub format: SignatureFormat,
    pub secret: String,
    pub secret_version: u32,
    /// The secret before the last rotation, still signing until the instant given.
    pub previous_secret: Option<(String, Timestamp)>,
    /// Overrides the configured schedule.
    pub schedule: Option<RetrySchedule>,
    /// At most this many requests in flight to this webhook.
    pub max_concurrency: Option<u32>,
    /// Whether deliveries of one event key go in order (`"ordering": "key"`).
    pub ordering: Ordering,
    /// Custom headers, a payload filter and a rate limit (all off by default).
    pub options: DeliveryOptions,
    pub disabled: bool,
    pub disabled_reason: Option<String>,
    pub description: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .field("url", &self.url)
            .field("events", &self.events)
            .field("format", &self.format)
            .field("secret", &"<redacted>")
            .field("secret_version", &self.secret_version)
            .field(
                "previous_secret",
                &self
                    .previous_secret
                    .as_ref()
                    .map(|(_, until)| ("<redacted>", until)),
            )
            .field("schedule", &self.schedule)
            .field("max_concurrency", &self.max_concurrency)
            .field("ordering", &self.ordering)
            .field("options", &self.options)
            .field("disabled", &self.disabled)
            .field("disabled_reason", &self.disabled_reason)
            .finish_non_exhaustive()
    }
}

impl Webhook {
    /// The secrets that sign a request sent at `now`: the current one, then the previous while its grace lasts.
    pub fn live_secrets(&self, now: Timestamp) -> Vec<&str> {
        let mut out = vec![self.secret.as_str()];
        if let Some((prev, until)) = &self.previous_secret {
            if now < *until {
                out.push(prev.as_str());
            }
        }
        out
    }
}

/// What a subscriber tunes about its deliveries beyond where they go and which events.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeliveryOptions {
    /// Sent on every request, after Herald's own (which they can never replace).
    pub headers: CustomHeaders,
    /// Only events whose body passes are delivered (decided at fan-out).
    pub filter: Option<PayloadFilter>,
    /// At most this many deliveries start per second (a burst of that many, then evenly).
    pub rate_limit: Option<u32>,
}

/// The most a webhook's `rate_limit` may be, in deliveries per second.
pub const MAX_RATE_LIMIT: u32 = 10_000;

/// Headers a subscriber adds to its deliveries: at most [`MAX_HEADERS`], none that Herald
/// sets or signs, none that are hop-by-hop or framing. Names are kept lowercase.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CustomHeaders(Vec<(String, String)>);

pub const MAX_HEADERS: usize = 20;
pub const MAX_HEADER_NAME_BYTES: usize = 64;
pub const MAX_HEADER_VALUE_BYTES: usize = 1024;
/// All names and values together.
pub const MAX_HEADERS_BYTES: usize = 4096;

/// Names a custom header may not have: hop-by-hop and framing headers (RFC 9110 7.6.1),
/// those a proxy sets to say where a request came from (a receiver behind one may trust
/// them: a tenant must not forge its client address), and those Herald sets itself.
/// `Authorization` and `Cookie` are allowed: they are how many receivers authenticate.
const DENIED_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "te",
    "expect",
    "http2-settings",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "user-agent",
    "traceparent",
    "tracestate",
    "x-signature",
    "x-timestamp",
    "forwarded",
    "via",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "client-ip",
    "x-cluster-client-ip",
    "fastly-client-ip",
    "x-originating-ip",
    "x-remote-ip",
    "x-remote-addr",
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-uri",
    "x-remote-user",
    "remote-user",
    "x-client-cert",
    "ssl-client-cert",
];
/// Prefixes of names Herald sets or signs (every present and future one of its own).
const DENIED_PREFIXES: &[&str] = &[
    "x-event-",
    "x-delivery-",
    "x-signature-",
    "webhook-",
    "x-herald-",
    "proxy-",
    "x-forwarded-",
    "x-original-forwarded-",
    "x-envoy-",
    // What an authenticating proxy says of the caller, or of its client certificate.
    "x-auth-request-",
    "x-webauth-",
    "x-ms-client-principal",
    "x-goog-authenticated-user-",
    "cf-access-",
    "x-amzn-oidc-",
    "x-ssl-client-",
];

impl CustomHeaders {
    /// Checks headers as sent in a request (name → value).
    pub fn parse<'a>(given: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, String> {
        let mut out: Vec<(String, String)> = Vec::new();
        let mut total = 0;
        for (name, value) in given {
            let lower = name.to_ascii_lowercase();
            if name.is_empty()
                || name.len() > MAX_HEADER_NAME_BYTES
                || !name.bytes().all(is_token_byte)
            {
                return Err(format!(
                    "header name {name:?} must be 1 to {MAX_HEADER_NAME_BYTES} letters, digits or !#$%&'*+-.^_`|~"
                ));
            }
            if DENIED_HEADERS.contains(&lower.as_str())
                || DENIED_PREFIXES.iter().any(|p| lower.starts_with(p))
            {
                return Err(format!(
                    "header {name:?} is set by Herald or by HTTP itself and cannot be replaced"
                ));
            }
            if value.len() > MAX_HEADER_VALUE_BYTES
                || !value
                    .bytes()
                    .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
            {
                return Err(format!(
                    "the value of header {name:?} must be at most {MAX_HEADER_VALUE_BYTES} bytes of visible ASCII, spaces and tabs"
                ));
            }
            if out.iter().any(|(n, _)| *n == lower) {
                return Err(format!("header {name:?} is given twice"));
            }
            total += name.len() + value.len();
            out.push((lower, value.trim().to_owned()));
        }
        if out.len() > MAX_HEADERS {
            return Err(format!("at most {MAX_HEADERS} headers"));
        }
        if total > MAX_HEADERS_BYTES {
            return Err(format!(
                "names and values together are at most {MAX_HEADERS_BYTES} bytes"
            ));
        }
        out.sort();
        Ok(Self(out))
    }

    /// Headers as stored, which were judged when they were set. None is judged by the
    /// request limits again (a stored row that no longer passed them would stall every
    /// claim and fan-out that reads it); a header this version denies, or that is not
    /// valid HTTP, is left out: it is not sent.
    pub fn from_stored<'a>(stored: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut out: Vec<(String, String)> = Vec::new();
        for (name, value) in stored {
            let lower = name.to_ascii_lowercase();
            let sendable = !name.is_empty()
                && name.bytes().all(is_token_byte)
                && value
                    .bytes()
                    .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
                && !DENIED_HEADERS.contains(&lower.as_str())
                && !DENIED_PREFIXES.iter().any(|p| lower.starts_with(p))
                && !out.iter().any(|(n, _)| *n == lower);
            if sendable {
                out.push((lower, value.trim().to_owned()));
            }
        }
        out.sort();
        Self(out)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_secrets() {
        let w = Webhook {
            id: WebhookId::generate(),
            tenant: None,
            url: "https://example.com/h".into(),
            events: vec![EventPattern::parse("a.*").unwrap()],
            format: SignatureFormat::Herald,
            secret: "hsec_current_secret_value".into(),
            secret_version: 2,
            previous_secret: Some(("hsec_previous_secret_value".into(), Timestamp(5))),
            schedule: None,
            max_concurrency: None,
            ordering: Ordering::None,
            options: DeliveryOptions::default(),
            disabled: false,
            disabled_reason: None,
            description: None,
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
        };
        let text = format!("{w:?}");
        assert!(
            !text.contains("current_secret") && !text.contains("previous_secret_value"),
            "{text}"
        );
        assert!(text.contains("https://example.com/h"));
        assert_eq!(
            w.live_secrets(Timestamp(4)),
            vec!["hsec_current_secret_value", "hsec_previous_secret_value"]
        );
        assert_eq!(
            w.live_secrets(Timestamp(5)),
            vec!["hsec_current_secret_value"]
        );
    }

    #[test]
    fn custom_headers_refuse_what_herald_or_http_owns() {
        let ok = CustomHeaders::parse([
            ("X-Api-Key", " k1 "),
            ("Authorization", "Bearer t"),
            ("Cookie", "s=1"),
        ])
        .unwrap();
        assert_eq!(
            ok.iter().collect::<Vec<_>>(),
            vec![
                ("authorization", "Bearer t"),
                ("cookie", "s=1"),
                ("x-api-key", "k1")
            ]
        );
        for name in [
            "Host",
            "content-length",
            "Content-Type",
            "Transfer-Encoding",
            "Connection",
            "X-Signature",
            "x-timestamp",
            "X-Event-Id",
            "X-Event-Whatever",
            "X-Delivery-Id",
            "webhook-signature",
            "Webhook-Id",
            "traceparent",
            "Forwarded",
            "X-Forwarded-For",
            "x-forwarded-host",
            "X-Forwarded-Proto",
            "X-Real-IP",
            "Via",
            "Proxy-Authorization",
            "proxy-anything",
            "TE",
            "Upgrade",
            "Expect",
            "X-Cluster-Client-IP",
            "Fastly-Client-IP",
            "X-Original-Forwarded-For",
            "Client-IP",
            "X-Originating-IP",
            "X-Envoy-External-Address",
            "X-Original-URL",
            "X-HTTP-Method-Override",
            "X-Remote-User",
            "X-Auth-Request-Email",
            "X-MS-Client-Principal-Name",
            "Cf-Access-Jwt-Assertion",
            "X-Amzn-Oidc-Identity",
            "X-SSL-Client-Cert",
        ] {
            let e = CustomHeaders::parse([(name, "v")]).unwrap_err();
            assert!(e.contains("cannot be replaced"), "{name}: {e}");
        }
        assert!(CustomHeaders::parse([("bad name", "v")]).is_err());
        assert!(CustomHeaders::parse([("x-a", "line\r\nX-Injected: 1")]).is_err());
        assert!(CustomHeaders::parse([("x-a", "1"), ("X-A", "2")])
            .unwrap_err()
            .contains("twice"));
        let names: Vec<String> = (0..=MAX_HEADERS).map(|i| format!("x-h{i}")).collect();
        assert!(
            CustomHeaders::parse(names.iter().map(|n| (n.as_str(), "v")))
                .unwrap_err()
                .contains("at most 20")
        );
        let big = "v".repeat(MAX_HEADER_VALUE_BYTES);
        let names: Vec<String> = (0..5).map(|i| format!("x-h{i}")).collect();
        assert!(
            CustomHeaders::parse(names.iter().map(|n| (n.as_str(), big.as_str())))
                .unwrap_err()
                .contains("4096")
        );
    }

    #[test]
    fn stored_headers_decode_and_only_sendable_ones_are_sent() {
        // Set under an earlier version's deny-list (X-Forwarded-For was allowed once) or
        // limits: the row still decodes; what this version denies, or is not HTTP, is not sent.
        let big = "v".repeat(MAX_HEADER_VALUE_BYTES + 1);
        let h = CustomHeaders::from_stored([
            ("X-Forwarded-For", "10.0.0.1"),
            ("X-Api-Key", " k1 "),
            ("bad name", "v"),
            ("x-crlf", "a\r\nX-Injected: 1"),
            ("x-big", big.as_str()),
            ("X-API-KEY", "second"),
        ]);
        assert_eq!(
            h.iter().collect::<Vec<_>>(),
            vec![("x-api-key", "k1"), ("x-big", big.as_str())]
        );
    }
}
