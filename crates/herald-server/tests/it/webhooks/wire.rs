//! The wire format: documented headers, body and signature (checked with an independent HMAC and the Standard Webhooks library), secret rotation.

use super::*;

#[tokio::test]
async fn deliveries_carry_the_documented_headers_body_and_signature() {
    let app = spawn_app(&hooks_config("")).await;
    let (t, key) = app.tenant("acme").await;
    let receiver = Receiver::start().await;
    let (_, secret) = register(
        &app,
        &key,
        json!({ "url": receiver.url("/hooks/payments"), "events": ["payment.succeeded"] }),
    )
    .await;
    let data =
        json!({ "payment_id": "pay_42", "amount": 4599, "currency": "USD", "note": "ünïcode ✓" });
    let keyed = publish(
        &app,
        json!({ "type": "payment.succeeded", "tenant": t, "key": "pay_42", "data": data }),
    )
    .await;
    let unkeyed = publish(
        &app,
        json!({ "type": "payment.succeeded", "tenant": t, "data": { "x": 1 } }),
    )
    .await;
    let got = receiver.wait_for(2, Duration::from_secs(5)).await;
    let find = |id: &Value| {
        got.iter()
            .find(|r| r.header("x-event-id") == id.as_str().unwrap())
            .unwrap_or_else(|| panic!("no delivery of {id}"))
            .clone()
    };
    let r = find(&keyed["id"]);
    assert_eq!(r.path, "/hooks/payments");
    assert_eq!(r.header("x-event-type"), "payment.succeeded");
    assert_eq!(r.header("content-type"), "application/json");
    let stamp = r.header("x-timestamp");
    assert_eq!(stamp.len(), "2026-04-10T15:20:00Z".len(), "{stamp}");
    assert!(stamp.ends_with('Z') && !stamp.contains('.'), "{stamp}");
    let sent_at = Timestamp::parse_rfc3339(&stamp).expect("RFC 3339");
    let now = herald_core::SystemClock.now();
    assert!(
        sent_at <= now && sent_at >= now.minus(Duration::from_secs(30)),
        "{stamp}"
    );
    let sigs = signature_values(&r);
    assert_eq!(sigs.len(), 1, "one live secret, one signature");
    assert_eq!(sigs[0], expected_signature(&secret, &stamp, &r.body));
    // The check can fail: another secret, another timestamp or another body does not verify.
    assert_ne!(sigs[0], expected_signature("hsec_other", &stamp, &r.body));
    assert_ne!(
        sigs[0],
        expected_signature(&secret, "2026-04-10T15:20:00Z", &r.body)
    );
    let mut tampered = r.body.to_vec();
    tampered.push(b' ');
    assert_ne!(sigs[0], expected_signature(&secret, &stamp, &tampered));

    let body = r.json();
    assert_eq!(
        keys_of(&body),
        set(&["id", "type", "created_at", "data", "key", "sequence"])
    );
    assert_eq!(body["id"], keyed["id"]);
    assert_eq!(body["type"], "payment.succeeded");
    assert_eq!(body["data"], data);
    assert_eq!(body["key"], "pay_42");
    assert_eq!(body["sequence"], 1);
    let created = body["created_at"].as_str().unwrap();
    assert!(
        created.ends_with('Z') && !created.contains('.'),
        "{created}"
    );
    assert!(Timestamp::parse_rfc3339(created).is_some());

    let r2 = find(&unkeyed["id"]);
    assert_signed_by(&r2, &secret);
    assert_eq!(
        keys_of(&r2.json()),
        set(&["id", "type", "created_at", "data"])
    );
    assert_eq!(r2.json()["data"], json!({ "x": 1 }));
}

