//! Webhook verification for both formats Herald sends: its own (`X-Signature:
//! sha256=HEX` over `X-Timestamp + "." + body`) and Standard Webhooks (`webhook-id`,
//! `webhook-timestamp`, `webhook-signature: v1,BASE64`, or `v1a,BASE64` for an ed25519
//! webhook, verified with its `whpk_` public key). Comparisons are constant-time;
//! a timestamp outside the tolerance is refused, so a captured request cannot be replayed.

use herald_core::signing::{herald_signature, standard_signature, verify_ed25519, SignatureFormat};
use herald_core::Timestamp;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use subtle::ConstantTimeEq;

/// Where the verifier reads headers from; names are matched case-insensitively.
pub trait HeaderSource {
    fn header(&self, name: &str) -> Option<&str>;
}

impl HeaderSource for reqwest::header::HeaderMap {
    fn header(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| v.to_str().ok())
    }
}

impl HeaderSource for [(String, String)] {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl HeaderSource for Vec<(String, String)> {
    fn header(&self, name: &str) -> Option<&str> {
        self.as_slice().header(name)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("header {0} is malformed")]
    MalformedHeader(&'static str),
    #[error(
        "timestamp is {skew_seconds}s away from now, beyond the {tolerance_seconds}s tolerance"
    )]
    OutsideTolerance {
        skew_seconds: i64,
        tolerance_seconds: u64,
    },
    #[error("no signature matches any of the secrets")]
    BadSignature,
}

/// A request that passed verification: dedupe on `event_id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedWebhook {
    pub format: SignatureFormat,
    /// `X-Event-Id` or `webhook-id`.
    pub event_id: String,
    /// Seconds since the Unix epoch, from the signed timestamp.
    pub timestamp: i64,
}

/// Verifies webhook requests against one or more secrets (several while you rotate).
#[derive(Clone, Debug)]
pub struct WebhookVerifier {
    secrets: Vec<String>,
    tolerance: Duration,
}

impl WebhookVerifier {
    /// One secret, exactly as Herald showed it (`hsec_…` or `whsec_…`, or the `whpk_…`
    /// public key of a `standard-webhooks-ed25519` webhook); tolerance 5 minutes.
    pub fn new(secret: impl Into<String>) -> Self {
        Self {
            secrets: vec![secret.into()],
            tolerance: Duration::from_secs(300),
        }
    }

    /// Accepts a signature by any of these secrets.
    pub fn with_secrets(secrets: impl IntoIterator<Item = String>) -> Self {
        Self {
            secrets: secrets.into_iter().collect(),
            tolerance: Duration::from_secs(300),
        }
    }

    /// How far the signed timestamp may be from now, either way.
    pub fn tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// Verifies against the system clock. The format is chosen by the headers present.
    pub fn verify<H: HeaderSource + ?Sized>(
        &self,
        headers: &H,
        body: &[u8],
    ) -> Result<VerifiedWebhook, VerifyError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.verify_at(headers, body, now)
    }

    /// Verifies as if the time were `now_unix` (seconds): for tests and offline checks.
    pub fn verify_at<H: HeaderSource + ?Sized>(
        &self,
        headers: &H,
        body: &[u8],
        now_unix: i64,
    ) -> Result<VerifiedWebhook, VerifyError> {
        if headers.header("webhook-signature").is_some() {
            self.verify_standard(headers, body, now_unix)
        } else if headers.header("x-signature").is_some() {
            self.verify_herald(headers, body, now_unix)
        } else {
            Err(VerifyError::MissingHeader(
                "X-Signature or webhook-signature",
            ))
        }
    }

    fn check_skew(&self, timestamp: i64, now: i64) -> Result<(), VerifyError> {
        // Saturating: a hostile `webhook-timestamp` of i64::MIN must not overflow.
        let skew = now.saturating_sub(timestamp);
        if skew.unsigned_abs() > self.tolerance.as_secs() {
            return Err(VerifyError::OutsideTolerance {
                skew_seconds: skew,
                tolerance_seconds: self.tolerance.as_secs(),
            });
        }
        Ok(())
    }

    fn verify_herald<H: HeaderSource + ?Sized>(
        &self,
        headers: &H,
        body: &[u8],
        now: i64,
    ) -> Result<VerifiedWebhook, VerifyError> {
        let signature = headers
            .header("x-signature")
            .ok_or(VerifyError::MissingHeader("X-Signature"))?;
        let ts_text = headers
            .header("x-timestamp")
            .ok_or(VerifyError::MissingHeader("X-Timestamp"))?;
        let event_id = headers
            .header("x-event-id")
            .ok_or(VerifyError::MissingHeader("X-Event-Id"))?;
        let ts = Timestamp::parse_rfc3339(ts_text.trim())
            .ok_or(VerifyError::MalformedHeader("X-Timestamp"))?
            .unix_seconds();
        self.check_skew(ts, now)?;
        // An ed25519 key (`whpk_`) is public: it never keys an HMAC, or anyone who was
        // shown it could sign a Herald-format request that passes.
        let matched = self
            .secrets
            .iter()
            .filter(|s| !is_ed25519_key(s))
            .any(|secret| {
                let expected = herald_signature(secret, ts_text, body);
                any_equal(signature, &expected)
            });
        if !matched {
            return Err(VerifyError::BadSignature);
        }
        Ok(VerifiedWebhook {
            format: SignatureFormat::Herald,
            event_id: event_id.to_owned(),
            timestamp: ts,
        })
    }

    fn verify_standard<H: HeaderSource + ?Sized>(
        &self,
        headers: &H,
        body: &[u8],
        now: i64,
    ) -> Result<VerifiedWebhook, VerifyError> {
        let signature = headers
            .header("webhook-signature")
            .ok_or(VerifyError::MissingHeader("webhook-signature"))?;
        let id = headers
            .header("webhook-id")
            .ok_or(VerifyError::MissingHeader("webhook-id"))?;
        let ts: i64 = headers
            .header("webhook-timestamp")
            .ok_or(VerifyError::MissingHeader("webhook-timestamp"))?
            .trim()
            .parse()
            .map_err(|_| VerifyError::MalformedHeader("webhook-timestamp"))?;
        self.check_skew(ts, now)?;
        let mut format = SignatureFormat::StandardWebhooks;
        let matched = self.secrets.iter().any(|secret| {
            if is_ed25519_key(secret) {
                let ok = verify_ed25519(secret, id, ts, body, signature);
                if ok {
                    format = SignatureFormat::StandardWebhooksEd25519;
                }
                ok
            } else {
                let expected = standard_signature(secret, id, ts, body);
                any_equal(signature, &expected)
            }
        });
        if !matched {
            return Err(VerifyError::BadSignature);
        }
        Ok(VerifiedWebhook {
            format,
            event_id: id.to_owned(),
            timestamp: ts,
        })
    }
}

