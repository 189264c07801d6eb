//! Defects a user could trigger (issue 14): deleting a webhook mid-send, concurrent rotations and patches, paging past a full page.

use super::*;

#[tokio::test]
async fn deleting_a_webhook_mid_send_never_stalls_other_deliveries() {
    // The send is in flight when the webhook is deleted, and its result (a 500, so a
    // retry) arrives after the delete. That retry must not make the delivery pending
    // again: on SQLite every later claim failed on the missing webhook, so no delivery
    // to any webhook of any tenant went out again.
    let app = spawn_app(&hooks_config("")).await;
    let (a, _) = app.tenant("acme").await;
    let (b, _) = app.tenant("globex").await;
    let slow = Receiver::start().await;
    slow.set_fallback(Behavior::Delayed(500, Duration::from_millis(800)));
    let healthy = Receiver::start().await;
    let (doomed, _) = register(
        &app,
        ADMIN,
        json!({ "url": slow.url("/slow"), "events": ["payment.*"], "tenant": a,
                "schedule": ["0s", "200ms"] }),
    )
    .await;
    let (other, _) = register(
        &app,
        ADMIN,
        json!({ "url": healthy.url("/ok"), "events": ["payment.*"], "tenant": b }),
    )
    .await;
    publish(
        &app,
        json!({ "type": "payment.succeeded", "tenant": a, "data": {} }),
    )
    .await;
    slow.wait_for(1, Duration::from_secs(5)).await;
    let r = app
        .call(Method::DELETE, &format!("/webhooks/{doomed}"), ADMIN, None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    // The in-flight result is recorded, and the delivery ends failed, not pending.
    let d = sole_delivery(&app, &doomed).await;
    let failed = after_attempts(&app, &d, 1).await;
    app.eventually("the deleted webhook's delivery to end failed", || async {
        delivery(&app, &d).await["status"] == "failed"
    })
    .await;
    assert_eq!(failed["attempt_log"][0]["status_code"], 500);
    // Well past its retry time, another tenant's webhook still gets its events.
    tokio::time::sleep(Duration::from_millis(400)).await;
    for _ in 0..3 {
        publish(
            &app,
            json!({ "type": "payment.succeeded", "tenant": b, "data": {} }),
        )
        .await;
    }
    healthy.wait_for(3, Duration::from_secs(10)).await;
    assert_eq!(slow.count(), 1, "nothing is sent to a deleted webhook");
    let d = delivery(&app, &d).await;
    assert_eq!(d["status"], "failed", "{d:?}");
    app.eventually(
        "the healthy webhook's three deliveries to be recorded",
        || async {
            deliveries(&app, &format!("webhook={other}&status=succeeded"))
                .await
                .len()
                == 3
        },
    )
    .await;
}

#[tokio::test]
async fn concurrent_rotations_each_make_a_version_and_every_answered_secret_signs() {
    // Each rotation reads the webhook it changes inside the write: ten at once make
    // versions 2..=11, and the last two secrets answered (current and previous) sign.
    let app = spawn_app(&hooks_config("")).await;
    let (t, key) = app.tenant("acme").await;
    let receiver = Receiver::start().await;
    let (id, _) = register(
        &app,
        &key,
        json!({ "url": receiver.url("/h"), "events": ["payment.*"] }),
    )
    .await;
    let path = format!("/webhooks/{id}:rotateSecret");
    let answers =
        futures::future::join_all((0..10).map(|_| app.post(&path, &key, json!({ "grace": "1h" }))))
            .await;
    let mut by_version: Vec<(u64, String)> = answers
        .iter()
        .map(|r| {
            assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
            (
                r.body["signing_secret_version"].as_u64().unwrap(),
                r.body["signing_secret"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    by_version.sort();
    let versions: Vec<u64> = by_version.iter().map(|(v, _)| *v).collect();
    assert_eq!(
        versions,
        (2..=11).collect::<Vec<u64>>(),
        "no rotation was lost"
    );
    let r = app.get(&format!("/webhooks/{id}"), &key).await;
    assert_eq!(r.body["signing_secret_version"], 11);
    publish(
        &app,
        json!({ "type": "payment.succeeded", "tenant": t, "data": {} }),
    )
    .await;
    let got = receiver.wait_for(1, Duration::from_secs(5)).await[0].clone();
    assert_eq!(signature_values(&got).len(), 2);
    assert_signed_by(&got, &by_version[9].1);
    assert_signed_by(&got, &by_version[8].1);
}

#[tokio::test]
async fn concurrent_patches_of_different_fields_all_take_effect() {
    // Each PATCH changes only the fields it names, applied to the stored row inside the
    // write; read-modify-write in the route let the last writer put back what the
    // others had changed (as it did with the 410 auto-disable).
    let app = spawn_app(&hooks_config("")).await;
    let (_, key) = app.tenant("acme").await;
    for round in 0..5 {
        let (id, _) = register(
            &app,
            &key,
            json!({ "url": "http://127.0.0.1:9/h", "events": ["payment.*"] }),
        )
        .await;
        let path = format!("/webhooks/{id}");
        let description = format!("round {round}");
        let patches = [
            json!({ "description": description }),
            json!({ "max_concurrency": 7 }),
            json!({ "events": ["refund.*"] }),
            json!({ "schedule": ["0s", "5s"] }),
            json!({ "disabled": true }),
            json!({ "url": "http://127.0.0.1:9/other" }),
        ];
        let answers = futures::future::join_all(
            patches
                .iter()
                .map(|p| app.call(Method::PATCH, &path, &key, Some(p.clone()))),
        )
        .await;
        for r in &answers {
            assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        }
        let w = app.get(&path, &key).await.body;
        assert_eq!(w["description"], description.as_str(), "{w:?}");
        assert_eq!(w["max_concurrency"], 7, "{w:?}");
        assert_eq!(w["events"], json!(["refund.*"]), "{w:?}");
        assert_eq!(w["schedule"], json!(["0s", "5s"]), "{w:?}");
        assert_eq!(w["disabled"], true, "{w:?}");
        assert_eq!(w["url"], "http://127.0.0.1:9/other", "{w:?}");
    }
}

#[tokio::test]
async fn lists_page_past_a_full_page_of_the_largest_size() {
    // `page_size=1000` over 1,050 items: the store is asked for a page and one more row,
    // so the page is full *and* says another follows.
    let app = spawn_app(&hooks_config("")).await;
    let (t, _) = app.tenant("acme").await;
    let receiver = Receiver::start().await;
    let (hook, _) = register(
        &app,
        ADMIN,
        json!({ "url": receiver.url("/h"), "events": ["payment.*"], "tenant": t }),
    )
    .await;
    for chunk in 0..21 {
        futures::future::join_all((0..50).map(|i| {
            app.post(
                "/events",
                ADMIN,
                json!({ "type": "payment.succeeded", "tenant": t, "data": { "n": chunk * 50 + i } }),
            )
        }))
        .await
        .iter()
        .for_each(|r| assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body));
    }
    for (path, field) in [
        (format!("/events?tenant={t}&page_size=1000"), "events"),
        (
            format!("/deliveries?webhook={hook}&page_size=1000"),
            "deliveries",
        ),
    ] {
        app.eventually("all 1,050 to be listed", || async {
            let r = app.get(&path, ADMIN).await;
            r.body[field].as_array().map(Vec::len) == Some(1000)
                && !r.body["next_page_token"]
                    .as_str()
                    .unwrap_or_default()
                    .is_empty()
        })
        .await;
        let first = app.get(&path, ADMIN).await;
        let token = first.body["next_page_token"].as_str().unwrap();
        let second = app.get(&format!("{path}&page_token={token}"), ADMIN).await;
        assert_eq!(second.status, StatusCode::OK, "{:?}", second.body);
        assert_eq!(second.body[field].as_array().unwrap().len(), 50, "{path}");
        assert_eq!(second.body["next_page_token"], "");
    }
}
