//! An operation's life: the transcode flow, failure, retryable failure, cancel, an expired lease, deadline and retention.

use super::*;

#[tokio::test]
async fn transcode_flow_from_trigger_to_response() {
    let app = spawn_app(&transcode_config("")).await;
    let (_, tenant) = app.tenant("acme").await;
    let worker = app.worker_key().await;

    let created = app
        .post(
            "/videos",
            &tenant,
            json!({ "source_url": "https://x/v.mp4", "title": "Team meeting" }),
        )
        .await;
    assert_eq!(created.status, StatusCode::ACCEPTED);
    let id = op_id(&created.body);
    assert!(id.starts_with("op_"));
    assert_eq!(created.headers["location"], format!("/operations/{id}"));
    assert_eq!(created.headers["retry-after"], "1");
    assert_eq!(
        created.body,
        json!({ "name": format!("operations/{id}"), "metadata": { "type": "transcode", "progress_percent": 0 }, "done": false })
    );

    let claimed = app
        .claim(&worker, "transcode")
        .await
        .expect("one operation to claim");
    assert_eq!(claimed["name"], created.body["name"]);
    assert_eq!(
        claimed["input"],
        json!({ "source_url": "https://x/v.mp4", "title": "Team meeting" })
    );
    assert_eq!(claimed["attempt"], 1);
    let token = claimed["lease_token"].as_str().unwrap().to_owned();

    let beat = app
        .post(
            &format!("/operations/{id}:heartbeat"),
            &worker,
            json!({ "lease_token": token, "metadata": { "video_id": "vid_99", "progress_percent": 42 } }),
        )
        .await;
    assert_eq!(beat.status, StatusCode::OK, "{:?}", beat.body);
    assert_eq!(beat.body["cancel_requested"], false);
    assert!(beat.body["lease_expires_at"]
        .as_str()
        .unwrap()
        .ends_with('Z'));

    let polled = app.get(&format!("/operations/{id}"), &tenant).await;
    assert_eq!(polled.status, StatusCode::OK);
    assert_eq!(
        polled.body,
        json!({ "name": format!("operations/{id}"),
                "metadata": { "type": "transcode", "video_id": "vid_99", "progress_percent": 42 }, "done": false })
    );
    assert!(polled.headers.contains_key("retry-after"));

    let response = json!({ "video_id": "vid_99", "duration_seconds": 832, "variants": [ { "resolution": "1080p", "url": "..." } ] });
    let done = app
        .post(
            &format!("/operations/{id}:complete"),
            &worker,
            json!({ "lease_token": token, "response": response }),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{:?}", done.body);

    let finished = app.get(&format!("/operations/{id}"), &tenant).await;
    assert_eq!(
        finished.body,
        json!({ "name": format!("operations/{id}"),
                "metadata": { "type": "transcode", "video_id": "vid_99", "progress_percent": 100 },
                "done": true, "response": response })
    );
    assert!(
        !finished.headers.contains_key("retry-after"),
        "no Retry-After once done"
    );

    // The end is an event, `transcode.succeeded`, whose data is the final operation.
    let events = app.get("/events?type=transcode.succeeded", &tenant).await;
    assert_eq!(events.body["events"][0]["data"], finished.body);

    // A second complete with the same (now spent) token changes nothing.
    let again = app
        .post(
            &format!("/operations/{id}:complete"),
            &worker,
            json!({ "lease_token": token, "response": {} }),
        )
        .await;
    assert_problem(&again, StatusCode::CONFLICT, "OPERATION_DONE");
}

#[tokio::test]
async fn failure_ends_with_error_and_no_response() {
    let app = spawn_app(&transcode_config("")).await;
    let (_, tenant) = app.tenant("acme").await;
    let worker = app.worker_key().await;
    let id = op_id(
        &app.post("/videos", &tenant, json!({ "source_url": "nope" }))
            .await
            .body,
    );
    let token = app.claim(&worker, "transcode").await.unwrap()["lease_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let failed = app
        .post(
            &format!("/operations/{id}:fail"),
            &worker,
            json!({ "lease_token": token, "error": { "code": "SOURCE_UNREACHABLE", "message": "404 from source" }, "retryable": false }),
        )
        .await;
    assert_eq!(failed.status, StatusCode::OK, "{:?}", failed.body);
    let polled = app.get(&format!("/operations/{id}"), &tenant).await;
    assert_eq!(polled.body["done"], true);
    assert_eq!(
        polled.body["error"],
        json!({ "code": "SOURCE_UNREACHABLE", "message": "404 from source" })
    );
    assert!(polled.body.get("response").is_none());
    let events = app.get("/events?type=transcode.failed", &tenant).await;
    assert_eq!(events.body["events"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn retryable_failure_requeues_until_attempts_run_out() {
    let app = spawn_app(&transcode_config("")).await; // max_attempts = 3
    let (_, tenant) = app.tenant("acme").await;
    let worker = app.worker_key().await;
    let id = op_id(&app.post("/videos", &tenant, json!({})).await.body);
    for attempt in 1..=3 {
        let claimed = app.claim(&worker, "transcode").await.expect("requeued");
        assert_eq!(claimed["attempt"], attempt);
        let token = claimed["lease_token"].as_str().unwrap();
        let r = app
            .post(
                &format!("/operations/{id}:fail"),
                &worker,
                json!({ "lease_token": token, "error": { "code": "FLAKY", "message": "try again" }, "retryable": true }),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body["done"], attempt == 3, "attempt {attempt}");
    }
    assert!(app.claim(&worker, "transcode").await.is_none());
    assert_eq!(
        app.get(&format!("/operations/{id}"), &tenant).await.body["error"]["code"],
        "FLAKY"
    );
}

#[tokio::test]
async fn cancel_before_start_is_immediate_and_during_work_reaches_the_heartbeat() {
    let app = spawn_app(&transcode_config("")).await;
    let (_, tenant) = app.tenant("acme").await;
    let worker = app.worker_key().await;

    let queued = op_id(&app.post("/videos", &tenant, json!({ "n": 1 })).await.body);
    let c = app
        .post(&format!("/operations/{queued}:cancel"), &tenant, json!({}))
        .await;
    assert_eq!(c.status, StatusCode::OK);
    assert_eq!(c.body["done"], true);
    assert_eq!(c.body["error"]["code"], "CANCELLED");
    assert!(
        app.claim(&worker, "transcode").await.is_none(),
        "a cancelled operation is not claimable"
    );

    let running = op_id(&app.post("/videos", &tenant, json!({ "n": 2 })).await.body);
    let token = app.claim(&worker, "transcode").await.unwrap()["lease_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let c = app
        .post(&format!("/operations/{running}:cancel"), &tenant, json!({}))
        .await;
    assert_eq!(c.status, StatusCode::OK);
    assert_eq!(
        c.body["done"], false,
        "a running operation is only asked to stop"
    );
    let beat = app
        .post(
            &format!("/operations/{running}:heartbeat"),
            &worker,
            json!({ "lease_token": token }),
        )
        .await;
    assert_eq!(beat.body["cancel_requested"], true);
    let f = app
        .post(
            &format!("/operations/{running}:fail"),
            &worker,
            json!({ "lease_token": token, "error": { "code": "CANCELLED", "message": "stopped on request" } }),
        )
        .await;
    assert_eq!(f.body["error"]["code"], "CANCELLED");
    let events = app.get("/events?type=transcode.cancelled", &tenant).await;
    assert_eq!(events.body["events"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn expired_lease_requeues_then_ends_with_worker_lost_and_stale_tokens_get_409() {
    let app = spawn_app_with_manual_clock(
        "[[operation_types]]\nname = \"transcode\"\ntrigger = \"POST /videos\"\nlease = \"10s\"\nmax_attempts = 2\n",
    )
    .await;
    let (_, tenant) = app.tenant("acme").await;
    let worker = app.worker_key().await;
    let id = op_id(&app.post("/videos", &tenant, json!({})).await.body);

    let first = app.claim(&worker, "transcode").await.unwrap();
    let stale = first["lease_token"].as_str().unwrap().to_owned();
    app.advance(Duration::from_secs(11));
    let second = claim_within(&app, &worker, Duration::from_secs(10))
        .await
        .expect("the operation is requeued");
    assert_eq!(second["attempt"], 2);
    assert_ne!(second["lease_token"], first["lease_token"]);

    // The first worker's token is stale: 409, and the operation is untouched.
    let before = app.get(&format!("/operations/{id}"), &tenant).await.body;
    let r = app
        .post(
            &format!("/operations/{id}:heartbeat"),
            &worker,
            json!({ "lease_token": stale, "metadata": { "progress_percent": 99 } }),
        )
        .await;
    assert_problem(&r, StatusCode::CONFLICT, "LEASE_STALE");
    let r = app
        .post(
            &format!("/operations/{id}:complete"),
            &worker,
            json!({ "lease_token": stale, "response": {} }),
        )
        .await;
    assert_problem(&r, StatusCode::CONFLICT, "LEASE_STALE");
    assert_eq!(
        app.get(&format!("/operations/{id}"), &tenant).await.body,
        before
    );

    // The second lease expires too: no attempts left.
    app.advance(Duration::from_secs(11));
    app.eventually("the operation ends with WORKER_LOST", || async {
        app.get(&format!("/operations/{id}"), &tenant).await.body["error"]["code"] == "WORKER_LOST"
    })
    .await;
}

#[tokio::test]
async fn deadline_and_retention_are_enforced() {
    let app = spawn_app_with_manual_clock(
        "[[operation_types]]\nname = \"report\"\ntrigger = \"POST /reports\"\ndeadline = \"1h\"\nretention = \"1d\"\n",
    )
    .await;
    let (_, tenant) = app.tenant("acme").await;
    let id = op_id(&app.post("/reports", &tenant, json!({})).await.body);
    app.advance(Duration::from_secs(3601));
    app.eventually("the deadline passes", || async {
        app.get(&format!("/operations/{id}"), &tenant).await.body["error"]["code"]
            == "DEADLINE_EXCEEDED"
    })
    .await;
    app.advance(Duration::from_secs(86_401));
    app.eventually("the operation is purged after its retention", || async {
        app.get(&format!("/operations/{id}"), &tenant).await.status == StatusCode::NOT_FOUND
    })
    .await;
}
