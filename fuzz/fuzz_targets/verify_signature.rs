//! Signature verification and signature-header parsing: Herald's `X-Signature` (one or
//! several `sha256=` entries) and Standard Webhooks' `webhook-signature` (`v1,<b64>`),
//! through both the core check and the SDK verifier, on arbitrary headers and bodies.
//! Nothing may panic, and a header Herald signed must verify.
#![no_main]

use herald_client::WebhookVerifier;
use herald_core::signing::{herald_signature, standard_signature, verify_herald};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Split the input into fields at 0xFF bytes: secret, timestamp, signature, id, body.
    let mut parts = data.splitn(5, |b| *b == 0xFF);
    let mut text = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let (secret, timestamp, signature, id) = (text(), text(), text(), text());
    let body = data.rsplit(|b| *b == 0xFF).next().unwrap_or_default();

    let _ = verify_herald(&secret, &timestamp, body, &signature);
    let signed = herald_signature(&secret, &timestamp, body);
    assert!(verify_herald(&secret, &timestamp, body, &signed));

    let verifier = WebhookVerifier::new(secret.clone());
    let herald_headers = vec![
        ("x-signature".to_owned(), signature.clone()),
        ("x-timestamp".to_owned(), timestamp.clone()),
        ("x-event-id".to_owned(), id.clone()),
    ];
    let _ = verifier.verify_at(&herald_headers, body, 1_775_834_400);
    let standard_headers = vec![
        ("webhook-signature".to_owned(), signature.clone()),
        ("webhook-timestamp".to_owned(), timestamp.clone()),
        ("webhook-id".to_owned(), id.clone()),
    ];
    let _ = verifier.verify_at(&standard_headers, body, 1_775_834_400);
    // Extreme clocks must not overflow the skew check.
    let _ = verifier.verify_at(&standard_headers, body, i64::MIN);
    let _ = verifier.verify_at(&herald_headers, body, i64::MAX);

    if let Ok(ts) = timestamp.trim().parse::<i64>() {
        let sig = standard_signature(&secret, &id, ts, body);
        let _ = sig;
    }
});
