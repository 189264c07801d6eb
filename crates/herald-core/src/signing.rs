//! Webhook signatures, in Herald's own format (`X-Signature: sha256=HEX` over
//! `timestamp + "." + body`, as the reference text specifies) and in the Standard
//! Webhooks format (`webhook-signature: v1,BASE64` over `id.timestamp.body`, or with an
//! ed25519 key, `v1a,BASE64`, verified with the webhook's public key).

use base64::engine::general_purpose::STANDARD as B64;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How a webhook's requests are signed and which headers they carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureFormat {
    /// `X-Event-Id`, `X-Event-Type`, `X-Timestamp`, `X-Signature: sha256=HEX`.
    Herald,
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,BASE64`.
    StandardWebhooks,
    /// The same headers, `webhook-signature: v1a,BASE64`: an ed25519 signature. The private
    /// key (`whsk_`) never leaves Herald; receivers verify with the public key (`whpk_`).
    StandardWebhooksEd25519,
}

impl SignatureFormat {
    pub fn as_str(&self) -> &'static str {
        match self {
            SignatureFormat::Herald => "herald",
            SignatureFormat::StandardWebhooks => "standard-webhooks",
            SignatureFormat::StandardWebhooksEd25519 => "standard-webhooks-ed25519",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "herald" => Some(Self::Herald),
            "standard-webhooks" => Some(Self::StandardWebhooks),
            "standard-webhooks-ed25519" => Some(Self::StandardWebhooksEd25519),
            _ => None,
        }
    }

    /// Whether the secret is a private key that is never shown (receivers get the public key).
    pub fn is_asymmetric(&self) -> bool {
        matches!(self, SignatureFormat::StandardWebhooksEd25519)
    }
}

/// A new signing secret from a CSPRNG: 32 random bytes.
/// Herald format: `hsec_<base64url>`, used as the HMAC key by its UTF-8 bytes.
/// Standard Webhooks: `whsec_<base64>`, whose decoded bytes are the key.
/// Standard Webhooks with ed25519: `whsk_<base64>` of the private key's 32-byte seed.
pub fn generate_secret(format: SignatureFormat) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes); // ChaCha12 reseeded from the OS: a CSPRNG
    match format {
        SignatureFormat::Herald => format!("hsec_{}", B64URL.encode(bytes)),
        SignatureFormat::StandardWebhooks => format!("whsec_{}", B64.encode(bytes)),
        SignatureFormat::StandardWebhooksEd25519 => format!("whsk_{}", B64.encode(bytes)),
    }
}

/// The private key a `whsk_` secret holds; `None` for anything else.
fn ed25519_key(secret: &str) -> Option<ed25519_dalek::SigningKey> {
    let seed: [u8; 32] = B64
        .decode(secret.strip_prefix("whsk_")?)
        .ok()?
        .try_into()
        .ok()?;
    Some(ed25519_dalek::SigningKey::from_bytes(&seed))
}

/// The public key of a `whsk_` secret, as receivers are given it: `whpk_<base64>` of its
/// 32 bytes. `None` for a secret that is not an ed25519 private key.
pub fn public_key(secret: &str) -> Option<String> {
    ed25519_key(secret).map(|k| format!("whpk_{}", B64.encode(k.verifying_key().as_bytes())))
}

/// The signed content of Standard Webhooks: `id.timestamp.body`.
fn standard_content(msg_id: &str, unix_seconds: i64, body: &[u8]) -> Vec<u8> {
    let ts = unix_seconds.to_string();
    let mut content = Vec::with_capacity(msg_id.len() + ts.len() + body.len() + 2);
    content.extend_from_slice(msg_id.as_bytes());
    content.push(b'.');
    content.extend_from_slice(ts.as_bytes());
    content.push(b'.');
    content.extend_from_slice(body);
    content
}

/// `v1a,BASE64` of the ed25519 signature of `id.timestamp.body` with a `whsk_` secret; an
/// empty string for a secret that is not one (never a valid signature).
pub fn ed25519_signature(secret: &str, msg_id: &str, unix_seconds: i64, body: &[u8]) -> String {
    use ed25519_dalek::Signer;
    match ed25519_key(secret) {
        Some(key) => {
            let sig = key.sign(&standard_content(msg_id, unix_seconds, body));
            format!("v1a,{}", B64.encode(sig.to_bytes()))
        }
        None => String::new(),
    }
}

/// Checks a `webhook-signature` header (space-separated `v1a,BASE64` values, others
/// ignored) against a `whpk_` public key.
pub fn verify_ed25519(
    public_key: &str,
    msg_id: &str,
    unix_seconds: i64,
    body: &[u8],
    header: &str,
) -> bool {
    let Some(key) = public_key
        .strip_prefix("whpk_")
        .and_then(|k| B64.decode(k).ok())
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .and_then(|k| ed25519_dalek::VerifyingKey::from_bytes(&k).ok())
    else {
        return false;
    };
    let content = standard_content(msg_id, unix_seconds, body);
    header.split_whitespace().any(|candidate| {
        candidate
            .strip_prefix("v1a,")
            .and_then(|s| B64.decode(s).ok())
            .and_then(|s| ed25519_dalek::Signature::from_slice(&s).ok())
            .is_some_and(|sig| key.verify_strict(&content, &sig).is_ok())
    })
}

/// `sha256=HEX` of HMAC-SHA256(secret's UTF-8 bytes, `timestamp.body`).
pub fn herald_signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// `v1,BASE64` of HMAC-SHA256(decoded secret, `id.timestamp.body`).
pub fn standard_signature(secret: &str, msg_id: &str, unix_seconds: i64, body: &[u8]) -> String {
    let key = standard_key(secret);
    let mut mac = HmacSha256::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(unix_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

fn standard_key(secret: &str) -> Vec<u8> {
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    B64.decode(encoded)
        .unwrap_or_else(|_| secret.as_bytes().to_vec())
}

/// The identity and signature headers of one webhook request, as docs/api.md gives them:
/// Herald's `X-Event-Id`, `X-Event-Type`, `X-Timestamp`, `X-Signature` (one value per
/// live secret, space-separated), or Standard Webhooks' `webhook-id`, `webhook-timestamp`,
/// `webhook-signature`. `body` is the exact bytes sent. `herald listen` signs with it.
pub fn signature_headers(
    format: SignatureFormat,
    secrets: &[&str],
    event_id: &str,
    event_type: &str,
    now: crate::Timestamp,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    match format {
        SignatureFormat::Herald => {
            let ts = now.to_rfc3339_seconds();
            let sig = secrets
                .iter()
                .map(|s| herald_signature(s, &ts, body))
                .collect::<Vec<_>>()
                .join(" ");
            vec![
                ("X-Event-Id", event_id.to_owned()),
                ("X-Event-Type", event_type.to_owned()),
                ("X-Timestamp", ts),
                ("X-Signature", sig),
            ]
        }
        SignatureFormat::StandardWebhooks | SignatureFormat::StandardWebhooksEd25519 => {
            let unix = now.unix_seconds();
            let sign = match format {
                SignatureFormat::StandardWebhooksEd25519 => ed25519_signature,
                _ => standard_signature,
            };
            let sig = secrets
                .iter()
                .map(|s| sign(s, event_id, unix, body))
                .collect::<Vec<_>>()
                .join(" ");
            vec![
                ("webhook-id", event_id.to_owned()),
                ("webhook-timestamp", unix.to_string()),
                ("webhook-signature", sig),
            ]
        }
    }
}

/// Checks one `sha256=HEX` value (of possibly several, space-separated) in constant time.
pub fn verify_herald(secret: &str, timestamp: &str, body: &[u8], header: &str) -> bool {
    let expected = herald_signature(secret, timestamp, body);
    header.split_whitespace().any(|candidate| {
        subtle::ConstantTimeEq::ct_eq(candidate.as_bytes(), expected.as_bytes()).into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn herald_signature_matches_an_independent_vector() {
        // Computed with Python's hmac module: hmac.new(b"hsec_test", ts + b"." + body, sha256).
        let ts = "2026-04-10T15:20:00Z";
        let body = br#"{"id":"evt_1"}"#;
        let s = herald_signature("hsec_test", ts, body);
        assert_eq!(
            s,
            "sha256=d58f2414b42865f14d6c748e6a5978b570470c07997a86f563f3ba139db30aaa"
        );
        assert!(verify_herald(
            "hsec_test",
            ts,
            body,
            &format!("sha256=00 {s}")
        ));
        assert!(!verify_herald("hsec_other", ts, body, &s));
        assert!(!verify_herald("hsec_test", ts, b"{}", &s));
    }

    #[test]
    fn standard_signature_matches_the_specs_example() {
        // The example in the Standard Webhooks specification.
        let s = standard_signature(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(s, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn signature_headers_carry_what_each_format_verifies() {
        let now = crate::Timestamp(1_775_834_400_000);
        let body = br#"{"id":"evt_1"}"#;
        let h = signature_headers(
            SignatureFormat::Herald,
            &["hsec_a", "hsec_b"],
            "evt_1",
            "pay.ok",
            now,
            body,
        );
        let get = |h: &[(&str, String)], n: &str| {
            h.iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(get(&h, "X-Event-Id"), "evt_1");
        assert_eq!(get(&h, "X-Event-Type"), "pay.ok");
        let ts = get(&h, "X-Timestamp");
        assert_eq!(ts, "2026-04-10T15:20:00Z");
        for secret in ["hsec_a", "hsec_b"] {
            assert!(verify_herald(secret, &ts, body, &get(&h, "X-Signature")));
        }
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let h = signature_headers(
            SignatureFormat::StandardWebhooks,
            &[secret],
            "evt_1",
            "pay.ok",
            now,
            body,
        );
        assert_eq!(get(&h, "webhook-id"), "evt_1");
        assert_eq!(get(&h, "webhook-timestamp"), now.unix_seconds().to_string());
        assert_eq!(
            get(&h, "webhook-signature"),
            standard_signature(secret, "evt_1", now.unix_seconds(), body)
        );
    }

    #[test]
    fn ed25519_signatures_verify_with_the_public_key_only() {
        let secret = generate_secret(SignatureFormat::StandardWebhooksEd25519);
        assert!(secret.starts_with("whsk_"));
        let public = public_key(&secret).unwrap();
        assert!(public.starts_with("whpk_") && public != secret);
        let body = br#"{"id":"evt_1"}"#;
        let sig = ed25519_signature(&secret, "evt_1", 1614265330, body);
        assert!(sig.starts_with("v1a,"));
        assert!(verify_ed25519(&public, "evt_1", 1614265330, body, &sig));
        let other = public_key(&generate_secret(SignatureFormat::StandardWebhooksEd25519)).unwrap();
        assert!(!verify_ed25519(&other, "evt_1", 1614265330, body, &sig));
        assert!(!verify_ed25519(&public, "evt_1", 1614265331, body, &sig));
        assert!(!verify_ed25519(&public, "evt_2", 1614265330, body, &sig));
        assert!(!verify_ed25519(&public, "evt_1", 1614265330, b"{}", &sig));
        // Two keys during a rotation: either verifies.
        assert!(verify_ed25519(
            &public,
            "evt_1",
            1614265330,
            body,
            &format!("v1a,AAAA {sig}")
        ));
        assert_eq!(public_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), None);
        assert_eq!(ed25519_signature("hsec_x", "evt_1", 1, body), "");
    }

    #[test]
    fn ed25519_matches_rfc_8032_test_1() {
        // RFC 8032 7.1 TEST 1: the empty message under this seed has this public key.
        let seed = hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
            .unwrap();
        let secret = format!("whsk_{}", B64.encode(&seed));
        let public =
            hex::decode("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
                .unwrap();
        assert_eq!(
            public_key(&secret).unwrap(),
            format!("whpk_{}", B64.encode(public))
        );
    }

    #[test]
    fn secrets_are_long_and_distinct() {
        let a = generate_secret(SignatureFormat::Herald);
        let b = generate_secret(SignatureFormat::Herald);
        assert_ne!(a, b);
        assert!(a.len() >= 5 + 43);
        let w = generate_secret(SignatureFormat::StandardWebhooks);
        assert_eq!(standard_key(&w).len(), 32);
    }
}
