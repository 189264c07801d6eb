//! The ceilings Herald's figures are divided by, measured in the same run: an HTTP
//! endpoint that stores nothing, and a SQLite commit loop batching like Herald's writer.

use crate::load::{client, closed_loop, payload_1k, LoadResult};
use axum::routing::post;
use rusqlite::{params, Connection};
use std::time::{Duration, Instant};

/// `POST /events` answered 202 after reading the body, on its own 2-thread runtime
/// (Herald also gets a runtime of its own in its own process).
pub async fn bare_http(concurrency: usize, duration: Duration) -> anyhow::Result<LoadResult> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let app = axum::Router::new().route(
                "/events",
                post(|body: axum::body::Bytes| async move {
                    let _ = body.len();
                    (axum::http::StatusCode::ACCEPTED, "{\"id\":\"evt_x\"}")
                }),
            );
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
    });
    let http = client(concurrency);
    let url = format!("http://{addr}/events");
    let result = closed_loop(concurrency, u64::MAX, duration, move |n| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let body = serde_json::json!({ "type": "order.paid", "data": payload_1k(n) });
            let r = http.post(&url).json(&body).send().await?;
            anyhow::ensure!(r.status() == 202, "status {}", r.status());
            r.bytes().await?;
            Ok(())
        }
    })
    .await;
    let _ = stop.send(());
    let _ = server.join();
    Ok(result)
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SqliteLimit {
    pub batch: usize,
    pub rows: u64,
    pub seconds: f64,
    pub rows_per_second: f64,
    pub commits_per_second: f64,
}

/// Inserts 1 KiB event rows in transactions of `batch`, each row in its own savepoint
/// as Herald's writer does, WAL with `synchronous=FULL`, for `duration`.
pub fn bare_sqlite(
    dir: &std::path::Path,
    batch: usize,
    duration: Duration,
) -> anyhow::Result<SqliteLimit> {
    let path = dir.join(format!("limit-{batch}.db"));
    let _ = std::fs::remove_file(&path);
    let conn = Connection::open(&path)?;
    let _: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    conn.execute_batch(
        "PRAGMA synchronous=FULL; \
         CREATE TABLE events (id TEXT PRIMARY KEY, tenant_id TEXT, type TEXT NOT NULL, data TEXT NOT NULL, created_at INTEGER NOT NULL);",
    )?;
    let data = payload_1k(0).to_string();
    let start = Instant::now();
    let (mut rows, mut commits) = (0u64, 0u64);
    while start.elapsed() < duration {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        for _ in 0..batch {
            conn.execute_batch("SAVEPOINT job")?;
            conn.prepare_cached(
                "INSERT INTO events (id, tenant_id, type, data, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                format!("evt_{}", ulid::Ulid::new()),
                "tnt_bench",
                "order.paid",
                data,
                rows as i64
            ])?;
            conn.execute_batch("RELEASE job")?;
            rows += 1;
        }
        conn.execute_batch("COMMIT")?;
        commits += 1;
    }
    let seconds = start.elapsed().as_secs_f64();
    drop(conn);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    Ok(SqliteLimit {
        batch,
        rows,
        seconds,
        rows_per_second: rows as f64 / seconds,
        commits_per_second: commits as f64 / seconds,
    })
}
