//! Operations and fan-out: a finished operation delivered as an event, a dead endpoint does not hold up a healthy one.

use super::*;

#[tokio::test]
async fn a_finished_operation_is_delivered_as_an_event() {
    let app = spawn_app(&transcode_config(
        "[webhooks]\nallow_private_destinations = true",
    ))
    .await;
    let (_, tenant) = app.tenant("acme").await;
    let (_, other) = app.tenant("globex").await;
    let worker = app.worker_key().await;
    let receiver = Receiver::start().await;
    let other_receiver = Receiver::start().await;
    let (_, secret) = register(
        &app,
        &tenant,
        json!({ "url": receiver.url("/ops"), "events": ["transcode.*"] }),
    )
    .await;
    register(
        &app,
        &other,
        json!({ "url": other_receiver.url("/ops"), "events": ["transcode.*"] }),
    )
    .await;

    let created = app
        .post(
            "/videos",
            &tenant,
            json!({ "source_url": "https://x/v.mp4" }),
        )
        .await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{:?}", created.body);
    let id = op_id(&created.body);
    let claimed = app.claim(&worker, "transcode").await.expect("claimable");
    let token = claimed["lease_token"].as_str().unwrap();
    let done = app
        .post(
            &format!("/operations/{id}:complete"),
            &worker,
            json!({ "lease_token": token, "response": { "video_id": "vid_99", "duration_seconds": 832 } }),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{:?}", done.body);

    let r = receiver.wait_for(1, Duration::from_secs(5)).await[0].clone();
    assert_eq!(r.header("x-event-type"), "transcode.succeeded");
    assert_signed_by(&r, &secret);
    let final_op = app.get(&format!("/operations/{id}"), &tenant).await.body;
    assert_eq!(final_op["done"], true);
    let body = r.json();
    assert_eq!(body["type"], "transcode.succeeded");
    assert_eq!(body["data"], final_op);
    assert_quiet(&receiver, 1, "one event per finished operation").await;
    assert_eq!(
        other_receiver.count(),
        0,
        "another tenant's webhook gets nothing"
    );
}

#[tokio::test]
async fn a_dead_endpoint_does_not_hold_up_a_healthy_one() {
    let app = spawn_app(&hooks_config(r#"timeout = "3s""#)).await;
    let (t, key) = app.tenant("acme").await;
    let healthy = Receiver::start().await;
    let failing = Receiver::start().await;
    failing.set_fallback(Behavior::Status(500));
    let hanging = Receiver::start().await;
    hanging.set_fallback(Behavior::Hang(Duration::from_secs(30)));
    let events = json!(["payment.*"]);
    let (dead, _) = register(
        &app,
        &key,
        json!({ "url": "http://127.0.0.1:1/closed", "events": events }),
    )
    .await;
    let (w_failing, _) = register(
        &app,
        &key,
        json!({ "url": failing.url("/f"), "events": events }),
    )
    .await;
    register(
        &app,
        &key,
        json!({ "url": hanging.url("/h"), "events": events }),
    )
    .await;
    let (w_healthy, _) = register(
        &app,
        &key,
        json!({ "url": healthy.url("/ok"), "events": events }),
    )
    .await;

    let started = Instant::now();
    let mut ids = BTreeSet::new();
    for i in 0..50 {
        let ev = publish(
            &app,
            json!({ "type": "payment.succeeded", "tenant": t, "data": { "i": i } }),
        )
        .await;
        ids.insert(ev["id"].as_str().unwrap().to_owned());
    }
    let got = healthy.wait_for(50, Duration::from_secs(8)).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the healthy endpoint took {took:?}"
    );
    let received: BTreeSet<String> = got.iter().map(|r| r.header("x-event-id")).collect();
    assert_eq!(received, ids, "every event, once each");
    app.eventually("the healthy deliveries are recorded", || async {
        deliveries(
            &app,
            &format!("webhook={w_healthy}&status=succeeded&page_size=100"),
        )
        .await
        .len()
            == 50
    })
    .await;

    // Meanwhile the dead endpoints keep failing.
    app.eventually("the closed port's attempts are recorded", || async {
        deliveries(&app, &format!("webhook={dead}&page_size=100"))
            .await
            .iter()
            .any(|d| d["attempts"].as_u64() > Some(0))
    })
    .await;
    let dead_ds = deliveries(&app, &format!("webhook={dead}&page_size=100")).await;
    assert_eq!(dead_ds.len(), 50);
    assert!(
        dead_ds.iter().all(|d| d["status"] == "pending"),
        "still retrying"
    );
    let tried = dead_ds
        .iter()
        .find(|d| d["attempts"].as_u64() > Some(0))
        .unwrap();
    let d = delivery(&app, tried["id"].as_str().unwrap()).await;
    assert!(
        d["attempt_log"][0]["error"]
            .as_str()
            .unwrap()
            .contains("connection refused"),
        "{d}"
    );
    assert!(failing.count() >= 1);
    assert!(
        deliveries(&app, &format!("webhook={w_failing}&status=succeeded"))
            .await
            .is_empty()
    );
}
