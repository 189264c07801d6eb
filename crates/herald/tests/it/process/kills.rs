//! SIGKILL, and a start again on the same database: nothing acknowledged is lost, operations nor deliveries.

use super::*;

#[tokio::test]
async fn sigkill_and_restart_loses_no_acknowledged_operation_or_change() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let herald = start_herald(dir.path());
    let base = herald.base.clone();
    let (tenant, worker) = tenant_and_worker(&http, &base).await;

    // A known set of state changes, each acknowledged before we record what we expect.
    let mut expected: Vec<(String, Value)> = vec![];
    let mut created = vec![];
    for i in 0..30 {
        let (s, op) = post(&http, &base, "/videos", &tenant, json!({ "i": i })).await;
        assert_eq!(s, StatusCode::ACCEPTED);
        created.push(op_id(&op));
    }
    // Ten claimed; of those 3 completed, 3 failed, 4 left running with progress 42.
    for n in 0..10 {
        let (_, claimed) = post(
            &http,
            &base,
            "/operations:claim",
            &worker,
            json!({ "types": ["transcode"], "lease": "1h" }),
        )
        .await;
        let op = &claimed["operations"][0];
        let (id, token) = (op_id(op), op["lease_token"].as_str().unwrap().to_owned());
        let (s, body) =
            match n {
                0..=2 => {
                    post(
                        &http,
                        &base,
                        &format!("/operations/{id}:complete"),
                        &worker,
                        json!({ "lease_token": token, "response": { "n": n } }),
                    )
                    .await
                }
                3..=5 => post(
                    &http,
                    &base,
                    &format!("/operations/{id}:fail"),
                    &worker,
                    json!({ "lease_token": token, "error": { "code": "BAD", "message": "no" } }),
                )
                .await,
                _ => {
                    let (s, _) = post(
                        &http,
                        &base,
                        &format!("/operations/{id}:heartbeat"),
                        &worker,
                        json!({ "lease_token": token, "metadata": { "progress_percent": 42 } }),
                    )
                    .await;
                    (
                        s,
                        get(&http, &base, &format!("/operations/{id}"), &tenant)
                            .await
                            .1,
                    )
                }
            };
        assert_eq!(s, StatusCode::OK, "{body:?}");
        expected.push((id, body));
    }
    // Five queued ones cancelled.
    for id in created.iter().rev().take(5) {
        let (s, body) = post(
            &http,
            &base,
            &format!("/operations/{id}:cancel"),
            &tenant,
            json!({}),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        expected.push((id.clone(), body));
    }

    // Under load: creators keep going while the process is killed; whatever was acknowledged must survive.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut load = vec![];
    for c in 0..4 {
        let (http, base, tenant, acked) =
            (http.clone(), base.clone(), tenant.clone(), acked.clone());
        load.push(tokio::spawn(async move {
            for i in 0.. {
                let r = http
                    .post(format!("{base}/videos"))
                    .bearer_auth(&tenant)
                    .json(&json!({ "c": c, "i": i }))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == StatusCode::ACCEPTED => {
                        let v: Value = match r.json().await {
                            Ok(v) => v,
                            Err(_) => break,
                        };
                        acked.lock().unwrap().push(op_id(&v));
                    }
                    _ => break,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    herald.kill9();
    for l in load {
        l.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty(), "the load ran before the kill");

    let herald = start_herald(dir.path());
    let base = herald.base.clone();
    for (id, body) in &expected {
        let (s, now) = get(&http, &base, &format!("/operations/{id}"), &tenant).await;
        assert_eq!(s, StatusCode::OK, "{id} lost");
        assert_eq!(&now, body, "{id} changed across the crash");
    }
    for id in &acked {
        let (s, _) = get(&http, &base, &format!("/operations/{id}"), &tenant).await;
        assert_eq!(s, StatusCode::OK, "acknowledged operation {id} was lost");
    }
    println!(
        "acknowledged before SIGKILL: {} changes, {} creations under load; lost: 0",
        expected.len(),
        acked.len()
    );
    herald.kill9();
}

/// A receiver that counts each event id it is sent, answering 200 after a short pause
/// so that deliveries are in flight when Herald is killed.
async fn counting_receiver() -> (
    String,
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>>,
) {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    let seen: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let seen = s.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let id = headers
                .get("x-event-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            *seen.lock().unwrap().entry(id).or_default() += 1;
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/payments", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

#[tokio::test]
async fn sigkill_mid_delivery_still_delivers_every_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let (url, seen) = counting_receiver().await;
    let herald = start_herald(dir.path());
    let base = herald.base.clone();
    let (_, t) = post(&http, &base, "/tenants", ADMIN, json!({ "name": "acme" })).await;
    let tenant = t["id"].as_str().unwrap().to_owned();
    let (s, _) = post(
        &http,
        &base,
        "/webhooks",
        ADMIN,
        json!({ "url": url, "events": ["payment.*"], "tenant": tenant }),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);

    // Producers publish until the process dies under them; only 202s count as acknowledged.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut producers = vec![];
    for p in 0..4 {
        let (http, base, tenant, acked) =
            (http.clone(), base.clone(), tenant.clone(), acked.clone());
        producers.push(tokio::spawn(async move {
            for i in 0..2000 {
                let body = json!({ "type": "payment.succeeded", "tenant": tenant, "key": format!("pay_{p}"), "data": { "i": i } });
                match http.post(format!("{base}/events")).bearer_auth(ADMIN).json(&body).send().await {
                    Ok(r) if r.status() == StatusCode::ACCEPTED => match r.json::<Value>().await {
                        Ok(v) => acked.lock().unwrap().push(v["id"].as_str().unwrap().to_owned()),
                        Err(_) => break,
                    },
                    _ => break,
                }
            }
        }));
    }
    // Kill once some events are delivered and others are still queued or in flight.
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.lock().unwrap().len() < 50 {
        assert!(
            Instant::now() < deadline,
            "no deliveries arrived before the kill"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    herald.kill9();
    for p in producers {
        p.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let delivered_before = seen.lock().unwrap().len();
    assert!(
        delivered_before < acked.len(),
        "the kill came while deliveries were still owed"
    );

    let herald = start_herald(dir.path());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let missing = {
            let seen = seen.lock().unwrap();
            acked.iter().filter(|id| !seen.contains_key(*id)).count()
        };
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} acknowledged events were never delivered after the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let duplicates: u32 = seen.lock().unwrap().values().map(|n| n - 1).sum();
    println!(
        "acknowledged {}, delivered before the kill {}, delivered in all {}, duplicates {}, lost 0",
        acked.len(),
        delivered_before,
        seen.lock().unwrap().len(),
        duplicates
    );
    herald.kill9();
}
