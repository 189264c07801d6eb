//! Abuse limits: per-key rate limits answered 429 with `Retry-After` (off by default),
//! wrong keys limited per client address (on by default), and size limits on every route that takes a body and on request headers.

use herald_testkit::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn a_key_over_its_rate_gets_429_with_retry_after_and_other_keys_do_not() {
    let app = spawn_app("[limits]\nrequests_per_second = 1\nburst = 3\n").await;
    // Minting the worker key spends one of the admin key's three.
    let worker = app.worker_key().await;
    let mut statuses = vec![];
    let mut limited = None;
    for _ in 0..10 {
        let r = app.get("/operations", ADMIN).await;
        statuses.push(r.status.as_u16());
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(r);
        }
    }
    // A burst of 3 at 1/s: ten back-to-back requests cannot all pass.
    let r = limited.unwrap_or_else(|| panic!("never limited: {statuses:?}"));
    assert_eq!(r.body["code"], "RATE_LIMITED", "{:?}", r.body);
    assert_eq!(r.body["status"], 429);
    assert_eq!(
        r.headers["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let retry_after: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert!(
        statuses.iter().filter(|s| **s == 200).count() >= 1,
        "{statuses:?}"
    );

    // Another key has its own bucket: the worker's request gets past the limiter
    // (and is judged on its merits: 422 for an unknown type, not 429).
    let r = app
        .post(
            "/operations:claim",
            &worker,
            json!({ "types": ["x"], "max": 1 }),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", r.body);
    // Unauthenticated routes are not limited.
    assert_eq!(app.get("/healthz", "").await.status, StatusCode::OK);
}

/// Wrong keys are limited per client address: after `failed_auth_per_minute` refusals
/// (401), the address is answered 429 with `Retry-After` before any look-up, even for a
/// valid key this node has not seen lately; keys it holds in memory (the config admin
/// key, a key just used) still get in.
#[tokio::test]
async fn an_address_sending_wrong_keys_is_held_off_and_known_keys_still_work() {
    let app = spawn_app("[limits]\nfailed_auth_per_minute = 5\n").await;
    let worker = app.worker_key().await;
    // Used once, so this node holds it in memory.
    let r = app.get("/operations", &worker).await;
    assert_ne!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
    let (_, tenant_key) = app.tenant("acme").await; // never used: not in memory

    let wrong = "hrk_01JD000000000000000000000A_0000000000000000000000000000000000000000";
    for i in 0..5 {
        let r = app.get("/operations", wrong).await;
        assert_problem(&r, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
        assert!(r.headers.get("retry-after").is_none(), "refusal {i}");
    }
    let r = app.get("/operations", wrong).await;
    assert_problem(&r, StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");
    let retry_after: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=13).contains(&retry_after), "{retry_after}");
    // Held off: a valid key that would need a look-up waits too...
    let r = app.get("/operations", &tenant_key).await;
    assert_problem(&r, StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");
    // ...but keys held in memory are let in.
    assert_eq!(app.get("/operations", ADMIN).await.status, StatusCode::OK);
    let r = app.get("/operations", &worker).await;
    assert_ne!(r.status, StatusCode::TOO_MANY_REQUESTS, "{:?}", r.body);
    assert_ne!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
}

#[tokio::test]
async fn wrong_keys_are_only_refused_when_the_failed_auth_limit_is_off() {
    let app = spawn_app("[limits]\nfailed_auth_per_minute = 0\n").await;
    let wrong = "hrk_01JD000000000000000000000A_0000000000000000000000000000000000000000";
    for _ in 0..100 {
        let r = app.get("/operations", wrong).await;
        assert_problem(&r, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    }
    assert_eq!(app.get("/operations", ADMIN).await.status, StatusCode::OK);
}

#[tokio::test]
async fn rate_limits_are_off_by_default() {
    let app = spawn_app("").await;
    for _ in 0..300 {
        let r = app.get("/operations?page_size=1", ADMIN).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }
}

#[tokio::test]
async fn limits_config_is_checked() {
    let err = herald_server::Config::parse("[limits]\nrequests_per_second = 5\nburst = 0\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("burst"), "{err}");
    let c = herald_server::Config::parse("").unwrap();
    assert_eq!(c.limits.requests_per_second, 0);
}

/// Every route that takes a body answers an oversized one with 413 problem details.
#[tokio::test]
async fn every_body_is_size_limited() {
    let app = spawn_app(&format!("max_body_bytes = 2048\n{}", transcode_config(""))).await;
    // A JSON string just over the limit, valid in shape so only size can reject it.
    let big = json!({ "name": "x".repeat(4096) }).to_string();
    let worker = app.worker_key().await;
    let routes: Vec<(Method, &str, &str)> = vec![
        (Method::POST, "/tenants", ADMIN),
        (
            Method::POST,
            "/tenants/tnt_01HX0000000000000000000000/keys",
            ADMIN,
        ),
        (Method::POST, "/keys", ADMIN),
        (Method::POST, "/operations", ADMIN),
        (Method::POST, "/operations:claim", &worker),
        (
            Method::POST,
            "/operations/op_01HX0000000000000000000000:heartbeat",
            &worker,
        ),
        (
            Method::POST,
            "/operations/op_01HX0000000000000000000000:complete",
            &worker,
        ),
        (
            Method::POST,
            "/operations/op_01HX0000000000000000000000:fail",
            &worker,
        ),
        (
            Method::POST,
            "/operations/op_01HX0000000000000000000000:wait",
            ADMIN,
        ),
        (
            Method::POST,
            "/operations/op_01HX0000000000000000000000:cancel",
            ADMIN,
        ),
        (Method::POST, "/events", ADMIN),
        (Method::PUT, "/event-types/big.thing", ADMIN),
        (Method::POST, "/webhooks", ADMIN),
        (
            Method::PATCH,
            "/webhooks/wh_01HX0000000000000000000000",
            ADMIN,
        ),
        (
            Method::POST,
            "/webhooks/wh_01HX0000000000000000000000:rotateSecret",
            ADMIN,
        ),
        (
            Method::POST,
            "/webhooks/wh_01HX0000000000000000000000:replay",
            ADMIN,
        ),
        (Method::POST, "/videos", ADMIN),
    ];
    let mut too_large = vec![];
    for (method, path, key) in routes {
        let r = app
            .http
            .request(method.clone(), format!("{}{path}", app.base))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(big.clone())
            .send()
            .await
            .unwrap();
        let status = r.status();
        let reply = into_reply(r).await;
        // A route that needs no body may refuse earlier (404 for the unknown id) but
        // never accepts the oversized body, and never fails with a 5xx.
        assert!(
            status == StatusCode::PAYLOAD_TOO_LARGE || status == StatusCode::NOT_FOUND,
            "{method} {path}: {status} {:?}",
            reply.body
        );
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            assert_eq!(reply.body["code"], "BODY_TOO_LARGE", "{method} {path}");
            too_large.push(path);
        }
    }
    // Routes that read their body before looking anything up answer 413 every time.
    for path in [
        "/tenants",
        "/keys",
        "/operations",
        "/operations:claim",
        "/events",
        "/event-types/big.thing",
        "/webhooks",
        "/videos",
    ] {
        assert!(
            too_large.contains(&path),
            "{path} took the big body: {too_large:?}"
        );
    }
}

/// Headers far past hyper's limits are refused without a 5xx, and the server goes on.
#[tokio::test]
async fn oversized_headers_are_refused() {
    let app = spawn_app("").await;
    let huge = "a".repeat(1024 * 1024);
    let outcome = app
        .http
        .get(format!("{}/operations", app.base))
        .bearer_auth(ADMIN)
        .header("x-padding", huge)
        .send()
        .await;
    // A closed connection (Err) is a refusal as well.
    if let Ok(r) = outcome {
        assert!(
            r.status().is_client_error(),
            "a 1 MiB header was answered {}",
            r.status()
        );
    }
    let many = (0..200).fold(
        app.http
            .get(format!("{}/operations", app.base))
            .bearer_auth(ADMIN),
        |req, i| req.header(format!("x-h{i}"), "v"),
    );
    if let Ok(r) = many.send().await {
        assert!(!r.status().is_server_error(), "{}", r.status());
    }
    assert_eq!(app.get("/operations", ADMIN).await.status, StatusCode::OK);
}

#[tokio::test]
async fn the_nul_character_is_refused_alike_on_every_backend() {
    // PostgreSQL cannot store U+0000 in text: it answered 500 (and a worker's :fail that
    // carried one could never finish its operation) where SQLite stored it. Both refuse it.
    let app = spawn_app(&transcode_config("")).await;
    let r = app
        .post("/tenants", ADMIN, json!({ "name": "a\u{0000}b" }))
        .await;
    assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST");
    let r = app.get("/operations?page_size=1", ADMIN).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.body["operations"].as_array().map(Vec::len),
        Some(0),
        "nothing was made"
    );
    let (_, key) = app.tenant("acme").await;
    let r = app.post("/videos", &key, json!({ "title": "x" })).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let worker = app.worker_key().await;
    let op = app.claim(&worker, "transcode").await.unwrap();
    let id = op_id(&op);
    let token = op["lease_token"].as_str().unwrap();
    let r = app
        .post(
            &format!("/operations/{id}:fail"),
            &worker,
            json!({ "lease_token": token, "error": { "code": "BAD", "message": "a\u{0000}b" } }),
        )
        .await;
    assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST");
    // The worker can still end it with a clean message.
    let r = app
        .post(
            &format!("/operations/{id}:fail"),
            &worker,
            json!({ "lease_token": token, "error": { "code": "BAD", "message": "ab" } }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = app.get("/events?type=a%00b", ADMIN).await;
    assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST");
    // An escaped backslash before `u0000` is not a NUL.
    let r = app
        .post("/tenants", ADMIN, json!({ "name": "a\\u0000b" }))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
}

#[tokio::test]
async fn webhook_text_fields_and_rotation_grace_are_bounded() {
    let app = spawn_app("[webhooks]\nallow_private_destinations = true\n").await;
    let (_, key) = app.tenant("acme").await;
    let long = "d".repeat(1025);
    let r = app
        .post(
            "/webhooks",
            &key,
            json!({ "url": "http://127.0.0.1:9/h", "events": ["a.*"], "description": long }),
        )
        .await;
    assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST");
    let long_url = format!("http://127.0.0.1:9/{}", "p".repeat(2100));
    let r = app
        .post(
            "/webhooks",
            &key,
            json!({ "url": long_url, "events": ["a.*"] }),
        )
        .await;
    assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST");
    let r = app
        .post(
            "/webhooks",
            &key,
            json!({ "url": "http://127.0.0.1:9/h", "events": ["a.*"] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let r = app
        .call(
            Method::PATCH,
            &format!("/webhooks/{id}"),
            &key,
            Some(json!({ "description": "d".repeat(1025) })),
        )
        .await;
    assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST");
    // A grace past 30 days would let a leaked secret sign for ever; the answer once said
    // such a secret expired in 1970.
    let r = app
        .post(
            &format!("/webhooks/{id}:rotateSecret"),
            &key,
            json!({ "grace": "99999999999d" }),
        )
        .await;
    assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST");
    let r = app.get(&format!("/webhooks/{id}"), &key).await;
    assert_eq!(r.body["signing_secret_version"], 1, "nothing changed");
    let r = app
        .post(
            &format!("/webhooks/{id}:rotateSecret"),
            &key,
            json!({ "grace": "30d" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
}
