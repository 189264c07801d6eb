//! Request bodies: arbitrary bytes POSTed (or PUT/PATCHed) to every route that takes a
//! body, through the real router over a real (temporary) SQLite store. Whatever the
//! body, the answer is never a 5xx, and the process never panics.
#![no_main]

use axum::body::Body;
use axum::http::{Method, Request};
use herald_core::SystemClock;
use herald_server::{AppState, Config};
use herald_store::sqlite::SqliteStore;
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};
use tower::ServiceExt;

const ADMIN: &str = "fuzz-admin-key";

const CONFIG: &str = r#"
max_body_bytes = 65536
[[operation_types]]
name = "transcode"
trigger = "POST /videos"
[webhooks]
allow_private_destinations = false
"#;

const ROUTES: &[(&str, &str)] = &[
    ("POST", "/tenants"),
    ("POST", "/keys"),
    ("POST", "/tenants/tnt_01HX0000000000000000000000/keys"),
    ("POST", "/operations"),
    ("POST", "/operations:claim"),
    (
        "POST",
        "/operations/op_01HX0000000000000000000000:heartbeat",
    ),
    ("POST", "/operations/op_01HX0000000000000000000000:complete"),
    ("POST", "/operations/op_01HX0000000000000000000000:fail"),
    ("POST", "/operations/op_01HX0000000000000000000000:wait"),
    ("POST", "/events"),
    ("PUT", "/event-types/fuzz.type"),
    ("POST", "/webhooks"),
    ("PATCH", "/webhooks/wh_01HX0000000000000000000000"),
    ("POST", "/webhooks/wh_01HX0000000000000000000000:replay"),
    ("POST", "/videos"),
];

struct Harness {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    _dir: tempfile::TempDir,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("herald.db")).unwrap();
        let router = runtime.block_on(async {
            let state = AppState::new(
                Arc::new(store),
                Config::parse(CONFIG).unwrap(),
                Arc::new(SystemClock),
                Some(ADMIN.into()),
                tokio_util::sync::CancellationToken::new(),
            )
            .await
            .unwrap();
            let router = herald_server::router(state);
            // The key is accepted: the fuzzing reaches the handlers, not just auth.
            let probe = Request::post("/tenants")
                .header("authorization", format!("Bearer {ADMIN}"))
                .header("content-type", "application/json")
                .body(Body::from(r#"{"name":"probe"}"#))
                .unwrap();
            let status = router.clone().oneshot(probe).await.unwrap().status();
            assert_eq!(
                status.as_u16(),
                201,
                "the fuzz harness cannot create a tenant"
            );
            router
        });
        Harness {
            runtime,
            router,
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let (method, path) = ROUTES[pick as usize % ROUTES.len()];
    let h = harness();
    let request = Request::builder()
        .method(method.parse::<Method>().unwrap())
        .uri(path)
        .header("authorization", format!("Bearer {ADMIN}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_vec()))
        .unwrap();
    // Long polls (`:claim` with `wait`, `:wait`) may legitimately hold the answer: give
    // each request two seconds, and judge only the ones that answered.
    let answered = h.runtime.block_on(async {
        tokio::time::timeout(
            std::time::Duration::from_secs(2),
            h.router.clone().oneshot(request),
        )
        .await
    });
    let Ok(response) = answered else {
        return;
    };
    let response = response.unwrap();
    assert!(
        !response.status().is_server_error(),
        "{method} {path} answered {} to {:?}",
        response.status(),
        String::from_utf8_lossy(body)
    );
});
