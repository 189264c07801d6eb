//! Events: `POST /events` (dedupe, sequences per key), schemas (from the API and config, on every node) and the history.

use super::*;

#[tokio::test]
async fn events_are_accepted_deduplicated_and_numbered_per_key() {
    let app = spawn_app(&hooks_config("")).await;
    let (a, a_key) = app.tenant("acme").await;
    let (b, _) = app.tenant("globex").await;
    let receiver = Receiver::start().await;
    register(
        &app,
        &a_key,
        json!({ "url": receiver.url("/hooks"), "events": ["payment.*"] }),
    )
    .await;

    // Sequences count per (tenant, key).
    let ev = |tenant: &str, key: &str, n: u32| json!({ "type": "payment.succeeded", "tenant": tenant, "key": key, "data": { "n": n } });
    let first = publish(&app, ev(&a, "pay_1", 1)).await;
    assert!(first["id"].as_str().unwrap().starts_with("evt_"), "{first}");
    assert_eq!(keys_of(&first), set(&["id", "sequence"]));
    assert_eq!(first["sequence"], 1);
    assert_eq!(publish(&app, ev(&a, "pay_1", 2)).await["sequence"], 2);
    assert_eq!(publish(&app, ev(&a, "pay_2", 1)).await["sequence"], 1);
    assert_eq!(publish(&app, ev(&a, "pay_1", 3)).await["sequence"], 3);
    assert_eq!(publish(&app, ev(&b, "pay_1", 1)).await["sequence"], 1);
    assert_eq!(publish(&app, ev(&a, "pay_2", 2)).await["sequence"], 2);
    let unkeyed = publish(
        &app,
        json!({ "type": "payment.succeeded", "tenant": a, "data": {} }),
    )
    .await;
    assert!(unkeyed.get("sequence").is_none(), "{unkeyed}");
    receiver.wait_for(6, Duration::from_secs(5)).await;

    // Dedupe by `id`: the same body gets the same answer and nothing new.
    let id = EventId::generate().to_string();
    let body = json!({ "id": id, "type": "payment.succeeded", "tenant": a, "key": "pay_9", "data": { "amount": 10 } });
    let once = publish(&app, body.clone()).await;
    assert_eq!(once, json!({ "id": id, "sequence": 1 }));
    let twice = publish(&app, body.clone()).await;
    assert_eq!(twice, once);
    let mut changed = body.clone();
    changed["data"]["amount"] = json!(11);
    let reused = app.post("/events", ADMIN, changed).await;
    assert_problem(
        &reused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "IDEMPOTENCY_KEY_REUSED",
    );
    let stored = list(&app, "/events?key=pay_9", ADMIN, "events").await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0]["data"], json!({ "amount": 10 }));
    // The duplicate did not use up a sequence number.
    assert_eq!(publish(&app, ev(&a, "pay_9", 0)).await["sequence"], 2);

    // Dedupe by Idempotency-Key.
    let body = json!({ "type": "payment.failed", "tenant": a, "key": "pay_7", "data": { "reason": "declined" } });
    let r1 = post_with_idempotency_key(&app, "/events", ADMIN, &body, "idem-1").await;
    assert_eq!(r1.status, StatusCode::ACCEPTED, "{:?}", r1.body);
    let r2 = post_with_idempotency_key(&app, "/events", ADMIN, &body, "idem-1").await;
    assert_eq!(r2.status, StatusCode::ACCEPTED, "{:?}", r2.body);
    assert_eq!(r2.body, r1.body);
    assert_eq!(r1.body["sequence"], 1);
    let mut other = body.clone();
    other["data"]["reason"] = json!("expired");
    let r3 = post_with_idempotency_key(&app, "/events", ADMIN, &other, "idem-1").await;
    assert_problem(
        &r3,
        StatusCode::UNPROCESSABLE_ENTITY,
        "IDEMPOTENCY_KEY_REUSED",
    );
    assert_eq!(
        list(&app, "/events?key=pay_7", ADMIN, "events").await.len(),
        1
    );

    // Each new event reached the webhook once; duplicates made no deliveries.
    receiver.wait_for(9, Duration::from_secs(5)).await;
    assert_quiet(&receiver, 9, "duplicates are not delivered again").await;
    let ids: BTreeSet<String> = receiver
        .received()
        .iter()
        .map(|r| r.header("x-event-id"))
        .collect();
    assert_eq!(ids.len(), 9);
}

