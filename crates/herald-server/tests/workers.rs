//! The worker protocol over HTTP (issue #14): a worker keeps its lease on an operation the
//! client deleted, heartbeat leases are bounded like claim's, and worker keys scoped to
//! operation types and tenants never claim, heartbeat or finish another scope's work.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// `transcode` (triggered by `POST /videos`) and `report` (triggered by `POST /reports`).
fn two_types() -> String {
    transcode_config("[[operation_types]]\nname = \"report\"\ntrigger = \"POST /reports\"\n")
}

async fn heartbeat(app: &TestApp, worker: &str, op: &Value, extra: Value) -> Reply {
    let mut body = json!({ "lease_token": op["lease_token"] });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    app.post(
        &format!("/operations/{}:heartbeat", op_id(op)),
        worker,
        body,
    )
    .await
}

#[tokio::test]
async fn a_worker_keeps_its_lease_after_the_client_deletes_the_operation() {
    let app = spawn_app(&transcode_config("")).await;
    let (_, tenant) = app.tenant("acme").await;
    let worker = app.worker_key().await;
    let id = op_id(&app.post("/videos", &tenant, json!({})).await.body);
    let claimed = app.claim(&worker, "transcode").await.expect("claimed");
    let deleted = app
        .call(Method::DELETE, &format!("/operations/{id}"), &tenant, None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get(&format!("/operations/{id}"), &tenant).await.status,
        StatusCode::NOT_FOUND,
        "the client no longer sees it"
    );

    // DELETE does not cancel: the worker's heartbeat (with and without its own lease)
    // still extends the lease, and it still reports progress.
    for extra in [
        json!({ "metadata": { "progress_percent": 50 } }),
        json!({ "lease": "10s" }),
    ] {
        let beat = heartbeat(&app, &worker, &claimed, extra).await;
        assert_eq!(beat.status, StatusCode::OK, "{:?}", beat.body);
        assert_eq!(beat.body["cancel_requested"], false);
        assert!(beat.body["lease_expires_at"]
            .as_str()
            .unwrap()
            .ends_with('Z'));
    }
    // A stale token on the deleted operation is still a conflict, not "not found".
    let stale = heartbeat(
        &app,
        &worker,
        &json!({ "name": claimed["name"], "lease_token": "lt_nope" }),
        json!({}),
    )
    .await;
    assert_problem(&stale, StatusCode::CONFLICT, "LEASE_STALE");

    let done = app
        .post(
            &format!("/operations/{id}:complete"),
            &worker,
            json!({ "lease_token": claimed["lease_token"], "response": { "ok": true } }),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{:?}", done.body);
    // Its final event is raised, with the progress the worker reported.
    let events = app.get("/events?type=transcode.succeeded", &tenant).await;
    assert_eq!(
        events.body["events"][0]["data"]["response"],
        json!({ "ok": true })
    );
    // And once done, a heartbeat is told so.
    let after = heartbeat(&app, &worker, &claimed, json!({})).await;
    assert_problem(&after, StatusCode::CONFLICT, "OPERATION_DONE");
}

#[tokio::test]
async fn heartbeat_leases_are_bounded_like_claims() {
    let app = spawn_app(&transcode_config("")).await;
    let (_, tenant) = app.tenant("acme").await;
    let worker = app.worker_key().await;
    app.post("/videos", &tenant, json!({})).await;
    let claimed = app.claim(&worker, "transcode").await.expect("claimed");
    let before = app
        .store
        .get_operation(herald_core::ids::OperationId::parse(&op_id(&claimed)).unwrap())
        .await
        .unwrap();
    for lease in ["0s", "500ms", "61m", "2h", "1000000000h", "soon"] {
        let r = heartbeat(&app, &worker, &claimed, json!({ "lease": lease })).await;
        assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST");
    }
    let after = app.store.get_operation(before.id).await.unwrap();
    assert_eq!(
        after.state, before.state,
        "a refused heartbeat changes nothing"
    );
    for lease in ["1s", "1h"] {
        let r = heartbeat(&app, &worker, &claimed, json!({ "lease": lease })).await;
        assert_eq!(r.status, StatusCode::OK, "{lease}: {:?}", r.body);
    }
}