/// Whether any of the space-separated candidates equals `expected`. Every candidate
/// is compared in constant time, and all are compared, so timing tells nothing.
fn any_equal(header: &str, expected: &str) -> bool {
    let mut found = subtle::Choice::from(0u8);
    for candidate in header.split_whitespace() {
        found |= candidate.as_bytes().ct_eq(expected.as_bytes());
    }
    found.into()
}

/// An ed25519 key of the `standard-webhooks-ed25519` format: verifies `v1a` only.
fn is_ed25519_key(secret: &str) -> bool {
    secret.starts_with("whpk_") || secret.starts_with("whsk_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ed25519_webhooks_verify_with_the_public_key() {
        use herald_core::signing::{ed25519_signature, generate_secret, public_key};
        let private = generate_secret(SignatureFormat::StandardWebhooksEd25519);
        let public = public_key(&private).unwrap();
        let body = br#"{"id":"evt_1"}"#;
        let headers = vec![
            ("webhook-id".to_owned(), "evt_1".to_owned()),
            ("webhook-timestamp".to_owned(), "1700000000".to_owned()),
            (
                "webhook-signature".to_owned(),
                ed25519_signature(&private, "evt_1", 1700000000, body),
            ),
        ];
        let ok = WebhookVerifier::new(public.clone())
            .verify_at(&headers, body, 1700000010)
            .unwrap();
        assert_eq!(ok.format, SignatureFormat::StandardWebhooksEd25519);
        assert_eq!(ok.event_id, "evt_1");
        let other = public_key(&generate_secret(SignatureFormat::StandardWebhooksEd25519)).unwrap();
        assert_eq!(
            WebhookVerifier::new(other).verify_at(&headers, body, 1700000010),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            WebhookVerifier::new(public).verify_at(&headers, b"{}", 1700000010),
            Err(VerifyError::BadSignature)
        );
    }

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const TS: &str = "2026-04-10T15:20:00Z";
    const TS_UNIX: i64 = 1775834400;

    #[test]
    fn extreme_timestamps_are_refused_without_overflow() {
        let v = WebhookVerifier::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        for (ts, now) in [
            (i64::MIN.to_string(), TS_UNIX),
            (i64::MAX.to_string(), -TS_UNIX),
            ("0".to_owned(), i64::MIN),
        ] {
            let headers = h(&[
                ("webhook-id", "msg_1"),
                ("webhook-timestamp", &ts),
                ("webhook-signature", "v1,AAAA"),
            ]);
            assert!(
                matches!(
                    v.verify_at(&headers, b"{}", now),
                    Err(VerifyError::OutsideTolerance { .. })
                ),
                "{ts} at {now}"
            );
        }
    }

    #[test]
    fn herald_format_accepts_any_of_several_signatures_and_secrets() {
        let body = br#"{"id":"evt_1"}"#;
        // The independent vector from herald-core (Python's hmac module).
        let good = "sha256=d58f2414b42865f14d6c748e6a5978b570470c07997a86f563f3ba139db30aaa";
        let headers = h(&[
            ("X-Event-Id", "evt_1"),
            ("X-Timestamp", TS),
            ("X-Signature", &format!("sha256=00ff {good}")),
        ]);
        let v = WebhookVerifier::new("hsec_test");
        let ok = v.verify_at(&headers, body, TS_UNIX + 10).unwrap();
        assert_eq!(ok.event_id, "evt_1");
        assert_eq!(ok.format, SignatureFormat::Herald);
        let rotated = WebhookVerifier::with_secrets(["hsec_new".into(), "hsec_test".into()]);
        assert!(rotated.verify_at(&headers, body, TS_UNIX).is_ok());
        assert_eq!(
            WebhookVerifier::new("hsec_other").verify_at(&headers, body, TS_UNIX),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            v.verify_at(&headers, b"{}", TS_UNIX),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn timestamps_outside_the_tolerance_are_refused_both_ways() {
        let body = br#"{"id":"evt_1"}"#;
        let sig = herald_signature("hsec_test", TS, body);
        let headers = h(&[
            ("x-event-id", "evt_1"),
            ("x-timestamp", TS),
            ("x-signature", &sig),
        ]);
        let v = WebhookVerifier::new("hsec_test");
        assert!(v.verify_at(&headers, body, TS_UNIX + 300).is_ok());
        assert!(matches!(
            v.verify_at(&headers, body, TS_UNIX + 301),
            Err(VerifyError::OutsideTolerance {
                skew_seconds: 301,
                ..
            })
        ));
        assert!(matches!(
            v.verify_at(&headers, body, TS_UNIX - 301),
            Err(VerifyError::OutsideTolerance { .. })
        ));
        let strict = v.clone().tolerance(Duration::from_secs(5));
        assert!(strict.verify_at(&headers, body, TS_UNIX + 6).is_err());
    }

    #[test]
    fn standard_webhooks_matches_the_specs_example() {
        let body = br#"{"test": 2432232314}"#;
        let headers = h(&[
            ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
            ("webhook-timestamp", "1614265330"),
            (
                "webhook-signature",
                "v1,bm9ldHZhbGlk v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            ),
        ]);
        let v = WebhookVerifier::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let ok = v.verify_at(&headers, body, 1614265330).unwrap();
        assert_eq!(ok.event_id, "msg_p5jXN8AQM9LWM0D4loKWxJek");
        assert_eq!(
            v.verify_at(&headers, br#"{"test": 1}"#, 1614265330),
            Err(VerifyError::BadSignature)
        );
        assert!(v.verify_at(&headers, body, 1614265330 + 3600).is_err());
    }

    #[test]
    fn missing_and_malformed_headers_are_named() {
        let v = WebhookVerifier::new("hsec_test");
        assert_eq!(
            v.verify_at(&h(&[]), b"", 0),
            Err(VerifyError::MissingHeader(
                "X-Signature or webhook-signature"
            ))
        );
        let bad = h(&[
            ("X-Signature", "sha256=00"),
            ("X-Timestamp", "yesterday"),
            ("X-Event-Id", "evt_1"),
        ]);
        assert_eq!(
            v.verify_at(&bad, b"", 0),
            Err(VerifyError::MalformedHeader("X-Timestamp"))
        );
    }

    #[test]
    fn a_public_key_never_keys_an_hmac() {
        // Anyone shown the `whpk_` key could otherwise sign a request in the Herald or the
        // `v1` format that passes.
        let secret =
            herald_core::signing::generate_secret(SignatureFormat::StandardWebhooksEd25519);
        let public = herald_core::signing::public_key(&secret).unwrap();
        let v = WebhookVerifier::new(public.as_str());
        let body = br#"{"id":"evt_1"}"#;
        let now = 1_775_834_400;
        let ts = Timestamp(now * 1000).to_rfc3339_seconds();
        let forged: Vec<(String, String)> = vec![
            ("x-event-id".into(), "evt_1".into()),
            ("x-timestamp".into(), ts.clone()),
            ("x-signature".into(), herald_signature(&public, &ts, body)),
        ];
        assert!(matches!(
            v.verify_at(&forged, body, now),
            Err(VerifyError::BadSignature)
        ));
        let forged: Vec<(String, String)> = vec![
            ("webhook-id".into(), "evt_1".into()),
            ("webhook-timestamp".into(), now.to_string()),
            (
                "webhook-signature".into(),
                standard_signature(&public, "evt_1", now, body),
            ),
        ];
        assert!(matches!(
            v.verify_at(&forged, body, now),
            Err(VerifyError::BadSignature)
        ));
        // The real thing, signed with the private key, passes.
        let real: Vec<(String, String)> = vec![
            ("webhook-id".into(), "evt_1".into()),
            ("webhook-timestamp".into(), now.to_string()),
            (
                "webhook-signature".into(),
                herald_core::signing::ed25519_signature(&secret, "evt_1", now, body),
            ),
        ];
        assert!(v.verify_at(&real, body, now).is_ok());
    }
}