/// Two nodes on one PostgreSQL database: a schema registered through either is enforced
/// by the other within moments (its notification reloads the other's compiled schemas),
/// not only after a restart.
#[tokio::test]
async fn a_schema_registered_on_one_node_is_enforced_by_the_others() {
    let a = spawn_app("").await;
    let Some(b) = a.second_node("").await else {
        println!("skipped: needs PostgreSQL (HERALD_TEST_HTTP_DATABASE_URL); SQLite is one node");
        return;
    };
    let bad = json!({ "type": "invoice.paid", "data": { "amount": "ten" } });
    let good = json!({ "type": "invoice.paid", "data": { "amount": 10 } });
    // No schema yet: node B takes anything.
    publish(&b, bad.clone()).await;
    let r = a
        .call(
            Method::PUT,
            "/event-types/invoice.paid",
            ADMIN,
            Some(json!({ "schema": {
                "type": "object",
                "required": ["amount"],
                "properties": { "amount": { "type": "integer" } }
            } })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    b.eventually(
        "node B refuses data against node A's new schema",
        || async {
            b.post("/events", ADMIN, bad.clone()).await.status == StatusCode::UNPROCESSABLE_ENTITY
        },
    )
    .await;
    let r = b.post("/events", ADMIN, bad.clone()).await;
    assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, "SCHEMA_VIOLATION");
    publish(&b, good.clone()).await;

    // And back the other way: B relaxes the schema, A follows.
    let r = b
        .call(
            Method::PUT,
            "/event-types/invoice.paid",
            ADMIN,
            Some(json!({ "schema": { "type": "object" } })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    a.eventually("node A takes data node B's schema now allows", || async {
        a.post("/events", ADMIN, bad.clone()).await.status == StatusCode::ACCEPTED
    })
    .await;
}

#[tokio::test]
async fn event_schemas_from_the_api_and_config_refuse_bad_data() {
    let config = hooks_config("")
        + r#"
[[event_types]]
name = "invoice.paid"
schema = { type = "object", required = ["amount"], properties = { amount = { type = "integer", minimum = 1 } } }
"#;
    let app = spawn_app(&config).await;
    let (t, t_key) = app.tenant("acme").await;
    let receiver = Receiver::start().await;
    register(
        &app,
        &t_key,
        json!({ "url": receiver.url("/h"), "events": ["invoice.*", "payment.*"] }),
    )
    .await;

    let schema = json!({ "type": "object", "required": ["payment_id"],
                         "properties": { "payment_id": { "type": "string" } } });
    let put = app
        .call(
            Method::PUT,
            "/event-types/payment.succeeded",
            ADMIN,
            Some(json!({ "schema": schema })),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{:?}", put.body);
    // Only admins publish events and register schemas.
    let r = app
        .call(
            Method::PUT,
            "/event-types/x.y",
            &t_key,
            Some(json!({ "schema": {} })),
        )
        .await;
    assert_problem(&r, StatusCode::FORBIDDEN, "FORBIDDEN");
    let r = app
        .post(
            "/events",
            &t_key,
            json!({ "type": "x.y", "tenant": t, "data": {} }),
        )
        .await;
    assert_problem(&r, StatusCode::FORBIDDEN, "FORBIDDEN");
    let types = list(&app, "/event-types", ADMIN, "event_types").await;
    let names: BTreeSet<String> = types
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, set(&["invoice.paid", "payment.succeeded"]));

    for (event_type, data) in [
        ("payment.succeeded", json!({ "amount": 5 })),
        ("payment.succeeded", json!({ "payment_id": 42 })),
        ("invoice.paid", json!({ "amount": "ten" })),
        ("invoice.paid", json!({ "amount": 0 })),
        ("invoice.paid", json!({})),
    ] {
        let r = app
            .post(
                "/events",
                ADMIN,
                json!({ "type": event_type, "tenant": t, "key": "k1", "data": data }),
            )
            .await;
        assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, "SCHEMA_VIOLATION");
    }
    assert!(list(&app, "/events", ADMIN, "events").await.is_empty());
    assert!(deliveries(&app, "").await.is_empty());

    // Valid data passes; the refused events used no sequence numbers.
    let ok = publish(
        &app,
        json!({ "type": "payment.succeeded", "tenant": t, "key": "k1", "data": { "payment_id": "pay_1" } }),
    )
    .await;
    assert_eq!(ok["sequence"], 1);
    publish(
        &app,
        json!({ "type": "invoice.paid", "tenant": t, "data": { "amount": 3 } }),
    )
    .await;
    // A type without a schema takes anything.
    publish(
        &app,
        json!({ "type": "payment.failed", "tenant": t, "data": [1, 2] }),
    )
    .await;
    assert_eq!(list(&app, "/events", ADMIN, "events").await.len(), 3);
    receiver.wait_for(3, Duration::from_secs(5)).await;
    assert_quiet(&receiver, 3, "refused events are never delivered").await;

    // A schema that is not a JSON Schema is refused.
    let bad = app
        .call(
            Method::PUT,
            "/event-types/refund.created",
            ADMIN,
            Some(json!({ "schema": { "type": 12 } })),
        )
        .await;
    assert_eq!(
        bad.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        bad.body
    );
}

#[tokio::test]
async fn event_history_filters_and_pages() {
    let app = spawn_app("").await;
    let (a, a_key) = app.tenant("acme").await;
    let (b, b_key) = app.tenant("globex").await;
    let mut ids = vec![];
    for (ty, key) in [
        ("payment.succeeded", "pay_1"),
        ("payment.failed", "pay_2"),
        ("payment.succeeded", "pay_2"),
        ("refund.created", "pay_1"),
        ("payment.succeeded", "pay_1"),
    ] {
        let r = publish(
            &app,
            json!({ "type": ty, "tenant": a, "key": key, "data": {} }),
        )
        .await;
        ids.push(r["id"].as_str().unwrap().to_owned());
    }
    publish(
        &app,
        json!({ "type": "payment.succeeded", "tenant": b, "key": "pay_1", "data": {} }),
    )
    .await;
    let ids_of = |events: &[Value]| -> Vec<String> {
        events
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect()
    };

    // A tenant sees its own history, oldest first.
    let all = list(&app, "/events", &a_key, "events").await;
    assert_eq!(ids_of(&all), ids);
    assert_eq!(all[0]["tenant"], a);
    assert_eq!(all[0]["key"], "pay_1");
    assert_eq!(all[0]["sequence"], 1);
    assert_eq!(list(&app, "/events", &b_key, "events").await.len(), 1);
    assert_eq!(list(&app, "/events", ADMIN, "events").await.len(), 6);

    let by_type = list(&app, "/events?type=payment.succeeded", &a_key, "events").await;
    assert_eq!(
        ids_of(&by_type),
        vec![ids[0].clone(), ids[2].clone(), ids[4].clone()]
    );
    let by_key = list(&app, "/events?key=pay_1", &a_key, "events").await;
    assert_eq!(
        ids_of(&by_key),
        vec![ids[0].clone(), ids[3].clone(), ids[4].clone()]
    );
    let seqs: Vec<i64> = by_key
        .iter()
        .map(|e| e["sequence"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    let after = list(&app, &format!("/events?after={}", ids[1]), &a_key, "events").await;
    assert_eq!(ids_of(&after), ids[2..].to_vec());
    let combined = list(
        &app,
        &format!("/events?type=payment.succeeded&key=pay_1&after={}", ids[0]),
        &a_key,
        "events",
    )
    .await;
    assert_eq!(ids_of(&combined), vec![ids[4].clone()]);

    // Cursor pages: page_size and page_token.
    let mut seen = vec![];
    let mut token = String::new();
    for _ in 0..5 {
        let r = app
            .get(&format!("/events?page_size=2&page_token={token}"), &a_key)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        let page = r.body["events"].as_array().unwrap();
        assert!(page.len() <= 2);
        seen.extend(ids_of(page));
        token = r.body["next_page_token"].as_str().unwrap().to_owned();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen, ids, "pages cover the history once, in order");
    let r = app.get(&format!("/events/{}", ids[0]), &b_key).await;
    assert_problem(&r, StatusCode::NOT_FOUND, "NOT_FOUND");
}
