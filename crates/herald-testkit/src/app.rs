//! The real server on port 0 over a fresh SQLite file, spoken to over HTTP.
//! With `HERALD_TEST_HTTP_DATABASE_URL=postgres://…` set, each app gets a fresh
//! PostgreSQL database instead (made through that URL, dropped after).

use crate::database::{admin_url, TestDatabase, HTTP_DATABASE_URL};
use herald_core::{Clock, ManualClock, SystemClock};
use herald_server::{AppState, Config};
use herald_store::postgres::PgStore;
use herald_store::sqlite::SqliteStore;
use herald_store::Store;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const ADMIN: &str = "test-admin-key";

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub store: Arc<dyn Store>,
    pub state: AppState,
    pub manual_clock: Option<Arc<ManualClock>>,
    pub shutdown: CancellationToken,
    pub server: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub dir: tempfile::TempDir,
    /// Set when the app runs on PostgreSQL: the database dropped when the app is.
    pub postgres: Option<TestDatabase>,
}

impl TestApp {
    pub fn on_postgres(&self) -> bool {
        self.postgres.is_some()
    }
}

/// The store for one app: PostgreSQL when `HERALD_TEST_HTTP_DATABASE_URL` is set, else SQLite in `dir`.
async fn open_store(dir: &std::path::Path) -> (Arc<dyn Store>, Option<TestDatabase>) {
    match admin_url(HTTP_DATABASE_URL) {
        Some(admin_url) => {
            let db = TestDatabase::create(admin_url).await;
            (Arc::new(PgStore::connect(&db.url).await.unwrap()), Some(db))
        }
        None => (
            Arc::new(SqliteStore::open(&dir.join("herald.db")).unwrap()),
            None,
        ),
    }
}

/// A config with a `transcode` type triggered by `POST /videos`, plus `extra` TOML.
pub fn transcode_config(extra: &str) -> String {
    format!(
        r#"
[[operation_types]]
name = "transcode"
trigger = "POST /videos"
lease = "30s"
max_attempts = 3
{extra}
"#
    )
}

pub async fn spawn_app(config: &str) -> TestApp {
    spawn(config, None).await
}

/// The same, with a clock the test moves by hand.
pub async fn spawn_app_with_manual_clock(config: &str) -> TestApp {
    spawn(config, Some(Arc::new(ManualClock::starting_now()))).await
}

impl TestApp {
    /// Another node on this app's PostgreSQL database (its own pool, listener, dispatcher
    /// and caches), as a second `herald serve` would be. `None` on SQLite.
    pub async fn second_node(&self, config: &str) -> Option<TestApp> {
        let url = self.postgres.as_ref()?.url.clone();
        let store: Arc<dyn Store> = Arc::new(PgStore::connect(&url).await.unwrap());
        let dir = tempfile::tempdir().unwrap();
        Some(spawn_on(dir, store, None, config, None).await)
    }
}

async fn spawn(config: &str, manual: Option<Arc<ManualClock>>) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let (store, postgres) = open_store(dir.path()).await;
    spawn_on(dir, store, postgres, config, manual).await
}

/// `dir` holds the app's files (its SQLite database, if any) and lives as long as the app.
pub async fn spawn_on(
    dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    postgres: Option<TestDatabase>,
    config: &str,
    manual: Option<Arc<ManualClock>>,
) -> TestApp {
    let config = Config::parse(config).unwrap();
    let clock: Arc<dyn Clock> = match &manual {
        Some(c) => c.clone(),
        None => Arc::new(SystemClock),
    };
    let shutdown = CancellationToken::new();
    let state = AppState::new(
        store.clone(),
        config,
        clock,
        Some(ADMIN.into()),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(herald_server::start(state.clone(), listener));
    TestApp {
        base,
        http: reqwest::Client::new(),
        store,
        state,
        manual_clock: manual,
        shutdown,
        server,
        dir,
        postgres,
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl TestApp {
    pub async fn call(&self, method: Method, path: &str, key: &str, body: Option<Value>) -> Reply {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        into_reply(req.send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str, key: &str) -> Reply {
        self.call(Method::GET, path, key, None).await
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> Reply {
        self.call(Method::POST, path, key, Some(body)).await
    }

    pub async fn post_raw(
        &self,
        path: &str,
        key: &str,
        body: &'static str,
        idem: Option<&str>,
    ) -> Reply {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body);
        if let Some(k) = idem {
            req = req.header("Idempotency-Key", k);
        }
        into_reply(req.send().await.unwrap()).await
    }

    /// A tenant and one key for it.
    pub async fn tenant(&self, name: &str) -> (String, String) {
        let t = self.post("/tenants", ADMIN, json!({ "name": name })).await;
        assert_eq!(t.status, StatusCode::CREATED, "{:?}", t.body);
        let id = t.body["id"].as_str().unwrap().to_owned();
        let k = self
            .post(
                &format!("/tenants/{id}/keys"),
                ADMIN,
                json!({ "role": "tenant" }),
            )
            .await;
        assert_eq!(k.status, StatusCode::CREATED, "{:?}", k.body);
        (id, k.body["key"].as_str().unwrap().to_owned())
    }

    pub async fn worker_key(&self) -> String {
        let k = self.post("/keys", ADMIN, json!({ "role": "worker" })).await;
        assert_eq!(k.status, StatusCode::CREATED, "{:?}", k.body);
        k.body["key"].as_str().unwrap().to_owned()
    }

    /// Claims up to one operation of `op_type`, without waiting.
    pub async fn claim(&self, worker: &str, op_type: &str) -> Option<Value> {
        let r = self
            .post(
                "/operations:claim",
                worker,
                json!({ "types": [op_type], "max": 1 }),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        r.body["operations"].as_array().unwrap().first().cloned()
    }

    pub fn advance(&self, by: Duration) {
        self.manual_clock
            .as_ref()
            .expect("spawned with a manual clock")
            .advance(by);
    }

    /// Polls `check` (a read through the API) until it holds, for at most 10 s of real time.
    pub async fn eventually<F, Fut>(&self, what: &str, check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        crate::eventually(what, check).await
    }

    /// [`Self::eventually`] with its own bound (a bound, not a measurement).
    pub async fn eventually_within<F, Fut>(&self, what: &str, within: Duration, check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        crate::eventually_within(what, within, check).await
    }
}

pub async fn into_reply(resp: reqwest::Response) -> Reply {
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    };
    Reply {
        status,
        headers,
        body,
    }
}

/// Asserts an RFC 9457 problem with the given status and code.
pub fn assert_problem(r: &Reply, status: StatusCode, code: &str) {
    assert_eq!(r.status, status, "{:?}", r.body);
    assert_eq!(r.headers["content-type"], "application/problem+json");
    assert_eq!(r.body["code"], code, "{:?}", r.body);
    assert_eq!(r.body["status"], status.as_u16());
    assert!(r.body["title"].is_string() && r.body["type"].is_string());
    assert!(!r.body["detail"].as_str().unwrap_or_default().is_empty());
}

/// `op_…` from `operations/op_…`.
pub fn op_id(resource: &Value) -> String {
    resource["name"]
        .as_str()
        .unwrap()
        .trim_start_matches("operations/")
        .to_owned()
}
