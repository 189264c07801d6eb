//! Backpressure and limits over HTTP: a full store queue is answered 503 `OVERLOADED`
//! with `Retry-After` and changes nothing; a request past `request_timeout` is answered
//! 503 `REQUEST_TIMEOUT` while long polls still wait their full time; a tenant's webhooks
//! are capped even when created at once; a replay larger than one batch is answered at
//! once and finished in the background.
//!
//! Holding the store: another connection takes SQLite's write lock (`BEGIN IMMEDIATE`)
//! or locks PostgreSQL's `events` table, so writes wait while the test looks.

use futures::StreamExt;
use herald_core::ids::EventId;
use herald_store::postgres::PgStore;
use herald_store::sqlite::SqliteStore;
use herald_store::Store;
use herald_testkit::database::{admin_url, TestDatabase, HTTP_DATABASE_URL};
use herald_testkit::receiver::Receiver;
use herald_testkit::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// A lock on the app's store that makes its writes (events, on PostgreSQL) wait.
enum Hold {
    Sqlite(rusqlite::Connection),
    Postgres(tokio_postgres::Client, tokio::task::JoinHandle<()>),
}

impl Hold {
    async fn take(app: &TestApp, pg_url: Option<&str>) -> Hold {
        match pg_url {
            None => {
                let conn = rusqlite::Connection::open(app.dir.path().join("herald.db")).unwrap();
                conn.execute_batch("BEGIN IMMEDIATE").unwrap();
                Hold::Sqlite(conn)
            }
            Some(url) => {
                let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                let driver = tokio::spawn(async move {
                    let _ = connection.await;
                });
                client
                    .batch_execute("BEGIN; LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
                    .await
                    .unwrap();
                Hold::Postgres(client, driver)
            }
        }
    }

    async fn release(self) {
        match self {
            Hold::Sqlite(conn) => conn.execute_batch("ROLLBACK").unwrap(),
            Hold::Postgres(client, driver) => {
                client.batch_execute("ROLLBACK").await.unwrap();
                drop(client);
                let _ = driver.await;
            }
        }
    }
}

/// The real server over a store whose queues hold `queue` requests (PostgreSQL when
/// `HERALD_TEST_HTTP_DATABASE_URL` is set). Also its database URL on PostgreSQL.
async fn spawn_with_queue(
    queue: usize,
    config: &str,
) -> (TestApp, Option<String>, Option<TestDatabase>) {
    let dir = tempfile::tempdir().unwrap();
    let (store, guard): (Arc<dyn Store>, _) = match admin_url(HTTP_DATABASE_URL) {
        Some(admin) => {
            let db = TestDatabase::create(admin).await;
            let store = PgStore::connect_with_queues(&db.url, 16, queue, queue)
                .await
                .unwrap();
            (Arc::new(store), Some(db))
        }
        None => (
            Arc::new(SqliteStore::open_with(&dir.path().join("herald.db"), queue).unwrap()),
            None,
        ),
    };
    let url = guard.as_ref().map(|db| db.url.clone());
    let app = spawn_on(dir, store, None, config, None).await;
    (app, url, guard)
}

/// POSTs `body`, again while the answer is 503 `OVERLOADED`, as its `Retry-After` asks
/// (with a queue this small, Herald's own background writes can fill it too).
async fn post_until_taken(app: &TestApp, path: &str, key: &str, body: Value) -> Reply {
    for _ in 0..200 {
        let r = app.post(path, key, body.clone()).await;
        if r.status != StatusCode::SERVICE_UNAVAILABLE {
            return r;
        }
        assert_problem(&r, StatusCode::SERVICE_UNAVAILABLE, "OVERLOADED");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} stayed overloaded with the store idle");
}

fn event_body(id: &str, tenant: &str) -> Value {
    json!({ "id": id, "type": "order.created", "tenant": tenant, "data": { "n": 1 } })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_queue_is_answered_503_and_changes_nothing() {
    let (app, pg_url, _db) = spawn_with_queue(1, "").await;
    let created = post_until_taken(&app, "/tenants", ADMIN, json!({ "name": "acme" })).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let tenant = created.body["id"].as_str().unwrap().to_owned();
    let hold = Hold::take(&app, pg_url.as_deref()).await;

    // While the store cannot commit, at most a few writes are taken (the writer's own,
    // one queued); every other one is refused at once.
    const CALLS: usize = 60;
    let app = Arc::new(app);
    let (done, mut answers) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..CALLS {
        let (app, done, tenant) = (app.clone(), done.clone(), tenant.clone());
        tokio::spawn(async move {
            let id = EventId::generate().to_string();
            let r = app.post("/events", ADMIN, event_body(&id, &tenant)).await;
            let _ = done.send((id, r));
        });
    }
    drop(done);
    let mut answered = Vec::new();
    let mut refused = 0;
    while refused < CALLS / 2 {
        let (id, r) = answers.recv().await.unwrap();
        assert_problem(&r, StatusCode::SERVICE_UNAVAILABLE, "OVERLOADED");
        assert_eq!(r.headers["retry-after"], "1");
        refused += 1;
        answered.push((id, r));
    }
    hold.release().await;
    while let Some(answer) = answers.recv().await {
        answered.push(answer);
    }
    assert_eq!(answered.len(), CALLS);

    let mut stored = 0;
    for (id, r) in &answered {
        let read = app.get(&format!("/events/{id}"), ADMIN).await;
        match r.status {
            StatusCode::ACCEPTED => {
                assert_eq!(
                    read.status,
                    StatusCode::OK,
                    "{id} was accepted: {:?}",
                    read.body
                );
                stored += 1;
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_problem(r, StatusCode::SERVICE_UNAVAILABLE, "OVERLOADED");
                assert_problem(&read, StatusCode::NOT_FOUND, "NOT_FOUND");
            }
            other => panic!("{id}: {other} {:?}", r.body),
        }
    }
    // (Herald's own background writes may have taken the few places, so `stored` may be 0.)
    println!("{stored} of {CALLS} taken while the store was held");

    // Once the store keeps up, the refused request goes through as it is.
    let (id, _) = answered
        .iter()
        .find(|(_, r)| r.status == StatusCode::SERVICE_UNAVAILABLE)
        .unwrap();
    let again = post_until_taken(&app, "/events", ADMIN, event_body(id, &tenant)).await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{:?}", again.body);
    assert_eq!(
        app.get(&format!("/events/{id}"), ADMIN).await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_the_timeout_is_answered_503_and_long_polls_still_wait() {
    let app = spawn_app(&format!(
        "request_timeout = \"1s\"\n{}",
        transcode_config("")
    ))
    .await;
    let (tenant, key) = app.tenant("acme").await;
    let worker = app.worker_key().await;

    // Long polls wait past the request timeout, up to their own maximum.
    let op = app.post("/videos", &key, json!({ "title": "t" })).await;
    assert_eq!(op.status, StatusCode::ACCEPTED, "{:?}", op.body);
    let id = op_id(&op.body);
    let waited = app
        .post(
            &format!("/operations/{id}:wait"),
            &key,
            json!({ "timeout": "3s" }),
        )
        .await;
    assert_eq!(waited.status, StatusCode::OK, "{:?}", waited.body);
    assert_eq!(waited.body["done"], false);
    assert!(app.claim(&worker, "transcode").await.is_some());
    let claimed = app
        .post(
            "/operations:claim",
            &worker,
            json!({ "types": ["transcode"], "max": 1, "wait": "3s" }),
        )
        .await;
    assert_eq!(claimed.status, StatusCode::OK, "{:?}", claimed.body);
    assert_eq!(claimed.body["operations"], json!([]));

    // A write the store cannot take within the timeout.
    let pg_url = app.postgres.as_ref().map(|p| p.url.clone());
    let hold = Hold::take(&app, pg_url.as_deref()).await;
    let event = EventId::generate().to_string();
    let r = app
        .post("/events", ADMIN, event_body(&event, &tenant))
        .await;
    assert_problem(&r, StatusCode::SERVICE_UNAVAILABLE, "REQUEST_TIMEOUT");
    assert_eq!(r.headers["retry-after"], "1");
    assert!(r.headers.contains_key("x-request-id"));
    hold.release().await;

    // The retry the answer asks for stores the event once.
    let again = app
        .post("/events", ADMIN, event_body(&event, &tenant))
        .await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{:?}", again.body);
    let read = app.get(&format!("/events/{event}"), ADMIN).await;
    assert_eq!(read.status, StatusCode::OK, "{:?}", read.body);
    let listed = app
        .get("/events?type=order.created&page_size=100", ADMIN)
        .await;
    assert_eq!(listed.body["events"].as_array().unwrap().len(), 1);
}

fn hook(url: &str) -> Value {
    json!({ "url": url, "events": ["order.*"] })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_webhooks_are_capped_even_when_created_at_once() {
    let app =
        spawn_app("[webhooks]\nallow_private_destinations = true\nmax_per_tenant = 3\n").await;
    let (_, key) = app.tenant("acme").await;
    let (_, other_key) = app.tenant("other").await;
    let url = "http://127.0.0.1:9/hook";
    let first = app.post("/webhooks", &key, hook(url)).await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    assert_eq!(
        app.post("/webhooks", &key, hook(url)).await.status,
        StatusCode::CREATED
    );

    // One slot left and eight creates at once: exactly one gets it.
    let tries =
        futures::future::join_all((0..8).map(|_| app.post("/webhooks", &key, hook(url)))).await;
    let created = tries
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .count();
    assert_eq!(
        created,
        1,
        "{:?}",
        tries.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in tries.iter().filter(|r| r.status != StatusCode::CREATED) {
        assert_problem(r, StatusCode::UNPROCESSABLE_ENTITY, "LIMIT_REACHED");
        assert!(r.body["detail"].as_str().unwrap().contains("3 webhooks"));
    }
    let listed = app.get("/webhooks", &key).await;
    assert_eq!(listed.body["webhooks"].as_array().unwrap().len(), 3);

    // Another tenant has its own count; deleting a webhook frees its slot.
    assert_eq!(
        app.post("/webhooks", &other_key, hook(url)).await.status,
        StatusCode::CREATED
    );
    let id = first.body["id"].as_str().unwrap();
    assert_eq!(
        app.call(
            reqwest::Method::DELETE,
            &format!("/webhooks/{id}"),
            &key,
            None
        )
        .await
        .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.post("/webhooks", &key, hook(url)).await.status,
        StatusCode::CREATED
    );
    let refused = app.post("/webhooks", &key, hook(url)).await;
    assert_problem(&refused, StatusCode::UNPROCESSABLE_ENTITY, "LIMIT_REACHED");
    assert_eq!(
        app.get("/webhooks", &key).await.body["webhooks"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

/// How many of the webhook's deliveries have `status`, paging through the list.
async fn count_deliveries(app: &TestApp, key: &str, webhook: &str, status: &str) -> usize {
    let (mut count, mut token) = (0, String::new());
    loop {
        let page = app
            .get(
                &format!("/deliveries?webhook={webhook}&status={status}&page_size=1000&page_token={token}"),
                key,
            )
            .await;
        assert_eq!(page.status, StatusCode::OK, "{:?}", page.body);
        count += page.body["deliveries"].as_array().unwrap().len();
        token = page.body["next_page_token"].as_str().unwrap().to_owned();
        if token.is_empty() {
            return count;
        }
    }
}

/// A debug build delivering a thousand webhooks on a busy machine is slow: a bound, not a
/// measurement.
const A_MINUTE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_larger_than_a_batch_is_answered_at_once_and_finished_in_the_background() {
    const EVENTS: usize = 1100; // more than two batches of 500
    let app = spawn_app("[webhooks]\nallow_private_destinations = true\n").await;
    let receiver = Receiver::start().await;
    let (tenant, key) = app.tenant("acme").await;
    let created = app
        .post("/webhooks", &key, hook(&receiver.url("/hook")))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let webhook = created.body["id"].as_str().unwrap().to_owned();
    futures::stream::iter(0..EVENTS)
        .map(|_| {
            let body = event_body(&EventId::generate().to_string(), &tenant);
            let app = &app;
            async move { app.post("/events", ADMIN, body).await }
        })
        .buffer_unordered(16)
        .for_each(|r| async move { assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body) })
        .await;
    app.eventually_within("every delivery succeeded", A_MINUTE, || async {
        count_deliveries(&app, &key, &webhook, "succeeded").await == EVENTS
    })
    .await;

    // Paused, so replayed deliveries stay pending where the test can count them.
    let paused = app
        .post(&format!("/webhooks/{webhook}:disable"), &key, json!({}))
        .await;
    assert_eq!(paused.status, StatusCode::OK, "{:?}", paused.body);
    let r = app
        .post(
            &format!("/webhooks/{webhook}:replay"),
            &key,
            json!({ "status": "succeeded" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    assert_eq!(r.body["webhook"], webhook.as_str());
    assert_eq!(r.body["replayed"], 500, "the first batch, in the request");
    assert_eq!(r.body["done"], false, "the rest follows in the background");
    app.eventually_within("every delivery replayed", A_MINUTE, || async {
        count_deliveries(&app, &key, &webhook, "pending").await == EVENTS
    })
    .await;
    assert_eq!(count_deliveries(&app, &key, &webhook, "succeeded").await, 0);

    // A range within one batch is done in the request (`tests/webhooks.rs` replays one).
    let none = app
        .post(
            &format!("/webhooks/{webhook}:replay"),
            &key,
            json!({ "since": "2000-01-01T00:00:00Z", "until": "2000-01-02T00:00:00Z" }),
        )
        .await;
    assert_eq!(none.status, StatusCode::ACCEPTED, "{:?}", none.body);
    assert_eq!(none.body["replayed"], 0);
    assert_eq!(none.body["done"], true);
}
