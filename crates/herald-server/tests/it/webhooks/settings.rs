//! Subscription settings over HTTP: `headers`, `filter` and `rate_limit` are registered,
//! shown, patched and cleared; bad ones are a clear 422 that creates or changes nothing;
//! a filter decides which events a webhook gets, and its headers go with each delivery.

use super::*;

#[tokio::test]
async fn settings_are_registered_shown_patched_and_cleared() {
    let app = spawn_app(&hooks_config("")).await;
    let (_, key) = app.tenant("acme").await;
    let receiver = Receiver::start().await;
    let filter = json!({"$or": [{"/data/currency": {"$in": ["USD", "EUR"]}}, {"/data/vip": {"$exists": true}}]});
    let created = app
        .post(
            "/webhooks",
            &key,
            json!({ "url": receiver.url("/h"), "events": ["payment.*"],
                    "headers": {"Authorization": "Bearer abc", "X-Team": "payments"},
                    "filter": filter, "rate_limit": 20, "max_concurrency": 2 }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(
        created.body["headers"],
        json!({"authorization": "Bearer abc", "x-team": "payments"})
    );
    assert_eq!(created.body["filter"], filter);
    assert_eq!(created.body["rate_limit"], 20);
    let id = created.body["id"].as_str().unwrap().to_owned();
    let got = app.get(&format!("/webhooks/{id}"), &key).await;
    assert_eq!(got.body["filter"], filter);
    assert_eq!(got.body["headers"]["x-team"], "payments");

    // A PATCH that names none of them keeps them.
    let path = format!("/webhooks/{id}");
    let r = app
        .call(
            Method::PATCH,
            &path,
            &key,
            Some(json!({"description": "d"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["filter"], filter);
    assert_eq!(r.body["rate_limit"], 20);
    let r = app
        .call(
            Method::PATCH,
            &path,
            &key,
            Some(json!({"headers": {"x-only": "1"}, "filter": {"/type": "payment.failed"}, "rate_limit": 5})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["headers"], json!({"x-only": "1"}));
    assert_eq!(r.body["filter"], json!({"/type": "payment.failed"}));
    assert_eq!(r.body["rate_limit"], 5);
    // `null` clears a filter and a rate limit; `{}` clears the headers.
    let r = app
        .call(
            Method::PATCH,
            &path,
            &key,
            Some(json!({"headers": {}, "filter": null, "rate_limit": null})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["headers"], json!({}));
    assert_eq!(r.body["filter"], Value::Null);
    assert_eq!(r.body["rate_limit"], Value::Null);
    assert_eq!(app.get(&path, &key).await.body, r.body);
}

#[tokio::test]
async fn bad_settings_are_a_clear_422_and_change_nothing() {
    let app = spawn_app(&hooks_config("")).await;
    let (_, key) = app.tenant("acme").await;
    let receiver = Receiver::start().await;
    let url = receiver.url("/h");
    let bad = [
        (
            json!({"headers": {"X-Signature": "sha256=forged"}}),
            "cannot be replaced",
        ),
        (
            json!({"headers": {"Host": "evil.example"}}),
            "cannot be replaced",
        ),
        (
            json!({"headers": {"webhook-id": "x"}}),
            "cannot be replaced",
        ),
        (
            json!({"headers": {"X-Event-Type": "x"}}),
            "cannot be replaced",
        ),
        (
            json!({"headers": {"Transfer-Encoding": "chunked"}}),
            "cannot be replaced",
        ),
        (json!({"headers": {"x-a": "1\r\nx-b: 2"}}), "visible ASCII"),
        (json!({"headers": {"x-a": 1}}), "must be a string"),
        (json!({"headers": ["x-a"]}), "must be an object"),
        (json!({"filter": {"data/x": 1}}), "JSON pointer"),
        (
            json!({"filter": {"/data/x": {"$gt": 1}}}),
            "unknown operator",
        ),
        (
            json!({"filter": {"/data/x": {"$in": []}}}),
            "filter./data/x.$in",
        ),
        (json!({"filter": {}}), "at least one clause"),
        (json!({"filter": "amount > 5"}), "object of clauses"),
        (json!({"rate_limit": 0}), "at least 1"),
        (json!({"rate_limit": 10001}), "at most 10000"),
    ];
    for (extra, says) in &bad {
        let mut body = json!({"url": url, "events": ["payment.*"]});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let r = app.post("/webhooks", &key, body).await;
        assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST");
        let detail = r.body["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{extra}: {detail}");
    }
    let deep = (0..7).fold(json!({"/a": 1}), |f, _| json!({ "$and": [f] }));
    let r = app
        .post(
            "/webhooks",
            &key,
            json!({"url": url, "events": ["*"], "filter": deep}),
        )
        .await;
    assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST");
    assert!(list(&app, "/webhooks", &key, "webhooks").await.is_empty());

    let (id, _) = register(
        &app,
        &key,
        json!({"url": url, "events": ["*"], "headers": {"x-a": "1"}}),
    )
    .await;
    let path = format!("/webhooks/{id}");
    let before = app.get(&path, &key).await.body;
    for (extra, _) in &bad {
        let r = app
            .call(Method::PATCH, &path, &key, Some(extra.clone()))
            .await;
        assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST");
    }
    assert_eq!(app.get(&path, &key).await.body, before, "nothing changed");
}

#[tokio::test]
async fn a_filter_picks_the_events_and_headers_go_with_each_delivery() {
    let app = spawn_app(&hooks_config("")).await;
    let (tenant, key) = app.tenant("acme").await;
    let filtered = Receiver::start().await;
    let everything = Receiver::start().await;
    let (filtered_id, _) = register(
        &app,
        &key,
        json!({"url": filtered.url("/h"), "events": ["payment.*"],
               "headers": {"Authorization": "Bearer abc"},
               "filter": {"$or": [{"/data/amount": {"$in": [100, 200]}}, {"/key": "vip"}]}}),
    )
    .await;
    register(
        &app,
        &key,
        json!({"url": everything.url("/h"), "events": ["payment.*"]}),
    )
    .await;
    let mut wanted = BTreeSet::new();
    for (amount, key) in [
        (100, None),
        (5, None),
        (200, None),
        (5, Some("vip")),
        (7, Some("k")),
    ] {
        let mut body =
            json!({"type": "payment.succeeded", "tenant": tenant, "data": {"amount": amount}});
        if let Some(k) = key {
            body["key"] = json!(k);
        }
        let id = publish(&app, body).await["id"].as_str().unwrap().to_owned();
        if amount != 5 && amount != 7 || key == Some("vip") {
            wanted.insert(id);
        }
    }
    let all = everything.wait_for(5, Duration::from_secs(10)).await;
    assert_eq!(all.len(), 5);
    assert!(all.iter().all(|r| r.headers.get("authorization").is_none()));
    let got = filtered.wait_for(3, Duration::from_secs(10)).await;
    // Fan-out was decided when each event was accepted: the other two have no delivery.
    assert_eq!(
        deliveries(&app, &format!("webhook={filtered_id}"))
            .await
            .len(),
        3
    );
    let ids: BTreeSet<String> = got.iter().map(|r| r.header("x-event-id")).collect();
    assert_eq!(ids, wanted);
    for r in &got {
        assert_eq!(r.header("authorization"), "Bearer abc");
        assert!(!r.header("x-signature").is_empty());
    }
}

/// Herald's own events reach the API owner: a webhook that answers `410 Gone` is disabled,
/// and the owner's webhook (of the same tenant) gets `delivery.failed` and
/// `webhook.disabled`, signed like any delivery; the gone webhook gets neither.
#[tokio::test]
async fn a_gone_endpoint_raises_delivery_failed_and_webhook_disabled() {
    let app = spawn_app(&hooks_config("")).await;
    let (tenant, key) = app.tenant("acme").await;
    let gone = Receiver::start().await;
    gone.set_fallback(Behavior::Status(410));
    let owner = Receiver::start().await;
    let (gone_id, _) = register(&app, &key, json!({"url": gone.url("/h"), "events": ["*"]})).await;
    register(
        &app,
        &key,
        json!({"url": owner.url("/ops"), "events": ["webhook.disabled", "delivery.failed"]}),
    )
    .await;
    publish(
        &app,
        json!({"type": "payment.succeeded", "tenant": tenant, "data": {"amount": 1}}),
    )
    .await;
    let got = owner.wait_for(2, Duration::from_secs(10)).await;
    let mut types: Vec<String> = got.iter().map(|r| r.header("x-event-type")).collect();
    types.sort();
    assert_eq!(types, vec!["delivery.failed", "webhook.disabled"]);
    for r in &got {
        assert_eq!(r.json()["data"]["webhook"], gone_id, "{:?}", r.json());
    }
    let disabled = got
        .iter()
        .find(|r| r.header("x-event-type") == "webhook.disabled")
        .unwrap()
        .json();
    assert_eq!(disabled["data"]["reason"], "endpoint answered 410 Gone");
    let w = app.get(&format!("/webhooks/{gone_id}"), &key).await.body;
    assert_eq!(w["disabled"], true);
    assert_eq!(
        gone.count(),
        1,
        "the gone webhook is sent nothing about itself"
    );
    // Listed with the tenant's events.
    let events = list(&app, "/events?type=webhook.disabled", &key, "events").await;
    assert_eq!(events.len(), 1);
}

/// Herald's own event types cannot be published: a `POST /events` of `webhook.disabled`,
/// `delivery.failed` or `webhook.test` is a 422 that stores and delivers nothing, so a
/// receiver of them can trust they are Herald's; a near name is an ordinary event.
#[tokio::test]
async fn herald_own_event_types_cannot_be_published() {
    let app = spawn_app(&hooks_config("")).await;
    let (tenant, key) = app.tenant("acme").await;
    let owner = Receiver::start().await;
    let (owner_id, _) = register(
        &app,
        &key,
        json!({"url": owner.url("/ops"), "events": ["webhook.*", "delivery.*"]}),
    )
    .await;
    for forged in ["webhook.disabled", "delivery.failed", "webhook.test"] {
        let r = app
            .post(
                "/events",
                ADMIN,
                json!({"type": forged, "tenant": tenant,
                       "data": {"webhook": owner_id, "reason": "forged"}}),
            )
            .await;
        assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST");
        assert!(
            r.body["detail"].as_str().unwrap().contains("Herald's own"),
            "{:?}",
            r.body
        );
        let stored = list(&app, &format!("/events?type={forged}"), &key, "events").await;
        assert!(stored.is_empty(), "{forged} was stored: {stored:?}");
    }
    publish(
        &app,
        json!({"type": "delivery.shipped", "tenant": tenant, "data": {}}),
    )
    .await;
    let got = owner.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header("x-event-type"), "delivery.shipped");
}
