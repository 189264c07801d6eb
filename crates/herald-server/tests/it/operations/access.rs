//! Who sees what and what is refused: tenant isolation, list filters and pages, delete, bad input, revoked keys.

use super::*;

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
