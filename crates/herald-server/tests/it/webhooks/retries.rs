//! Retries on a test-controlled clock: the schedule (default and a webhook's own), timeouts, redirects, 410 Gone, disabled webhooks, Retry-After.

use super::*;

#[tokio::test]
async fn failed_attempts_are_retried_on_the_schedule_then_the_delivery_fails() {
    let app = spawn_app_with_manual_clock(&hooks_config(r#"schedule = ["0s", "5s", "1m"]"#)).await;
    let (t, key) = app.tenant("acme").await;
    let receiver = Receiver::start().await;
    receiver.set_fallback(Behavior::Status(500));
    let (wh, secret) = register(
        &app,
        &key,
        json!({ "url": receiver.url("/h"), "events": ["payment.*"] }),
    )
    .await;
    let ev = publish(
        &app,
        json!({ "type": "payment.failed", "tenant": t, "data": {} }),
    )
    .await;

    receiver.wait_for(1, Duration::from_secs(5)).await;
    let id = sole_delivery(&app, &wh).await;
    let mut d = after_attempts(&app, &id, 1).await;
    assert_eq!(d["status"], "pending");
    assert_eq!(d["event_id"], ev["id"]);
    let schedule = [Duration::from_secs(5), Duration::from_secs(60)];
    for (n, wait) in schedule.iter().enumerate() {
        let attempts = n + 1;
        let last_at = ts(&d["attempt_log"][n]["at"]);
        let next = ts(&d["next_attempt_at"]);
        assert_jittered(last_at.until(next), *wait, "next_attempt_at");
        // Not before the clock moves, nor just short of the due time.
        assert_quiet(&receiver, attempts, "no retry while the clock stands still").await;
        advance_to(&app, next.minus(Duration::from_millis(200)));
        assert_quiet(&receiver, attempts, "no retry before it is due").await;
        advance_to(&app, next);
        let got = receiver
            .wait_for(attempts + 1, Duration::from_secs(5))
            .await;
        assert_eq!(got[attempts].header("x-event-id"), ev["id"]);
        d = after_attempts(&app, &id, attempts + 1).await;
    }
    assert_eq!(d["status"], "failed", "{d}");
    assert!(d["next_attempt_at"].is_null(), "{d}");
    assert_eq!(d["last_status_code"], 500);

    let log = d["attempt_log"].as_array().unwrap();
    assert_eq!(log.len(), 3);
    for (i, wait) in schedule.iter().enumerate() {
        let gap = ts(&log[i]["at"]).until(ts(&log[i + 1]["at"]));
        assert_jittered(gap, *wait, "spacing of the attempts");
    }
    // Each attempt is signed afresh, stamped with its own time, over the same body.
    let got = receiver.received();
    for (a, r) in log.iter().zip(&got) {
        let at = ts(&a["at"]);
        assert_eq!(
            Timestamp::parse_rfc3339(&r.header("x-timestamp")),
            Some(Timestamp(at.0 - at.0.rem_euclid(1000))),
            "X-Timestamp is the attempt's time"
        );
        assert_signed_by(r, &secret);
        assert_eq!(r.body, got[0].body);
    }
    for a in log {
        assert_eq!(a["status_code"], 500, "{a}");
        assert_eq!(a["error"], "HTTP 500");
        assert_eq!(a["response_excerpt"], "ok");
        assert!(a["latency_ms"].is_u64(), "{a}");
        assert!(a["id"].as_str().unwrap().starts_with("att_"));
    }
    // Used up: nothing more, however long we wait.
    app.advance(Duration::from_secs(7 * 86400));
    assert_quiet(&receiver, 3, "no attempt after the schedule is used up").await;
}

#[tokio::test]
async fn a_webhooks_own_schedule_overrides_the_default() {
    let app = spawn_app_with_manual_clock(&hooks_config("")).await; // default: 0s, 5s, 5m, …
    let (t, key) = app.tenant("acme").await;
    let receiver = Receiver::start().await;
    receiver.set_fallback(Behavior::Status(503));
    let created = app
        .post(
            "/webhooks",
            &key,
            json!({ "url": receiver.url("/h"), "events": ["payment.*"], "schedule": ["0s", "2s"] }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.body["schedule"], json!(["0s", "2s"]));
    let wh = created.body["id"].as_str().unwrap().to_owned();
    publish(
        &app,
        json!({ "type": "payment.failed", "tenant": t, "data": {} }),
    )
    .await;
    let id = sole_delivery(&app, &wh).await;
    let d = after_attempts(&app, &id, 1).await;
    let next = ts(&d["next_attempt_at"]);
    assert_jittered(
        ts(&d["attempt_log"][0]["at"]).until(next),
        Duration::from_secs(2),
        "own schedule",
    );
    advance_to(&app, next);
    receiver.wait_for(2, Duration::from_secs(5)).await;
    let d = after_attempts(&app, &id, 2).await;
    assert_eq!(d["status"], "failed", "two entries, two attempts: {d}");
    assert_eq!(d["last_status_code"], 503);
}

#[tokio::test]
async fn an_endpoint_that_hangs_past_the_timeout_fails_the_attempt() {
    let app = spawn_app_with_manual_clock(&hooks_config(r#"timeout = "300ms""#)).await;
    let (t, key) = app.tenant("acme").await;
    let receiver = Receiver::start().await;
    receiver.script([Behavior::Hang(Duration::from_secs(2))]);
    let (wh, _) = register(
        &app,
        &key,
        json!({ "url": receiver.url("/slow"), "events": ["payment.*"] }),
    )
    .await;
    publish(
        &app,
        json!({ "type": "payment.succeeded", "tenant": t, "data": {} }),
    )
    .await;
    let started = Instant::now();
    let id = sole_delivery(&app, &wh).await;
    let d = after_attempts(&app, &id, 1).await;
    assert!(
        started.elapsed() < Duration::from_millis(1800),
        "the attempt was cut off by the timeout, not by the endpoint"
    );
    let attempt = &d["attempt_log"][0];
    let error = attempt["error"].as_str().unwrap().to_lowercase();
    assert!(
        error.contains("timed out") || error.contains("timeout"),
        "{attempt}"
    );
    assert!(attempt["status_code"].is_null(), "{attempt}");
    assert!(attempt["latency_ms"].as_u64().unwrap() >= 300, "{attempt}");
    assert_eq!(d["status"], "pending", "a timeout is retried");
    assert!(d["next_attempt_at"].is_string());
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let app = spawn_app_with_manual_clock(&hooks_config("")).await;
    let (t, key) = app.tenant("acme").await;
    let receiver = Receiver::start().await;
    let target = Receiver::start().await;
    receiver.set_fallback(Behavior::Redirect(target.url("/landing")));
    let (wh, _) = register(
        &app,
        &key,
        json!({ "url": receiver.url("/moved"), "events": ["payment.*"] }),
    )
    .await;
    publish(
        &app,
        json!({ "type": "payment.succeeded", "tenant": t, "data": {} }),
    )
    .await;
    let id = sole_delivery(&app, &wh).await;
    let d = after_attempts(&app, &id, 1).await;
    let attempt = &d["attempt_log"][0];
    assert_eq!(attempt["status_code"], 301, "{attempt}");
    assert!(
        attempt["error"].as_str().unwrap().contains("redirect"),
        "{attempt}"
    );
    assert_eq!(d["status"], "pending", "a redirect is a retryable failure");
    assert_eq!(receiver.count(), 1);
    assert_quiet(&target, 0, "the redirect target receives nothing").await;
}

#[tokio::test]
async fn gone_disables_the_webhook_and_stops_attempts() {
    let app = spawn_app_with_manual_clock(&hooks_config("")).await;
    let (t, key) = app.tenant("acme").await;
    let receiver = Receiver::start().await;
    receiver.script([Behavior::Status(410)]);
    let (wh, _) = register(
        &app,
        &key,
        json!({ "url": receiver.url("/gone"), "events": ["payment.*"] }),
    )
    .await;
    publish(
        &app,
        json!({ "type": "payment.succeeded", "tenant": t, "data": {} }),
    )
    .await;
    let id = sole_delivery(&app, &wh).await;
    let d = after_attempts(&app, &id, 1).await;
    assert_eq!(d["status"], "failed", "{d}");
    assert_eq!(d["last_status_code"], 410);
    let hook = app.get(&format!("/webhooks/{wh}"), &key).await.body;
    assert_eq!(hook["disabled"], true, "{hook}");
    assert!(hook["disabled_reason"].as_str().unwrap().contains("410"));

    publish(
        &app,
        json!({ "type": "payment.succeeded", "tenant": t, "data": {} }),
    )
    .await;
    app.advance(Duration::from_secs(86400));
    assert_quiet(&receiver, 1, "a disabled webhook gets no further attempts").await;
    let d = delivery(&app, &id).await;
    assert_eq!(d["attempts"], 1);
}

#[tokio::test]
async fn a_disabled_webhook_pauses_its_deliveries_until_enabled() {
    let app = spawn_app_with_manual_clock(&hooks_config(r#"schedule = ["0s", "5s"]"#)).await;
    let (t, key) = app.tenant("acme").await;
    let receiver = Receiver::start().await;
    receiver.script([Behavior::Status(500)]);
    let (wh, _) = register(
        &app,
        &key,
        json!({ "url": receiver.url("/h"), "events": ["payment.*"] }),
    )
    .await;
    let ev = publish(
        &app,
        json!({ "type": "payment.succeeded", "tenant": t, "data": {} }),
    )
    .await;
    let id = sole_delivery(&app, &wh).await;
    after_attempts(&app, &id, 1).await;

    let r = app
        .post(&format!("/webhooks/{wh}:disable"), &key, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    app.advance(Duration::from_secs(3600));
    assert_quiet(&receiver, 1, "a disabled webhook is not called").await;
    let d = delivery(&app, &id).await;
    assert_eq!(d["status"], "pending", "paused, not dropped: {d}");
    assert_eq!(d["attempts"], 1);

    let r = app
        .call(
            Method::PATCH,
            &format!("/webhooks/{wh}"),
            &key,
            Some(json!({ "disabled": false })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let got = receiver.wait_for(2, Duration::from_secs(5)).await;
    assert_eq!(got[1].header("x-event-id"), ev["id"]);
    let d = after_attempts(&app, &id, 2).await;
    assert_eq!(d["status"], "succeeded", "{d}");
}

#[tokio::test]
async fn retry_after_on_429_is_honoured() {
    let app = spawn_app_with_manual_clock(&hooks_config(r#"schedule = ["0s", "5s", "1m"]"#)).await;
    let (t, key) = app.tenant("acme").await;
    let receiver = Receiver::start().await;
    receiver.script([Behavior::StatusWith(
        429,
        vec![("retry-after", "120".into())],
    )]);
    let (wh, _) = register(
        &app,
        &key,
        json!({ "url": receiver.url("/busy"), "events": ["payment.*"] }),
    )
    .await;
    publish(
        &app,
        json!({ "type": "payment.succeeded", "tenant": t, "data": {} }),
    )
    .await;
    let id = sole_delivery(&app, &wh).await;
    let d = after_attempts(&app, &id, 1).await;
    assert_eq!(d["last_status_code"], 429);
    let first_at = ts(&d["attempt_log"][0]["at"]);
    let next = ts(&d["next_attempt_at"]);
    assert!(
        first_at.until(next) >= Duration::from_secs(120),
        "Retry-After: 120 beats the schedule's 5s: {d}"
    );

    app.advance(Duration::from_secs(10));
    assert_quiet(&receiver, 1, "not retried on the schedule's 5s").await;
    advance_to(&app, first_at.plus(Duration::from_secs(121)));
    receiver.wait_for(2, Duration::from_secs(5)).await;
    let d = after_attempts(&app, &id, 2).await;
    assert_eq!(d["status"], "succeeded", "{d}");
}
