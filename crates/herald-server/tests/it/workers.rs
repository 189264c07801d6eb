//! The worker protocol over HTTP (issue #14): a worker keeps its lease on an operation the
//! client deleted, heartbeat leases are bounded like claim's, and worker keys scoped to
//! operation types and tenants never claim, heartbeat or finish another scope's work.

use herald_testkit::*;
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

/// `POST /keys` for a worker key with `scope` (`types` and/or `tenants`); the key.
async fn scoped_worker(app: &TestApp, scope: Value) -> String {
    let mut body = json!({ "role": "worker" });
    body.as_object_mut()
        .unwrap()
        .extend(scope.as_object().unwrap().clone());
    let k = app.post("/keys", ADMIN, body).await;
    assert_eq!(k.status, StatusCode::CREATED, "{:?}", k.body);
    assert_eq!(k.body["role"], "worker");
    for side in ["types", "tenants"] {
        assert_eq!(k.body[side], scope[side], "the answer shows the scope");
    }
    k.body["key"].as_str().unwrap().to_owned()
}

/// Claims up to 10 operations of any type the key may claim, without waiting; their ids.
async fn claim_all(app: &TestApp, worker: &str) -> Vec<String> {
    let r = app
        .post("/operations:claim", worker, json!({ "max": 10 }))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let mut ids: Vec<String> = r.body["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(op_id)
        .collect();
    ids.sort();
    ids
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

#[tokio::test]
async fn scoped_worker_keys_claim_only_their_scope() {
    let app = spawn_app(&two_types()).await;
    let (a, key_a) = app.tenant("a").await;
    let (b, key_b) = app.tenant("b").await;
    let make = |path: &'static str, key: String| {
        let app = &app;
        async move { op_id(&app.post(path, &key, json!({})).await.body) }
    };
    let transcode_a = make("/videos", key_a.clone()).await;
    let transcode_b = make("/videos", key_b.clone()).await;
    let report_a = make("/reports", key_a.clone()).await;
    let report_b = make("/reports", key_b.clone()).await;
    // An operation of no tenant (made by the admin).
    let transcode_none = op_id(
        &app.post("/operations", ADMIN, json!({ "type": "transcode" }))
            .await
            .body,
    );

    let only_a = scoped_worker(&app, json!({ "tenants": [a] })).await;
    let only_transcode = scoped_worker(&app, json!({ "types": ["transcode"] })).await;
    let report_of_b = scoped_worker(&app, json!({ "types": ["report"], "tenants": [b] })).await;
    let unscoped = app.worker_key().await;

    // A type outside the key's scope, named: refused, with the scope in the message.
    let refused = app
        .post(
            "/operations:claim",
            &only_transcode,
            json!({ "types": ["transcode", "report"] }),
        )
        .await;
    assert_problem(&refused, StatusCode::FORBIDDEN, "FORBIDDEN");
    let detail = refused.body["detail"].as_str().unwrap();
    assert!(
        detail.contains("\"transcode\"") && detail.contains("\"report\""),
        "{detail}"
    );
    // An unknown type is still bad input, scope or not.
    assert_problem(
        &app.post(
            "/operations:claim",
            &only_transcode,
            json!({ "types": ["nope"] }),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_REQUEST",
    );

    // Each key gets only its scope's operations, and nothing is leased by the refusals.
    assert_eq!(
        claim_all(&app, &only_a).await,
        sorted(vec![transcode_a.clone(), report_a.clone()]),
        "tenant a's operations of every type"
    );
    assert_eq!(
        claim_all(&app, &report_of_b).await,
        vec![report_b.clone()],
        "b's reports only"
    );
    // Naming its own type works like naming none.
    let r = app
        .post(
            "/operations:claim",
            &only_transcode,
            json!({ "types": ["transcode"], "max": 10 }),
        )
        .await;
    let got = sorted(
        r.body["operations"]
            .as_array()
            .unwrap()
            .iter()
            .map(op_id)
            .collect(),
    );
    assert_eq!(
        got,
        sorted(vec![transcode_b.clone(), transcode_none.clone()]),
        "every transcode left, of any tenant or none"
    );
    assert_eq!(claim_all(&app, &unscoped).await, Vec::<String>::new());
}

#[tokio::test]
async fn a_tenant_scoped_worker_never_leases_another_tenants_work() {
    let app = spawn_app(&transcode_config("")).await;
    let (a, _) = app.tenant("a").await;
    let (_, key_b) = app.tenant("b").await;
    let only_a = scoped_worker(&app, json!({ "tenants": [a] })).await;
    for _ in 0..3 {
        app.post("/videos", &key_b, json!({})).await;
    }
    app.post("/operations", ADMIN, json!({ "type": "transcode" }))
        .await;
    // Nothing of a's is queued: the claim finds nothing (a short long poll included),
    // and every other operation is still queued for the workers that may take it.
    let r = app
        .post(
            "/operations:claim",
            &only_a,
            json!({ "max": 10, "wait": "200ms" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["operations"], json!([]));
    let unscoped = app.worker_key().await;
    assert_eq!(claim_all(&app, &unscoped).await.len(), 4);
}

#[tokio::test]
async fn scoped_workers_get_404_for_other_scopes_operations() {
    let app = spawn_app(&two_types()).await;
    let (a, key_a) = app.tenant("a").await;
    let (b, key_b) = app.tenant("b").await;
    let unscoped = app.worker_key().await;
    let only_a = scoped_worker(&app, json!({ "tenants": [a] })).await;
    let only_report = scoped_worker(&app, json!({ "types": ["report"] })).await;
    let transcode_of_b =
        scoped_worker(&app, json!({ "types": ["transcode"], "tenants": [b] })).await;

    // b's transcode, claimed by the unscoped worker, and deleted by its client.
    let id = op_id(&app.post("/videos", &key_b, json!({})).await.body);
    let held = app.claim(&unscoped, "transcode").await.expect("claimed");
    assert_eq!(op_id(&held), id);
    app.call(Method::DELETE, &format!("/operations/{id}"), &key_b, None)
        .await;
    let token = held["lease_token"].clone();
    let stored = app
        .store
        .get_operation_for_worker(herald_core::ids::OperationId::parse(&id).unwrap())
        .await
        .unwrap();

    // Out-of-scope keys, even holding the right lease token, are told it does not exist.
    for key in [&only_a, &only_report] {
        for (method, body) in [
            (
                "heartbeat",
                json!({ "lease_token": token, "metadata": { "progress_percent": 99 } }),
            ),
            (
                "complete",
                json!({ "lease_token": token, "response": { "stolen": true } }),
            ),
            (
                "fail",
                json!({ "lease_token": token, "error": { "code": "X", "message": "no" } }),
            ),
        ] {
            let r = app
                .post(&format!("/operations/{id}:{method}"), key, body)
                .await;
            assert_problem(&r, StatusCode::NOT_FOUND, "NOT_FOUND");
        }
    }
    let after = app.store.get_operation_for_worker(stored.id).await.unwrap();
    assert_eq!(after, stored, "nothing changed");

    // A key whose scope covers it heartbeats and finishes it (deleted or not).
    let beat = app
        .post(
            &format!("/operations/{id}:heartbeat"),
            &transcode_of_b,
            json!({ "lease_token": token, "metadata": { "progress_percent": 60 } }),
        )
        .await;
    assert_eq!(beat.status, StatusCode::OK, "{:?}", beat.body);
    let done = app
        .post(
            &format!("/operations/{id}:complete"),
            &transcode_of_b,
            json!({ "lease_token": token, "response": { "ok": true } }),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{:?}", done.body);

    // Its own scope's operation, a tenant-scoped key works end to end.
    let mine = op_id(&app.post("/reports", &key_a, json!({})).await.body);
    let claimed = app.claim(&only_a, "report").await.expect("a's report");
    assert_eq!(op_id(&claimed), mine);
    let failed = app
        .post(
            &format!("/operations/{mine}:fail"),
            &only_a,
            json!({ "lease_token": claimed["lease_token"], "error": { "code": "BAD", "message": "bad" } }),
        )
        .await;
    assert_eq!(failed.status, StatusCode::OK, "{:?}", failed.body);
    assert_eq!(failed.body["error"]["code"], "BAD");
}

#[tokio::test]
async fn worker_key_scopes_are_checked_when_minted() {
    let app = spawn_app(&transcode_config("")).await;
    let (a, _) = app.tenant("a").await;
    let missing = "tnt_01HX0000000000000000000000";
    for body in [
        json!({ "role": "worker", "types": ["nope"] }),
        json!({ "role": "worker", "types": [] }),
        json!({ "role": "worker", "tenants": [] }),
        json!({ "role": "worker", "tenants": [missing] }),
        json!({ "role": "worker", "tenants": [a, missing] }),
        json!({ "role": "worker", "tenants": ["acme"] }),
        json!({ "role": "worker", "types": "transcode" }),
        json!({ "role": "worker", "types": [7] }),
        json!({ "role": "worker", "types": ["transcode"], "tenant": a }),
        json!({ "role": "admin", "types": ["transcode"] }),
        json!({ "role": "admin", "tenants": [a] }),
        json!({ "role": "worker", "types": vec!["transcode"; 101] }),
    ] {
        let r = app.post("/keys", ADMIN, body.clone()).await;
        assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST");
        assert!(r.body.get("key").is_none(), "{body}: no key was minted");
    }
    // Tenant keys cannot be scoped (they already belong to one tenant).
    assert_problem(
        &app.post(
            &format!("/tenants/{a}/keys"),
            ADMIN,
            json!({ "role": "tenant", "types": ["transcode"] }),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_REQUEST",
    );
    // Only admins mint keys.
    let worker = app.worker_key().await;
    assert_problem(
        &app.post(
            "/keys",
            &worker,
            json!({ "role": "worker", "tenants": [a] }),
        )
        .await,
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
    );
    // Repeats are dropped.
    let k = app
        .post(
            "/keys",
            ADMIN,
            json!({ "role": "worker", "types": ["transcode", "transcode"], "tenants": [a, a] }),
        )
        .await;
    assert_eq!(k.status, StatusCode::CREATED, "{:?}", k.body);
    assert_eq!(k.body["types"], json!(["transcode"]));
    assert_eq!(k.body["tenants"], json!([a]));
    // An unscoped worker key's answer shows no scope.
    let plain = app.post("/keys", ADMIN, json!({ "role": "worker" })).await;
    assert!(plain.body.get("types").is_none() && plain.body.get("tenants").is_none());
}
