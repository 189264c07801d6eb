//! The delivery log: filters and every attempt, `:redeliver`, replay.

use super::*;

#[tokio::test]
async fn the_delivery_log_filters_and_shows_every_attempt() {
    let app = spawn_app(&hooks_config("")).await;
    let (t, key) = app.tenant("acme").await;
    let (_, other_key) = app.tenant("globex").await;
    let good = Receiver::start().await;
    good.set_fallback(Behavior::StatusWith(
        202,
        vec![("content-type", "text/plain".into())],
    ));
    let bad = Receiver::start().await;
    bad.set_fallback(Behavior::Status(500));
    let (w_good, _) = register(
        &app,
        &key,
        json!({ "url": good.url("/g"), "events": ["payment.*", "refund.*"] }),
    )
    .await;
    let (w_bad, _) = register(
        &app,
        &key,
        json!({ "url": bad.url("/b"), "events": ["payment.*"], "schedule": ["0s"] }),
    )
    .await;
    for ty in ["payment.succeeded", "refund.created", "payment.failed"] {
        publish(&app, json!({ "type": ty, "tenant": t, "data": {} })).await;
    }
    good.wait_for(3, Duration::from_secs(5)).await;
    bad.wait_for(2, Duration::from_secs(5)).await;
    app.eventually("every delivery settles", || async {
        let all = deliveries(&app, "").await;
        all.len() == 5 && all.iter().all(|d| d["status"] != "pending")
    })
    .await;

    let ids = |ds: Vec<Value>| -> Vec<(String, String, String)> {
        ds.iter()
            .map(|d| {
                (
                    d["webhook_id"].as_str().unwrap().to_owned(),
                    d["event_type"].as_str().unwrap().to_owned(),
                    d["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let of_good = deliveries(&app, &format!("webhook={w_good}")).await;
    assert_eq!(of_good.len(), 3);
    assert!(of_good
        .iter()
        .all(|d| d["webhook_id"] == w_good && d["status"] == "succeeded"));
    let failed = ids(deliveries(&app, "status=failed").await);
    assert_eq!(failed.len(), 2);
    assert!(failed.iter().all(|(w, _, s)| *w == w_bad && s == "failed"));
    let refunds = ids(deliveries(&app, "event_type=refund.created").await);
    assert_eq!(
        refunds,
        vec![(w_good.clone(), "refund.created".into(), "succeeded".into())]
    );
    let combo = ids(deliveries(
        &app,
        &format!("webhook={w_bad}&status=failed&event_type=payment.failed"),
    )
    .await);
    assert_eq!(
        combo,
        vec![(w_bad.clone(), "payment.failed".into(), "failed".into())]
    );
    assert!(
        deliveries(&app, &format!("webhook={w_bad}&status=succeeded"))
            .await
            .is_empty()
    );
    // The tenant sees its own log; another tenant sees nothing of it.
    assert_eq!(list(&app, "/deliveries", &key, "deliveries").await.len(), 5);
    assert!(list(&app, "/deliveries", &other_key, "deliveries")
        .await
        .is_empty());

    let failed_one = &deliveries(&app, &format!("webhook={w_bad}")).await[0];
    let d = delivery(&app, failed_one["id"].as_str().unwrap()).await;
    let log = d["attempt_log"].as_array().unwrap();
    assert_eq!(log.len(), 1);
    let a = &log[0];
    for field in [
        "at",
        "status_code",
        "latency_ms",
        "error",
        "response_excerpt",
    ] {
        assert!(a.get(field).is_some(), "attempt lacks `{field}`: {a}");
    }
    assert!(ts(&a["at"]) <= herald_core::SystemClock.now());
    assert_eq!(a["status_code"], 500);
    assert_eq!(a["error"], "HTTP 500");
    assert_eq!(a["response_excerpt"], "ok");
    let r = app
        .get(
            &format!("/deliveries/{}", failed_one["id"].as_str().unwrap()),
            &other_key,
        )
        .await;
    assert_problem(&r, StatusCode::NOT_FOUND, "NOT_FOUND");

    let ok_one = &of_good[0];
    let d = delivery(&app, ok_one["id"].as_str().unwrap()).await;
    let a = &d["attempt_log"][0];
    assert_eq!(a["status_code"], 202);
    assert!(a["error"].is_null(), "{a}");
    assert_eq!(a["response_excerpt"], "scripted");
}

#[tokio::test]
async fn redeliver_sends_the_same_event_again() {
    let app = spawn_app(&hooks_config(r#"schedule = ["0s"]"#)).await;
    let (t, key) = app.tenant("acme").await;
    let (_, other_key) = app.tenant("globex").await;
    let receiver = Receiver::start().await;
    receiver.script([Behavior::Status(500)]);
    let (wh, secret) = register(
        &app,
        &key,
        json!({ "url": receiver.url("/h"), "events": ["payment.*"] }),
    )
    .await;
    let ev = publish(
        &app,
        json!({ "type": "payment.succeeded", "tenant": t, "key": "pay_1", "data": { "a": 1 } }),
    )
    .await;
    let id = sole_delivery(&app, &wh).await;
    let d = after_attempts(&app, &id, 1).await;
    assert_eq!(d["status"], "failed");

    let r = app
        .post(
            &format!("/deliveries/{id}:redeliver"),
            &other_key,
            json!({}),
        )
        .await;
    assert_problem(&r, StatusCode::NOT_FOUND, "NOT_FOUND");
    let r = app
        .post(&format!("/deliveries/{id}:redeliver"), &key, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let got = receiver.wait_for(2, Duration::from_secs(5)).await;
    assert_eq!(got[0].header("x-event-id"), ev["id"]);
    assert_eq!(got[1].header("x-event-id"), ev["id"], "the same X-Event-Id");
    assert_eq!(got[1].json(), got[0].json(), "the same event");
    assert_signed_by(&got[1], &secret);
    let d = after_attempts(&app, &id, 2).await;
    assert_eq!(d["status"], "succeeded", "{d}");
    assert_eq!(
        deliveries(&app, &format!("webhook={wh}")).await.len(),
        1,
        "no new delivery"
    );
    assert_quiet(&receiver, 2, "sent once more, not twice").await;
}

#[tokio::test]
async fn replay_redelivers_failed_deliveries_in_range() {
    let app = spawn_app_with_manual_clock(&hooks_config(r#"schedule = ["0s"]"#)).await;
    let (t, key) = app.tenant("acme").await;
    let receiver = Receiver::start().await;
    let (wh, _) = register(
        &app,
        &key,
        json!({ "url": receiver.url("/h"), "events": ["payment.*"] }),
    )
    .await;

    // e1 fails long ago; in the window, e2 fails and e3 succeeds; e4 fails after the window.
    let mut events = vec![];
    let mut times = vec![];
    for (i, answer) in [500, 500, 200, 500].into_iter().enumerate() {
        if i > 0 {
            app.advance(Duration::from_secs(3600));
        }
        receiver.script([Behavior::Status(answer)]);
        times.push(clock_now(&app));
        let ev = publish(
            &app,
            json!({ "type": "payment.succeeded", "tenant": t, "data": { "i": i } }),
        )
        .await;
        events.push(ev["id"].as_str().unwrap().to_owned());
        receiver.wait_for(i + 1, Duration::from_secs(5)).await;
        app.eventually("the attempt is recorded", || async {
            let ds = deliveries(&app, &format!("webhook={wh}")).await;
            ds.len() == i + 1 && ds.iter().all(|d| d["status"] != "pending")
        })
        .await;
    }
    assert_eq!(
        deliveries(&app, &format!("webhook={wh}&status=failed"))
            .await
            .len(),
        3
    );

    let since = times[1].minus(Duration::from_secs(60)).to_rfc3339();
    let until = times[2].plus(Duration::from_secs(60)).to_rfc3339();
    let r = app
        .post(
            &format!("/webhooks/{wh}:replay"),
            &key,
            json!({ "since": since, "until": until, "status": "failed" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    assert_eq!(r.body["replayed"], 1, "{:?}", r.body);
    let got = receiver.wait_for(5, Duration::from_secs(5)).await;
    assert_eq!(got[4].header("x-event-id"), events[1]);
    assert_quiet(
        &receiver,
        5,
        "only the failed delivery in range is replayed",
    )
    .await;
    app.eventually("the replayed delivery succeeds", || async {
        let ds = deliveries(&app, &format!("webhook={wh}&status=succeeded")).await;
        ds.len() == 2
    })
    .await;
    let failed: BTreeSet<String> = deliveries(&app, &format!("webhook={wh}&status=failed"))
        .await
        .iter()
        .map(|d| d["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(failed, set(&[&events[0], &events[3]]));
}