#[tokio::test]
async fn during_rotation_both_secrets_sign_then_only_the_new_one() {
    let app = spawn_app_with_manual_clock(&hooks_config("")).await;
    let (t, key) = app.tenant("acme").await;
    let receiver = Receiver::start().await;
    let (id, old) = register(
        &app,
        &key,
        json!({ "url": receiver.url("/h"), "events": ["payment.*"] }),
    )
    .await;
    let rotated = app
        .post(
            &format!("/webhooks/{id}:rotateSecret"),
            &key,
            json!({ "grace": "1h" }),
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{:?}", rotated.body);
    let new = rotated.body["signing_secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);

    publish(
        &app,
        json!({ "type": "payment.succeeded", "tenant": t, "data": {} }),
    )
    .await;
    let r = receiver.wait_for(1, Duration::from_secs(5)).await[0].clone();
    let sigs = signature_values(&r);
    assert_eq!(sigs.len(), 2, "{:?}", r.header("x-signature"));
    assert!(r.header("x-signature").contains("sha256=") && r.header("x-signature").contains(' '));
    let stamp = r.header("x-timestamp");
    let by_old = expected_signature(&old, &stamp, &r.body);
    let by_new = expected_signature(&new, &stamp, &r.body);
    assert_ne!(by_old, by_new);
    assert!(sigs.contains(&by_old), "the old secret still verifies");
    assert!(sigs.contains(&by_new), "the new secret verifies");

    // After the grace period only the new secret signs.
    app.advance(Duration::from_secs(3601));
    publish(
        &app,
        json!({ "type": "payment.succeeded", "tenant": t, "data": {} }),
    )
    .await;
    let r = receiver.wait_for(2, Duration::from_secs(5)).await[1].clone();
    let sigs = signature_values(&r);
    assert_eq!(
        sigs,
        vec![expected_signature(&new, &r.header("x-timestamp"), &r.body)]
    );
}

#[tokio::test]
async fn standard_webhooks_format_verifies_with_the_reference_library() {
    let app = spawn_app(&hooks_config("")).await;
    let (t, key) = app.tenant("acme").await;
    let receiver = Receiver::start().await;
    let created = app
        .post(
            "/webhooks",
            &key,
            json!({ "url": receiver.url("/sw"), "events": ["payment.*"], "format": "standard-webhooks" }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.body["format"], "standard-webhooks");
    let secret = created.body["signing_secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");

    let ev = publish(
        &app,
        json!({ "type": "payment.succeeded", "tenant": t, "key": "pay_1", "data": { "amount": 1 } }),
    )
    .await;
    let r = receiver.wait_for(1, Duration::from_secs(5)).await[0].clone();
    assert_eq!(r.header("webhook-id"), ev["id"]);
    assert!(r.header("webhook-signature").starts_with("v1,"));
    assert_eq!(r.header("content-type"), "application/json");
    let wh = standardwebhooks::Webhook::new(&secret).unwrap();
    wh.verify(&r.body, &r.headers)
        .expect("the Standard Webhooks library accepts the delivery");
    let mut tampered = r.body.to_vec();
    tampered[0] = b' ';
    assert!(wh.verify(&tampered, &r.headers).is_err());
    let other = standardwebhooks::Webhook::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    assert!(other.verify(&r.body, &r.headers).is_err());
    let body = r.json();
    assert_eq!(body["id"], ev["id"]);
    assert_eq!(body["sequence"], 1);
    assert_eq!(body["data"], json!({ "amount": 1 }));

    // During a rotation both secrets verify with the library.
    let id = created.body["id"].as_str().unwrap();
    let rotated = app
        .post(&format!("/webhooks/{id}:rotateSecret"), &key, json!({}))
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{:?}", rotated.body);
    let new_secret = rotated.body["signing_secret"].as_str().unwrap().to_owned();
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);
    publish(
        &app,
        json!({ "type": "payment.failed", "tenant": t, "data": {} }),
    )
    .await;
    let r = receiver.wait_for(2, Duration::from_secs(5)).await[1].clone();
    assert_eq!(r.header("webhook-signature").matches("v1,").count(), 2);
    for s in [&secret, &new_secret] {
        standardwebhooks::Webhook::new(s)
            .unwrap()
            .verify(&r.body, &r.headers)
            .expect("each live secret verifies during rotation");
    }
}
