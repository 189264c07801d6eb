//! Operators' side over HTTP: `/healthz`, `/readyz` (schema version), request ids,
//! `/metrics` after real deliveries, `traceparent` on webhook requests, the
//! tenant-scoped `/stats`, and the dashboard's static files.

use herald_core::ids::EventId;
use herald_testkit::receiver::{Behavior, Receiver};
use herald_testkit::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

fn hooks_config() -> String {
    "[webhooks]\nallow_private_destinations = true\nschedule = [\"0s\"]\n".to_owned()
}

async fn delivery(app: &TestApp, id: &str) -> Value {
    let r = app.get(&format!("/deliveries/{id}"), ADMIN).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body
}

/// A tenant webhook whose first attempt fails (500) and whose redelivery succeeds.
/// Returns (tenant key, webhook id, delivery id, event id, receiver).
async fn failed_then_redelivered(app: &TestApp) -> (String, String, String, String, Receiver) {
    let (t, key) = app.tenant("acme").await;
    let receiver = Receiver::start().await;
    receiver.script([Behavior::Status(500)]);
    let r = app
        .post(
            "/webhooks",
            &key,
            json!({ "url": receiver.url("/h"), "events": ["payment.*"] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let wh = r.body["id"].as_str().unwrap().to_owned();
    let ev = app
        .post(
            "/events",
            ADMIN,
            json!({ "type": "payment.succeeded", "tenant": t, "data": { "n": 1 } }),
        )
        .await;
    assert_eq!(ev.status, StatusCode::ACCEPTED, "{:?}", ev.body);
    let failed = || async {
        let r = app.get(&format!("/deliveries?webhook={wh}"), ADMIN).await;
        r.body["deliveries"]
            .as_array()
            .and_then(|d| d.first())
            .filter(|d| d["status"] == "failed")
            .map(|d| d["id"].as_str().unwrap().to_owned())
    };
    app.eventually("the delivery to fail", || async {
        failed().await.is_some()
    })
    .await;
    let id = failed().await.unwrap();
    let r = app
        .post(&format!("/deliveries/{id}:redeliver"), &key, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    app.eventually("the redelivery to succeed", || async {
        delivery(app, &id).await["status"] == "succeeded"
    })
    .await;
    let event = ev.body["id"].as_str().unwrap().to_owned();
    (key, wh, id, event, receiver)
}

/// The value of one sample line (`name{labels} value`) in Prometheus text.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn health_and_readiness_report_the_schema() {
    let app = spawn_app("").await;
    let r = app.get("/healthz", "").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["status"], "ok");
    let r = app.get("/readyz", "").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["status"], "ready");
    assert_eq!(r.body["schema"]["applied"], r.body["schema"]["expected"]);
    assert!(r.body["schema"]["expected"].as_u64().unwrap() >= 1);
}

#[tokio::test]
async fn readiness_fails_when_the_schema_is_behind() {
    let app = spawn_app("").await;
    if app.on_postgres() {
        println!("skipped on PostgreSQL: this test rewinds the SQLite file's schema version");
        return;
    }
    // The version this build expects, as a current database reports it (not written here:
    // migrations are added and renumbered as branches merge).
    let current = app.get("/readyz", "").await.body["schema"]["expected"].clone();
    assert!(current.as_u64().unwrap() > 1, "{current}");
    // What an older database looks like to this build: it records an earlier version.
    let conn = rusqlite::Connection::open(app.dir.path().join("herald.db")).unwrap();
    conn.execute_batch("PRAGMA user_version = 1").unwrap();
    drop(conn);
    let r = app.get("/readyz", "").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
    assert_eq!(r.body["status"], "migrations not applied");
    assert_eq!(r.body["schema"]["applied"], 1);
    assert_eq!(r.body["schema"]["expected"], current);
}

#[tokio::test]
async fn request_ids_are_kept_or_made_and_echoed() {
    let app = spawn_app("").await;
    let r = app
        .http
        .get(format!("{}/healthz", app.base))
        .header("X-Request-Id", "req-abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "req-abc-123");
    let a = app.get("/operations", ADMIN).await;
    let b = app.get("/nowhere", ADMIN).await;
    let (a, b) = (&a.headers["x-request-id"], &b.headers["x-request-id"]);
    assert_eq!(a.len(), 26, "a ULID: {a:?}");
    assert_ne!(a, b);
    // A header that is not a sensible id is replaced, not echoed.
    let r = app
        .http
        .get(format!("{}/healthz", app.base))
        .header("X-Request-Id", "has spaces in it")
        .send()
        .await
        .unwrap();
    assert_ne!(r.headers()["x-request-id"], "has spaces in it");
}

/// `GET /metrics` with `key` (none: no `Authorization`): status and body.
async fn scrape_with(app: &TestApp, key: Option<&str>) -> (StatusCode, String) {
    let mut req = app.http.get(format!("{}/metrics", app.base));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let r = req.send().await.unwrap();
    (r.status(), r.text().await.unwrap())
}

async fn scrape(app: &TestApp) -> String {
    let (status, text) = scrape_with(app, None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    text
}

/// Scrapes until `check` holds for the text (the gauges refresh in the background), for
/// at most 10 s of real time; the text.
async fn scrape_until(app: &TestApp, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(app).await;
        if check(&text) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what} in:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The gauges re-read the store this often in these tests.
const FAST_GAUGES: &str = "[metrics]\nrefresh = \"100ms\"\n";

#[tokio::test]
async fn metrics_count_attempts_deliveries_requests_and_read_gauges() {
    let app = spawn_app(&format!("{}{FAST_GAUGES}", hooks_config())).await;
    let (_, _, id, _, _receiver) = failed_then_redelivered(&app).await;
    let r = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    // The store-backed gauges catch up at their next background refresh.
    let succeeded = r#"herald_deliveries{status="succeeded"}"#;
    let text = scrape_until(&app, succeeded, |t| sample(t, succeeded) == 1.0).await;
    assert_eq!(
        sample(&text, r#"herald_delivery_attempts_total{outcome="failed"}"#),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            r#"herald_delivery_attempts_total{outcome="succeeded"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            r#"herald_delivery_attempts_total{outcome="retrying"}"#
        ),
        0.0
    );
    assert_eq!(
        sample(&text, r#"herald_deliveries_total{outcome="failed"}"#),
        1.0
    );
    assert_eq!(
        sample(&text, r#"herald_deliveries_total{outcome="succeeded"}"#),
        1.0
    );
    assert_eq!(
        sample(&text, "herald_delivery_attempt_duration_seconds_count"),
        2.0
    );
    assert_eq!(sample(&text, "herald_delivery_backlog"), 0.0);
    assert_eq!(
        sample(&text, r#"herald_deliveries{status="succeeded"}"#),
        1.0
    );
    assert_eq!(sample(&text, r#"herald_operations{state="queued"}"#), 0.0);
    assert_eq!(
        sample(
            &text,
            r#"herald_broker_publish_total{broker="nats",outcome="published"}"#
        ),
        0.0
    );
    // Route templates, never raw ids, label HTTP metrics.
    assert_eq!(
        sample(
            &text,
            r#"herald_http_requests_total{method="POST",route="/deliveries/{id}",status="202"}"#
        ),
        1.0
    );
    assert!(!text.contains(&id), "a delivery id leaked into a label");
    assert!(text
        .contains(r#"herald_http_request_duration_seconds_bucket{method="POST",route="/events""#));
}

#[tokio::test]
async fn backlog_and_operation_gauges_follow_the_store() {
    let app = spawn_app(&transcode_config(FAST_GAUGES)).await;
    let (_, key) = app.tenant("acme").await;
    for _ in 0..2 {
        let r = app.post("/videos", &key, json!({ "src": "a.mp4" })).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    }
    let queued = r#"herald_operations{state="queued"}"#;
    let text = scrape_until(&app, queued, |t| sample(t, queued) == 2.0).await;
    assert!(sample(&text, "herald_state_gauges_updated_timestamp_seconds") > 0.0);
}

#[tokio::test]
async fn scrapes_never_read_the_store() {
    // Gauges refreshed once, at start, and not again for an hour.
    let app = spawn_app(&transcode_config("[metrics]\nrefresh = \"1h\"\n")).await;
    let updated = "herald_state_gauges_updated_timestamp_seconds";
    let first = scrape_until(&app, "the first refresh", |t| sample(t, updated) > 0.0).await;
    let refreshed_at = sample(&first, updated);
    let (_, key) = app.tenant("acme").await;
    for _ in 0..2 {
        let r = app.post("/videos", &key, json!({})).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    }
    // However often it is scraped, the scrape encodes what was read at start: a scrape
    // that counted in the store would see the two queued operations.
    for _ in 0..200 {
        let text = scrape(&app).await;
        assert_eq!(sample(&text, r#"herald_operations{state="queued"}"#), 0.0);
        assert_eq!(sample(&text, updated), refreshed_at);
    }
    // The store itself has them, as the next refresh would.
    let counts = app.store.state_counts(None).await.unwrap();
    assert!(counts.operations.contains(&("queued".to_owned(), 2)));
}

#[tokio::test]
async fn metrics_can_require_an_admin_key_or_its_token() {
    let token = "scrape-token-0123456789";
    let app = spawn_app(&format!(
        "[metrics]\nrequire_key = true\ntoken = \"{token}\"\n"
    ))
    .await;
    let (_, tenant) = app.tenant("acme").await;
    let worker = app.worker_key().await;
    for (key, status, code) in [
        (None, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
        (Some("wrong"), StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
        (
            Some("scrape-token-012345678"),
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
        ),
        (Some(tenant.as_str()), StatusCode::FORBIDDEN, "FORBIDDEN"),
        (Some(worker.as_str()), StatusCode::FORBIDDEN, "FORBIDDEN"),
    ] {
        let mut req = app.http.get(format!("{}/metrics", app.base));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let r = into_reply(req.send().await.unwrap()).await;
        assert_problem(&r, status, code);
    }
    for key in [ADMIN, token] {
        let (status, text) = scrape_with(&app, Some(key)).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert!(text.contains("herald_http_requests_total"), "{text}");
    }
    // The token opens /metrics and nothing else.
    assert_problem(
        &app.get("/operations", token).await,
        StatusCode::UNAUTHORIZED,
        "UNAUTHENTICATED",
    );
    // Without require_key, no key is needed (the default).
    let open = spawn_app("").await;
    assert_eq!(scrape_with(&open, None).await.0, StatusCode::OK);
}

#[test]
fn metrics_settings_are_checked() {
    use herald_server::Config;
    for bad in [
        "[metrics]\nrefresh = \"10ms\"\n",
        "[metrics]\nrefresh = \"soon\"\n",
        "[metrics]\ntoken = \"scrape-token-0123456789\"\n",
        "[metrics]\nrequire_key = true\ntoken = \"short\"\n",
        "[metrics]\nrequire_key = true\ntoken = \" scrape-token-0123456789\"\n",
        "[metrics]\nrequire_keys = true\n",
    ] {
        let e = Config::parse(bad).expect_err(bad).to_string();
        assert!(e.contains("metrics") || e.contains("refresh"), "{bad}: {e}");
        assert!(!e.contains("scrape-token"), "the token leaked: {e}");
    }
    let c = Config::parse("[metrics]\nrefresh = \"5s\"\nrequire_key = true\n").unwrap();
    assert_eq!(c.metrics.refresh, Duration::from_secs(5));
    assert!(c.metrics.require_key && c.metrics.token.is_none());
    assert_eq!(
        Config::default().metrics.refresh,
        Duration::from_secs(10),
        "the default"
    );
}

#[tokio::test]
async fn webhook_requests_carry_a_traceparent_from_the_event() {
    let app = spawn_app(&hooks_config()).await;
    let (_, _, _, event, receiver) = failed_then_redelivered(&app).await;
    let got = receiver.wait_for(2, Duration::from_secs(5)).await;
    let trace_id = format!("{:032x}", EventId::parse(&event).unwrap().as_u128());
    let parents: Vec<String> = got
        .iter()
        .map(|r| {
            let tp = r.header("traceparent");
            let parts: Vec<&str> = tp.split('-').collect();
            assert_eq!(parts.len(), 4, "{tp}");
            assert_eq!(parts[0], "00");
            assert_eq!(parts[1], trace_id, "the trace is the event's");
            assert_eq!(parts[3], "01");
            parts[2].to_owned()
        })
        .collect();
    assert_ne!(parents[0], parents[1], "each attempt is its own span");
}

#[tokio::test]
async fn stats_come_from_the_store_and_are_scoped_to_the_tenant() {
    let app = spawn_app(&hooks_config()).await;
    let (key, wh, _, _, _receiver) = failed_then_redelivered(&app).await;
    let (_, other_key) = app.tenant("globex").await;

    let r = app.get("/stats", &key).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["totals"]["attempts"], 2);
    assert_eq!(r.body["totals"]["succeeded"], 1);
    assert_eq!(r.body["totals"]["failed"], 1);
    assert!(r.body["totals"]["p50_ms"].is_u64());
    assert_eq!(r.body["bucket_seconds"], 60);
    let per_minute: u64 = r.body["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["succeeded"].as_u64().unwrap() + b["failed"].as_u64().unwrap())
        .sum();
    assert_eq!(per_minute, 2);
    let health = &r.body["webhooks"][0];
    assert_eq!(health["id"], wh.as_str());
    assert_eq!(health["success_rate"], 0.5);
    assert_eq!(health["last_error"], "HTTP 500");
    assert_eq!(health["circuit"], "closed");
    assert_eq!(health["circuit_open_until"], Value::Null);
    assert_eq!(r.body["now"]["deliveries"]["succeeded"], 1);
    assert_eq!(r.body["scope"]["role"], "tenant");
    let last = r.body["backlog"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["pending"], 0);

    let r = app.get("/stats", &other_key).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["totals"]["attempts"], 0);
    assert_eq!(r.body["webhooks"], json!([]));
    assert_eq!(r.body["now"]["deliveries"], json!({}));

    let r = app.get("/stats", ADMIN).await;
    assert_eq!(r.body["totals"]["attempts"], 2);
    assert_eq!(r.body["scope"], json!({ "role": "admin", "tenant": null }));

    let worker = app.worker_key().await;
    assert_problem(
        &app.get("/stats", &worker).await,
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
    );
    assert_problem(
        &app.get("/stats", "").await,
        StatusCode::UNAUTHORIZED,
        "UNAUTHENTICATED",
    );
    let r = app
        .get(
            "/stats?since=2026-01-01T00:00:00Z&until=2026-01-03T00:00:00Z",
            ADMIN,
        )
        .await;
    assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST");
}

#[tokio::test]
async fn stats_show_a_failing_webhooks_open_circuit_and_only_its_own() {
    let app = spawn_app(
        "[webhooks]\nallow_private_destinations = true\nschedule = [\"0s\", \"0s\", \"0s\"]\n",
    )
    .await;
    let (tenant, key) = app.tenant("acme").await;
    let failing = Receiver::start().await;
    failing.set_fallback(Behavior::Status(500));
    let healthy = Receiver::start().await;
    let mut ids = Vec::new();
    for (receiver, events) in [(&failing, "payment.*"), (&healthy, "order.*")] {
        let r = app
            .post(
                "/webhooks",
                &key,
                json!({ "url": receiver.url("/h"), "events": [events] }),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        ids.push(r.body["id"].as_str().unwrap().to_owned());
    }
    // Three deliveries failing four attempts each: five failures in a row open the circuit.
    for (i, t) in [
        "payment.failed",
        "payment.failed",
        "payment.failed",
        "order.placed",
    ]
    .iter()
    .enumerate()
    {
        let r = app
            .post(
                "/events",
                ADMIN,
                json!({ "type": t, "tenant": tenant, "data": { "n": i } }),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    }
    healthy.wait_for(1, Duration::from_secs(10)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let stats = loop {
        let r = app.get("/stats", &key).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        let open = r.body["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["id"] == ids[0].as_str() && w["circuit"] == "open");
        if open {
            break r.body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the circuit never showed open: {}",
            r.body["webhooks"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for w in stats["webhooks"].as_array().unwrap() {
        if w["id"] == ids[0].as_str() {
            let until = w["circuit_open_until"].as_str().unwrap();
            let until = herald_core::Timestamp::parse_rfc3339(until).unwrap();
            let at = herald_core::Timestamp::parse_rfc3339(stats["now"]["at"].as_str().unwrap())
                .unwrap();
            assert!(until > at, "open until {until:?}, now {at:?}");
        } else {
            assert_eq!(w["id"], ids[1].as_str());
            assert_eq!(w["circuit"], "closed");
        }
    }
}

#[tokio::test]
async fn the_dashboard_is_served_from_the_binary() {
    let app = spawn_app("").await;
    let r = app
        .http
        .get(format!("{}/dashboard", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = r.text().await.unwrap();
    assert!(html.contains("/dashboard/app.js") && html.contains("/dashboard/app.css"));
    for asset in ["/dashboard/app.js", "/dashboard/app.css"] {
        let r = app
            .http
            .get(format!("{}{asset}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{asset}");
        assert!(!r.text().await.unwrap().is_empty(), "{asset}");
    }
}

#[tokio::test]
async fn stats_count_broker_route_attempts_beside_webhooks() {
    // A broker delivery has no webhook: `/stats` answered 500 once one had an attempt.
    // The route points at a closed port, so its attempts fail and are recorded.
    let config = format!(
        "{}[[routes]]\nname = \"ledger\"\nevents = [\"payment.*\"]\nbroker = \"nats\"\ntopic = \"ledger\"\n\
         [brokers]\ntimeout = \"1s\"\n[brokers.nats]\nurl = \"nats://127.0.0.1:1\"\n",
        hooks_config()
    );
    let app = spawn_app(&config).await;
    let (t, key) = app.tenant("acme").await;
    let r = app
        .post(
            "/events",
            ADMIN,
            json!({ "type": "payment.succeeded", "tenant": t, "data": {} }),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    app.eventually("the route's first attempt to be recorded", || async {
        let r = app.get("/deliveries?route=ledger", ADMIN).await;
        r.body["deliveries"][0]["attempts"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    let r = app.get("/stats", ADMIN).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert!(
        r.body["totals"]["failed"].as_u64().unwrap() >= 1,
        "{:?}",
        r.body
    );
    assert_eq!(r.body["routes"][0]["id"], "ledger", "{:?}", r.body);
    assert_eq!(r.body["webhooks"], json!([]));
    // A tenant key sees its webhooks only, not the operator's routes.
    let r = app.get("/stats", &key).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["routes"], json!([]));
    assert_eq!(r.body["totals"]["attempts"], 0);
    assert_eq!(
        r.body["now"]["deliveries"],
        json!({}),
        "a tenant's counts leave broker deliveries out, as GET /deliveries does"
    );
}
