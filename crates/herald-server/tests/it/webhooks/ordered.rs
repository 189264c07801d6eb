//! Ordered webhooks end to end (`"ordering": "key"`): against an endpoint that fails at
//! random, every key's events are acknowledged in `sequence` order and no event is sent
//! before the one ahead of it was acknowledged; a key whose endpoint keeps failing holds
//! back only itself (the log shows who holds whom), and `:skip` releases it.

use super::*;
use axum::extract::State as AxumState;
use axum::routing::post;
use std::sync::{Arc, Mutex};

/// What the endpoint saw: (key, sequence, status answered), in arrival order.
type Seen = Arc<Mutex<Vec<(String, i64, u16)>>>;

#[derive(Clone)]
struct Endpoint {
    seen: Seen,
    /// xorshift state: which ordinary requests fail.
    rng: Arc<Mutex<u64>>,
    /// Requests for this key fail while it is set.
    stuck: Arc<Mutex<Option<String>>>,
    last_failed: Arc<Mutex<bool>>,
}

async fn answer(AxumState(ep): AxumState<Endpoint>, body: axum::body::Bytes) -> StatusCode {
    let v: Value = serde_json::from_slice(&body).unwrap();
    let key = v["key"].as_str().unwrap_or("").to_owned();
    let sequence = v["sequence"].as_i64().unwrap_or(0);
    let fail = if ep.stuck.lock().unwrap().as_deref() == Some(key.as_str()) {
        true
    } else {
        // At random, but never twice in a row: five failures in a row would open the
        // webhook's circuit breaker, which defers every key (that is the breaker's job,
        // not what this test is about).
        let mut x = ep.rng.lock().unwrap();
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        let mut last = ep.last_failed.lock().unwrap();
        *last = !*last && *x % 10 < 3;
        *last
    };
    let status = if fail { 500 } else { 200 };
    ep.seen.lock().unwrap().push((key, sequence, status));
    StatusCode::from_u16(status).unwrap()
}

