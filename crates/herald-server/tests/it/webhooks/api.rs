//! The webhook API: register, read, update, delete; private destinations; wildcards and tenancy.

use super::*;

#[tokio::test]
async fn webhook_api_registers_reads_updates_and_deletes() {
    let app = spawn_app(&hooks_config("")).await;
    let (a, a_key) = app.tenant("acme").await;
    let (b, b_key) = app.tenant("globex").await;
    let receiver = Receiver::start().await;

    let created = app
        .post(
            "/webhooks",
            &a_key,
            json!({ "url": receiver.url("/hooks/payments"),
                    "events": ["payment.succeeded", "payment.failed"],
                    "signing_secret_version": 1 }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("wh_"));
    let secret = created.body["signing_secret"].as_str().unwrap().to_owned();
    assert!(secret.len() >= 32, "{secret}");
    assert_eq!(created.body["signing_secret_version"], 1);
    assert_eq!(created.body["tenant"], a);
    assert_eq!(created.body["url"], receiver.url("/hooks/payments"));
    assert_eq!(
        created.body["events"],
        json!(["payment.succeeded", "payment.failed"])
    );
    assert_eq!(created.body["disabled"], false);

    let no_secret = |what: &str, v: &Value| {
        assert!(v.get("signing_secret").is_none(), "{what}: {v}");
        assert!(!v.to_string().contains(&secret), "{what} leaks the secret");
    };
    let got = app.get(&format!("/webhooks/{id}"), &a_key).await;
    assert_eq!(got.status, StatusCode::OK);
    no_secret("GET", &got.body);
    let mut expected = created.body.clone();
    expected.as_object_mut().unwrap().remove("signing_secret");
    assert_eq!(got.body, expected);
    let listed = list(&app, "/webhooks", &a_key, "webhooks").await;
    assert_eq!(listed.len(), 1);
    no_secret("list", &listed[0]);
    assert_eq!(listed[0]["id"], id);

    // Another tenant: 404 everywhere, and an empty list.
    for (method, path) in [
        (Method::GET, format!("/webhooks/{id}")),
        (Method::PATCH, format!("/webhooks/{id}")),
        (Method::DELETE, format!("/webhooks/{id}")),
        (Method::POST, format!("/webhooks/{id}:disable")),
        (Method::POST, format!("/webhooks/{id}:rotateSecret")),
        (Method::POST, format!("/webhooks/{id}:replay")),
    ] {
        let body = (method == Method::PATCH).then(|| json!({ "disabled": true }));
        let r = app.call(method.clone(), &path, &b_key, body).await;
        assert_problem(&r, StatusCode::NOT_FOUND, "NOT_FOUND");
    }
    assert!(list(&app, "/webhooks", &b_key, "webhooks").await.is_empty());
    assert_eq!(
        app.get(&format!("/webhooks/{id}"), &a_key).await.body["disabled"],
        false,
        "the other tenant changed nothing"
    );
    // A tenant key cannot register for another tenant; an admin can, naming it.
    let r = app
        .post(
            "/webhooks",
            &a_key,
            json!({ "url": receiver.url("/x"), "events": ["a.b"], "tenant": b }),
        )
        .await;
    assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST");
    let (b_hook, _) = register(
        &app,
        ADMIN,
        json!({ "url": receiver.url("/b"), "events": ["a.b"], "tenant": b }),
    )
    .await;
    let b_list = list(&app, "/webhooks", &b_key, "webhooks").await;
    assert_eq!(b_list.len(), 1);
    assert_eq!(b_list[0]["id"], b_hook);
    assert_eq!(b_list[0]["tenant"], b);
    assert_eq!(list(&app, "/webhooks", ADMIN, "webhooks").await.len(), 2);

    // PATCH events, url, disabled.
    let patched = app
        .call(
            Method::PATCH,
            &format!("/webhooks/{id}"),
            &a_key,
            Some(json!({ "events": ["refund.*"], "url": receiver.url("/v2"), "disabled": true })),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{:?}", patched.body);
    no_secret("PATCH", &patched.body);
    assert_eq!(patched.body["events"], json!(["refund.*"]));
    assert_eq!(patched.body["url"], receiver.url("/v2"));
    assert_eq!(patched.body["disabled"], true);
    let got = app.get(&format!("/webhooks/{id}"), &a_key).await.body;
    assert_eq!(got["events"], json!(["refund.*"]));
    assert_eq!(got["disabled"], true);
    let bad = app
        .call(
            Method::PATCH,
            &format!("/webhooks/{id}"),
            &a_key,
            Some(json!({ "events": ["not a type"] })),
        )
        .await;
    assert_problem(&bad, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST");

    // :enable and :disable.
    let en = app
        .post(&format!("/webhooks/{id}:enable"), &a_key, json!({}))
        .await;
    assert_eq!(en.status, StatusCode::OK, "{:?}", en.body);
    assert_eq!(en.body["disabled"], false);
    no_secret(":enable", &en.body);
    assert_eq!(
        app.get(&format!("/webhooks/{id}"), &a_key).await.body["disabled"],
        false
    );
    let dis = app
        .post(&format!("/webhooks/{id}:disable"), &a_key, json!({}))
        .await;
    assert_eq!(dis.status, StatusCode::OK, "{:?}", dis.body);
    assert_eq!(dis.body["disabled"], true);
    assert_eq!(
        app.get(&format!("/webhooks/{id}"), &a_key).await.body["disabled"],
        true
    );

    // Rotation shows the new secret once.
    let rotated = app
        .post(&format!("/webhooks/{id}:rotateSecret"), &a_key, json!({}))
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{:?}", rotated.body);
    let new_secret = rotated.body["signing_secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    assert_eq!(rotated.body["signing_secret_version"], 2);
    let got = app.get(&format!("/webhooks/{id}"), &a_key).await.body;
    no_secret("GET after rotation", &got);
    assert!(!got.to_string().contains(&new_secret));
    assert_eq!(got["signing_secret_version"], 2);

    // Delete: then 404.
    let del = app
        .call(Method::DELETE, &format!("/webhooks/{id}"), &a_key, None)
        .await;
    assert_eq!(del.status, StatusCode::NO_CONTENT, "{:?}", del.body);
    let gone = app.get(&format!("/webhooks/{id}"), &a_key).await;
    assert_problem(&gone, StatusCode::NOT_FOUND, "NOT_FOUND");
    assert!(list(&app, "/webhooks", &a_key, "webhooks").await.is_empty());
    let again = app
        .call(Method::DELETE, &format!("/webhooks/{id}"), &a_key, None)
        .await;
    assert_problem(&again, StatusCode::NOT_FOUND, "NOT_FOUND");
}

#[tokio::test]
async fn private_destinations_are_refused_by_default() {
    let app = spawn_app("").await; // allow_private_destinations defaults to false
    let (_, key) = app.tenant("acme").await;
    for url in [
        "http://127.0.0.1:9/x",
        "http://169.254.169.254/",
        "http://10.0.0.1/",
        "http://192.168.1.1/hook",
        "http://[::1]/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://0.0.0.0:8288/",
    ] {
        let r = app
            .post(
                "/webhooks",
                &key,
                json!({ "url": url, "events": ["payment.*"] }),
            )
            .await;
        assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST");
        assert!(
            r.body["detail"]
                .as_str()
                .unwrap()
                .contains("allow_private_destinations"),
            "{url}: {:?}",
            r.body
        );
    }
    for url in ["ftp://93.184.216.34/x", "http://user:pw@93.184.216.34/"] {
        let r = app
            .post("/webhooks", &key, json!({ "url": url, "events": ["a.b"] }))
            .await;
        assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST");
    }
    assert!(list(&app, "/webhooks", &key, "webhooks").await.is_empty());

    // A public address is accepted, and cannot be moved to a private one.
    let (id, _) = register(
        &app,
        &key,
        json!({ "url": "https://93.184.216.34/hooks", "events": ["payment.*"] }),
    )
    .await;
    let r = app
        .call(
            Method::PATCH,
            &format!("/webhooks/{id}"),
            &key,
            Some(json!({ "url": "http://169.254.169.254/latest/meta-data" })),
        )
        .await;
    assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST");
    assert_eq!(
        app.get(&format!("/webhooks/{id}"), &key).await.body["url"],
        "https://93.184.216.34/hooks"
    );
}

#[tokio::test]
async fn wildcards_match_and_webhooks_only_get_their_tenants_events() {
    let app = spawn_app(&hooks_config("")).await;
    let (a, a_key) = app.tenant("acme").await;
    let (b, b_key) = app.tenant("globex").await;
    let (ra, ra_refunds, rb) = (
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
    );
    register(
        &app,
        &a_key,
        json!({ "url": ra.url("/p"), "events": ["payment.*"] }),
    )
    .await;
    register(
        &app,
        &a_key,
        json!({ "url": ra_refunds.url("/r"), "events": ["refund.created"] }),
    )
    .await;
    register(
        &app,
        &b_key,
        json!({ "url": rb.url("/p"), "events": ["payment.*"] }),
    )
    .await;

    let ev = |tenant: Option<&str>, ty: &str| json!({ "type": ty, "tenant": tenant, "data": { "t": ty } });
    let mut a_payments = BTreeSet::new();
    for ty in [
        "payment.succeeded",
        "payment.failed",
        "payment.refund.partial",
    ] {
        let r = publish(&app, ev(Some(&a), ty)).await;
        a_payments.insert(r["id"].as_str().unwrap().to_owned());
    }
    for ty in [
        "payments.succeeded",
        "payment",
        "refund.updated",
        "other.payment.x",
    ] {
        publish(&app, ev(Some(&a), ty)).await;
    }
    let refund = publish(&app, ev(Some(&a), "refund.created")).await;
    let b_event = publish(&app, ev(Some(&b), "payment.succeeded")).await;
    publish(&app, ev(None, "payment.succeeded")).await; // no tenant: no tenant's webhook

    let got_a = ra.wait_for(3, Duration::from_secs(5)).await;
    ra_refunds.wait_for(1, Duration::from_secs(5)).await;
    rb.wait_for(1, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ra.count(), 3, "only payment.<…> events of tenant A");
    assert_eq!(ra_refunds.count(), 1);
    assert_eq!(rb.count(), 1);
    let a_ids: BTreeSet<String> = got_a.iter().map(|r| r.header("x-event-id")).collect();
    assert_eq!(a_ids, a_payments);
    assert_eq!(ra_refunds.received()[0].header("x-event-id"), refund["id"]);
    assert_eq!(rb.received()[0].header("x-event-id"), b_event["id"]);
    assert_eq!(
        rb.received()[0].json()["data"],
        json!({ "t": "payment.succeeded" })
    );
}
