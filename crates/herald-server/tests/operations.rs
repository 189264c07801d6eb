//! Long-running operations end to end over HTTP: the reference text's transcode flow,
//! failure, cancel, leases, idempotency, tenant isolation, `:wait` and bad input.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

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

/// Claims one operation, retrying for at most `within` of real time (the reaper runs in the background).
async fn claim_within(app: &TestApp, worker: &str, within: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(op) = app.claim(worker, "transcode").await {
            return Some(op);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn futures_stream(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn tenants_never_see_each_others_operations() {
    let app = spawn_app(&transcode_config("")).await;
    let (_, a) = app.tenant("a").await;
    let (_, b) = app.tenant("b").await;
    let id = op_id(&app.post("/videos", &a, json!({})).await.body);
    for (method, path) in [
        (Method::GET, format!("/operations/{id}")),
        (Method::POST, format!("/operations/{id}:cancel")),
        (Method::POST, format!("/operations/{id}:wait")),
        (Method::DELETE, format!("/operations/{id}")),
    ] {
        let r = app.call(method.clone(), &path, &b, Some(json!({}))).await;
        assert_problem(&r, StatusCode::NOT_FOUND, "NOT_FOUND");
    }
    assert_eq!(
        app.get("/operations", &b).await.body["operations"],
        json!([])
    );
    assert_eq!(
        app.get("/operations", &a).await.body["operations"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        app.get(&format!("/operations/{id}"), &a).await.body["done"],
        false,
        "still there, not cancelled"
    );
    // A worker key reads nothing; an admin reads everything.
    let worker = app.worker_key().await;
    assert_problem(
        &app.get(&format!("/operations/{id}"), &worker).await,
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
    );
    assert_eq!(
        app.get(&format!("/operations/{id}"), ADMIN).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn list_filters_and_pages_newest_first() {
    let app = spawn_app(&transcode_config(
        "[[operation_types]]\nname = \"report\"\ntrigger = \"POST /reports\"\n",
    ))
    .await;
    let (_, t) = app.tenant("acme").await;
    let worker = app.worker_key().await;
    let mut ids = vec![];
    for i in 0..5 {
        ids.push(op_id(
            &app.post("/videos", &t, json!({ "i": i })).await.body,
        ));
    }
    app.post("/reports", &t, json!({})).await;
    let c = app.claim(&worker, "transcode").await.unwrap();
    app.post(
        &format!("/operations/{}:complete", op_id(&c)),
        &worker,
        json!({ "lease_token": c["lease_token"], "response": {} }),
    )
    .await;

    let mut seen = vec![];
    let mut token = String::new();
    loop {
        let page = app
            .get(
                &format!("/operations?type=transcode&page_size=2&page_token={token}"),
                &t,
            )
            .await;
        assert_eq!(page.status, StatusCode::OK);
        let ops = page.body["operations"].as_array().unwrap().clone();
        assert!(ops.len() <= 2);
        seen.extend(ops.iter().map(op_id));
        token = page.body["next_page_token"].as_str().unwrap().to_owned();
        if token.is_empty() {
            break;
        }
    }
    ids.reverse();
    assert_eq!(seen, ids, "every transcode, newest first, once");
    let done = app.get("/operations?done=true", &t).await;
    assert_eq!(done.body["operations"].as_array().unwrap().len(), 1);
    let open = app.get("/operations?done=false", &t).await;
    assert_eq!(open.body["operations"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn delete_hides_the_operation_without_cancelling_it() {
    let app = spawn_app(&transcode_config("")).await;
    let (_, t) = app.tenant("acme").await;
    let worker = app.worker_key().await;
    let id = op_id(&app.post("/videos", &t, json!({})).await.body);
    assert_eq!(
        app.call(Method::DELETE, &format!("/operations/{id}"), &t, None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get(&format!("/operations/{id}"), &t).await.status,
        StatusCode::NOT_FOUND
    );
    // The work still happens (AIP-151: delete does not cancel).
    assert!(app.claim(&worker, "transcode").await.is_some());
}

#[tokio::test]
async fn bad_input_gets_problem_details_and_changes_nothing() {
    let app = spawn_app(&format!("max_body_bytes = 2048\n{}", transcode_config(""))).await;
    let (_, t) = app.tenant("acme").await;
    let worker = app.worker_key().await;

    assert_problem(
        &app.post_raw("/videos", &t, "{not json", None).await,
        StatusCode::BAD_REQUEST,
        "INVALID_JSON",
    );
    assert_problem(
        &app.post_raw("/videos", &t, "[1,2]", None).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_REQUEST",
    );
    assert_problem(
        &app.post("/operations", ADMIN, json!({ "type": 42 })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_REQUEST",
    );
    assert_problem(
        &app.post("/operations", ADMIN, json!({ "type": "nope" }))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_REQUEST",
    );
    let big = json!({ "blob": "x".repeat(4096) });
    assert_problem(
        &app.post("/videos", &t, big).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "BODY_TOO_LARGE",
    );
    assert_problem(
        &app.get("/operations/op_01HX0000000000000000000000", &t)
            .await,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
    );
    assert_problem(
        &app.get("/operations/garbage", &t).await,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
    );
    assert_problem(
        &app.get("/operations", "wrong").await,
        StatusCode::UNAUTHORIZED,
        "UNAUTHENTICATED",
    );
    let no_auth = into_reply(
        app.http
            .get(format!("{}/operations", app.base))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_problem(&no_auth, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    assert_problem(
        &app.post("/videos", &worker, json!({})).await,
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
    );
    assert_problem(
        &app.post("/tenants", &t, json!({ "name": "x" })).await,
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
    );
    assert_problem(
        &app.post(
            "/operations:claim",
            &worker,
            json!({ "types": ["transcode"], "lease": "soon" }),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_REQUEST",
    );
    assert_problem(
        &app.post(
            "/operations/op_01HX0000000000000000000000:heartbeat",
            &worker,
            json!({ "lease_token": "x" }),
        )
        .await,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
    );
    assert_eq!(
        app.get("/operations", &t).await.body["operations"],
        json!([]),
        "nothing was created"
    );
}

#[tokio::test]
async fn revoked_keys_stop_working() {
    let app = spawn_app(&transcode_config("")).await;
    let (tid, _) = app.tenant("acme").await;
    let k = app
        .post(
            &format!("/tenants/{tid}/keys"),
            ADMIN,
            json!({ "role": "tenant" }),
        )
        .await;
    let (key_id, key) = (
        k.body["id"].as_str().unwrap().to_owned(),
        k.body["key"].as_str().unwrap().to_owned(),
    );
    assert!(key_id.starts_with("key_"));
    assert_eq!(app.get("/operations", &key).await.status, StatusCode::OK);
    assert_eq!(
        app.call(Method::DELETE, &format!("/keys/{key_id}"), ADMIN, None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_problem(
        &app.get("/operations", &key).await,
        StatusCode::UNAUTHORIZED,
        "UNAUTHENTICATED",
    );
    // Keys are stored hashed: the plaintext is nowhere in the database file.
    if app.on_postgres() {
        return;
    }
    let db = std::fs::read(app.dir.path().join("herald.db")).unwrap();
    let wal = std::fs::read(app.dir.path().join("herald.db-wal")).unwrap_or_default();
    let secret = key.rsplit('_').next().unwrap().as_bytes();
    assert!(
        !db.windows(secret.len()).any(|w| w == secret)
            && !wal.windows(secret.len()).any(|w| w == secret)
    );
}