async fn start_endpoint(seed: u64, stuck: &str) -> (String, Endpoint) {
    let ep = Endpoint {
        seen: Arc::default(),
        rng: Arc::new(Mutex::new(seed | 1)),
        stuck: Arc::new(Mutex::new(Some(stuck.to_owned()))),
        last_failed: Arc::default(),
    };
    let app = axum::Router::new()
        .route("/h", post(answer))
        .with_state(ep.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/h", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, ep)
}

/// Each key's acknowledged sequences, in the order they were acknowledged; and a check
/// that no request for `n + 1` came before `n` was acknowledged.
fn check_order(
    seen: &[(String, i64, u16)],
) -> Result<std::collections::BTreeMap<String, Vec<i64>>, String> {
    let mut acked: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
    for (key, sequence, status) in seen {
        let done = acked.entry(key.clone()).or_default();
        let last = done.last().copied().unwrap_or(0);
        if *sequence > last + 1 {
            return Err(format!(
                "{key}#{sequence} was sent before {key}#{} was acknowledged",
                last + 1
            ));
        }
        if *status == 200 && *sequence == last + 1 {
            done.push(*sequence);
        }
    }
    Ok(acked)
}

#[tokio::test]
async fn an_ordered_webhook_keeps_each_key_in_order_and_a_stuck_key_holds_only_itself() {
    // Retries 50 ms apart. Once the other keys are done, the stuck key's failures in a row
    // open the webhook's circuit breaker, so its rest may wait a cooldown after the skip.
    let schedule: Vec<String> = std::iter::once("0s".to_owned())
        .chain(std::iter::repeat_n("50ms".to_owned(), 14))
        .collect();
    let app = spawn_app(&hooks_config(&format!(
        "schedule = {}",
        serde_json::to_string(&schedule).unwrap()
    )))
    .await;
    let (t, key) = app.tenant("acme").await;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let (url, ep) = start_endpoint(seed, "stuck").await;
    let r = app
        .post(
            "/webhooks",
            &key,
            json!({ "url": url, "events": ["order.*"], "ordering": "key" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["ordering"], "key");
    let wh = r.body["id"].as_str().unwrap().to_owned();

    // Four keys of 12 events each, interleaved and published concurrently per key, and
    // three events of a key whose endpoint keeps failing.
    let keys = ["k1", "k2", "k3", "k4"];
    for round in 0..12 {
        let sends = keys.iter().map(|k| {
            publish(
                &app,
                json!({ "type": "order.updated", "tenant": t, "key": k, "data": { "round": round } }),
            )
        });
        futures::future::join_all(sends).await;
        if round < 3 {
            publish(
                &app,
                json!({ "type": "order.updated", "tenant": t, "key": "stuck", "data": { "round": round } }),
            )
            .await;
        }
    }
    let seen = ep.seen.clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = seen.lock().unwrap().clone();
        let acked = check_order(&got).unwrap_or_else(|e| panic!("seed {seed}: {e}\n{got:?}"));
        if keys.iter().all(|k| acked.get(*k).map_or(0, Vec::len) == 12) {
            break;
        }
        if Instant::now() > deadline {
            let waiting: Vec<String> = deliveries(&app, &format!("webhook={wh}&status=pending"))
                .await
                .iter()
                .map(|d| {
                    format!(
                        "{}#{} due {} held by {} after {} attempts",
                        d["key"], d["sequence"], d["next_attempt_at"], d["held_by"], d["attempts"]
                    )
                })
                .collect();
            panic!("seed {seed}: not every key was acknowledged: {acked:?}\nwaiting: {waiting:#?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = ep.seen.lock().unwrap().clone();
    let acked = check_order(&got).unwrap_or_else(|e| panic!("seed {seed}: {e}\n{got:?}"));
    for k in keys {
        assert_eq!(acked[k], (1..=12).collect::<Vec<_>>(), "seed {seed}: {k}");
    }
    // The stuck key never got past its first event; the log says who holds the rest.
    assert!(
        got.iter().all(|(k, s, _)| k != "stuck" || *s == 1),
        "seed {seed}: {got:?}"
    );
    let pending = deliveries(&app, &format!("webhook={wh}&status=pending")).await;
    // Still retrying, or dead (its schedule used up): either way it holds its key.
    let all = deliveries(&app, &format!("webhook={wh}")).await;
    let head = all
        .iter()
        .find(|d| d["key"] == "stuck" && d["sequence"] == 1)
        .unwrap_or_else(|| panic!("{all:?}"));
    assert!(
        head["status"] == "pending" || head["status"] == "failed",
        "{head}"
    );
    assert!(head["held_by"].is_null(), "{head}");
    let second = pending
        .iter()
        .find(|d| d["key"] == "stuck" && d["sequence"] == 2)
        .unwrap();
    assert_eq!(second["held_by"], head["id"], "{second}");
    assert!(second["next_attempt_at"].is_null(), "{second}");
    let one = app
        .get(
            &format!("/deliveries/{}", second["id"].as_str().unwrap()),
            &key,
        )
        .await;
    assert_eq!(one.body["held_by"], head["id"]);

    // The operator gives the head up: the rest of the key goes, in order.
    *ep.stuck.lock().unwrap() = None;
    let head_id = head["id"].as_str().unwrap();
    // Not while its attempt is in flight (the next would go beside it): then again.
    let mut skip = app
        .post(&format!("/deliveries/{head_id}:skip"), &key, json!({}))
        .await;
    while skip.status == StatusCode::CONFLICT && skip.body["code"] == "DELIVERY_IN_FLIGHT" {
        tokio::time::sleep(Duration::from_millis(10)).await;
        skip = app
            .post(&format!("/deliveries/{head_id}:skip"), &key, json!({}))
            .await;
    }
    assert_eq!(skip.status, StatusCode::OK, "{:?}", skip.body);
    assert_eq!(skip.body["status"], "skipped");
    app.eventually_within(
        "the stuck key's rest acknowledged",
        Duration::from_secs(30),
        || {
            let seen = seen.clone();
            async move {
                let got = seen.lock().unwrap().clone();
                got.iter()
                    .filter(|(k, s, c)| k == "stuck" && *s > 1 && *c == 200)
                    .count()
                    == 2
            }
        },
    )
    .await;
    let got = ep.seen.lock().unwrap().clone();
    let after: Vec<i64> = got
        .iter()
        .filter(|(k, s, c)| k == "stuck" && *s > 1 && *c == 200)
        .map(|(_, s, _)| *s)
        .collect();
    assert_eq!(after, vec![2, 3], "seed {seed}");
    let mut later = got.iter().filter(|(k, s, _)| k == "stuck" && *s > 1);
    assert!(later.all(|(_, s, _)| *s == 2 || *s == 3));
    // A skip of a success is refused and changes nothing.
    let done = deliveries(&app, &format!("webhook={wh}&status=succeeded")).await;
    let r = app
        .post(
            &format!("/deliveries/{}:skip", done[0]["id"].as_str().unwrap()),
            &key,
            json!({}),
        )
        .await;
    assert_problem(&r, StatusCode::CONFLICT, "DELIVERY_SUCCEEDED");
}

#[tokio::test]
async fn ordering_is_validated_and_can_be_turned_off() {
    let app = spawn_app(&hooks_config("")).await;
    let (_, key) = app.tenant("acme").await;
    let r = app
        .post(
            "/webhooks",
            &key,
            json!({ "url": "http://127.0.0.1:9/h", "events": ["*"], "ordering": "fifo" }),
        )
        .await;
    assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST");
    assert_eq!(
        list(&app, "/webhooks", &key, "webhooks").await.len(),
        0,
        "nothing made"
    );
    let (wh, _) = register(
        &app,
        &key,
        json!({ "url": "http://127.0.0.1:9/h", "events": ["*"] }),
    )
    .await;
    assert_eq!(
        app.get(&format!("/webhooks/{wh}"), &key).await.body["ordering"],
        "none"
    );
    let r = app
        .call(
            Method::PATCH,
            &format!("/webhooks/{wh}"),
            &key,
            Some(json!({ "ordering": "key" })),
        )
        .await;
    assert_eq!(r.body["ordering"], "key", "{:?}", r.body);
    let r = app
        .call(
            Method::PATCH,
            &format!("/webhooks/{wh}"),
            &key,
            Some(json!({ "ordering": "none" })),
        )
        .await;
    assert_eq!(r.body["ordering"], "none", "{:?}", r.body);
    let r = app
        .post(
            "/deliveries/dlv_01JD0000000000000000000000:skip",
            &key,
            json!({}),
        )
        .await;
    assert_problem(&r, StatusCode::NOT_FOUND, "NOT_FOUND");
}
