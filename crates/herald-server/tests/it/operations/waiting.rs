//! Waiting and duplicates: `:wait`, the claim long poll, the Idempotency-Key (and a concurrent duplicate).

use super::*;

#[tokio::test]
async fn wait_returns_as_soon_as_the_operation_is_done() {
    let app = spawn_app(&transcode_config("")).await;
    let (_, tenant) = app.tenant("acme").await;
    let worker = app.worker_key().await;
    let id = op_id(&app.post("/videos", &tenant, json!({})).await.body);
    let token = app.claim(&worker, "transcode").await.unwrap()["lease_token"]
        .as_str()
        .unwrap()
        .to_owned();

    let waiter = {
        let (http, url, tenant) = (
            app.http.clone(),
            format!("{}/operations/{id}:wait", app.base),
            tenant.clone(),
        );
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let r = http
                .post(url)
                .bearer_auth(tenant)
                .json(&json!({ "timeout": "50s" }))
                .send()
                .await
                .unwrap();
            (r.json::<Value>().await.unwrap(), started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        ":wait must hold while the operation runs"
    );
    app.post(
        &format!("/operations/{id}:complete"),
        &worker,
        json!({ "lease_token": token, "response": { "ok": true } }),
    )
    .await;
    let (body, elapsed) = waiter.await.unwrap();
    assert_eq!(body["done"], true);
    assert_eq!(body["response"], json!({ "ok": true }));
    assert!(
        elapsed < Duration::from_secs(45),
        "woken by the completion, not by the timeout"
    );

    // A wait that times out returns the latest state.
    let id2 = op_id(&app.post("/videos", &tenant, json!({ "n": 2 })).await.body);
    let r = app
        .post(
            &format!("/operations/{id2}:wait"),
            &tenant,
            json!({ "timeout": "200ms" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["done"], false);
}

#[tokio::test]
async fn claim_long_poll_wakes_when_an_operation_arrives() {
    let app = spawn_app(&transcode_config("")).await;
    let (_, tenant) = app.tenant("acme").await;
    let worker = app.worker_key().await;
    let claimer = {
        let (http, url, worker) = (
            app.http.clone(),
            format!("{}/operations:claim", app.base),
            worker.clone(),
        );
        tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(worker)
                .json(&json!({ "types": ["transcode"], "wait": "50s" }))
                .send()
                .await
                .unwrap();
            r.json::<Value>().await.unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!claimer.is_finished());
    let id = op_id(&app.post("/videos", &tenant, json!({})).await.body);
    let got = tokio::time::timeout(Duration::from_secs(10), claimer)
        .await
        .expect("claim woke")
        .unwrap();
    assert_eq!(op_id(&got["operations"][0]), id);
}

#[tokio::test]
async fn idempotency_key_returns_the_same_operation_and_refuses_another_body() {
    let app = spawn_app(&transcode_config("")).await;
    let (_, tenant) = app.tenant("acme").await;
    let a = app
        .post_raw("/videos", &tenant, r#"{"title":"a"}"#, Some("k-1"))
        .await;
    let b = app
        .post_raw("/videos", &tenant, r#"{"title":"a"}"#, Some("k-1"))
        .await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
    assert_eq!(b.status, StatusCode::ACCEPTED);
    assert_eq!(a.body["name"], b.body["name"]);
    let other = app
        .post_raw("/videos", &tenant, r#"{"title":"b"}"#, Some("k-1"))
        .await;
    assert_problem(
        &other,
        StatusCode::UNPROCESSABLE_ENTITY,
        "IDEMPOTENCY_KEY_REUSED",
    );
    let list = app.get("/operations", &tenant).await;
    assert_eq!(
        list.body["operations"].as_array().unwrap().len(),
        1,
        "nothing else was created"
    );

    // Admin POST /operations honours it too.
    let (tid, _) = app.tenant("other").await;
    let body = json!({ "type": "transcode", "tenant": tid, "metadata": { "video_id": "vid_1" }, "input": {} });
    let send = || {
        app.http
            .post(format!("{}/operations", app.base))
            .bearer_auth(ADMIN)
            .header("Idempotency-Key", "a-1")
            .json(&body)
            .send()
    };
    let x = into_reply(send().await.unwrap()).await;
    let y = into_reply(send().await.unwrap()).await;
    assert_eq!(x.status, StatusCode::ACCEPTED);
    assert_eq!(x.body["name"], y.body["name"]);
    assert_eq!(x.body["metadata"]["video_id"], "vid_1");
}

#[tokio::test]
async fn a_concurrent_duplicate_gets_409_while_the_first_is_in_progress() {
    let app = spawn_app(&transcode_config("")).await;
    let (_, tenant) = app.tenant("acme").await;
    // The first request's body arrives slowly, so it is still in progress when the duplicate comes.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let body = reqwest::Body::wrap_stream(futures_stream(rx));
    let first = app
        .http
        .post(format!("{}/videos", app.base))
        .bearer_auth(&tenant)
        .header("Idempotency-Key", "slow-1")
        .header("content-type", "application/json")
        .body(body)
        .send();
    let first = tokio::spawn(first);
    tx.send(Ok(b"{\"title\":".to_vec())).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.state.in_flight.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first request never reached the handler"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let dup = app
        .post_raw("/videos", &tenant, r#"{"title":"x"}"#, Some("slow-1"))
        .await;
    assert_problem(&dup, StatusCode::CONFLICT, "IDEMPOTENCY_KEY_IN_USE");
    tx.send(Ok(b"\"x\"}".to_vec())).await.unwrap();
    drop(tx);
    let first = into_reply(first.await.unwrap().unwrap()).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let again = app
        .post_raw("/videos", &tenant, r#"{"title":"x"}"#, Some("slow-1"))
        .await;
    assert_eq!(again.body["name"], first.body["name"]);
    assert_eq!(
        app.get("/operations", &tenant).await.body["operations"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}
