//! The ceilings Herald's figures are divided by, measured in the same run: an HTTP
//! endpoint that stores nothing, and a SQLite commit loop batching like Herald's writer.

use crate::load::{client, closed_loop, payload_1k, LoadResult};
use crate::raw::{EventBodies, Generator, Requests};
use axum::routing::post;
use rusqlite::{params, Connection};
use std::time::{Duration, Instant};

/// `POST /events` answered 202 after reading the body, on its own 2-thread runtime
/// (Herald also gets a runtime of its own in its own process).
pub async fn bare_http(
    concurrency: usize,
    duration: Duration,
    generator: Generator,
) -> anyhow::Result<LoadResult> {
    Ok(bare_http_measured(concurrency, duration, generator)
        .await?
        .load)
}

/// The bare endpoint's figures with the CPU time it took.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BareHttp {
    pub load: LoadResult,
    /// CPU seconds of the endpoint's threads (server side only) during the load.
    pub server_cpu_seconds: Option<f64>,
    /// CPU seconds of the whole bench process (client and server) during the load.
    pub process_cpu_seconds: Option<f64>,
    /// Server CPU per request answered, µs.
    pub server_us_per_request: Option<f64>,
    /// Client + server CPU per request, µs.
    pub process_us_per_request: Option<f64>,
}

/// [`bare_http`], also reading the CPU time of the endpoint's threads (named
/// `bare-http…`) and of the bench process over the load.
pub async fn bare_http_measured(
    concurrency: usize,
    duration: Duration,
    generator: Generator,
) -> anyhow::Result<BareHttp> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready, is_ready) = std::sync::mpsc::channel::<()>();
    let server = std::thread::Builder::new()
        .name("bare-http".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("bare-http-worker")
                .enable_all()
                .build()
                .expect("runtime");
            let _ = ready.send(());
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
        })?;
    let _ = is_ready.recv_timeout(Duration::from_secs(5));
    let server_before = crate::cpu::threads_named_seconds("bare-http");
    let process_before = crate::cpu::own_seconds();
    let result = match generator {
        Generator::Hyper => {
            let requests = Requests::new(&format!("http://{addr}"), None)?;
            let bodies = EventBodies::new(None);
            crate::raw::closed_loop(
                &requests,
                concurrency,
                u64::MAX,
                duration,
                hyper::StatusCode::ACCEPTED,
                {
                    let requests = requests.clone();
                    move |n| requests.post("/events", bodies.body(n))
                },
            )
            .await
        }
        Generator::Reqwest => {
            let http = client(concurrency);
            let url = format!("http://{addr}/events");
            closed_loop(concurrency, u64::MAX, duration, move |n| {
                let (http, url) = (http.clone(), url.clone());
                async move {
                    let body = serde_json::json!({ "type": "order.paid", "data": payload_1k(n) });
                    let r = http.post(&url).json(&body).send().await?;
                    anyhow::ensure!(r.status() == 202, "status {}", r.status());
                    r.bytes().await?;
                    Ok(())
                }
            })
            .await
        }
    };
    let server_cpu = crate::cpu::threads_named_seconds("bare-http")
        .zip(server_before)
        .map(|(a, b)| a - b);
    let process_cpu = crate::cpu::own_seconds()
        .zip(process_before)
        .map(|(a, b)| a - b);
    let _ = stop.send(());
    let _ = server.join();
    let per = |s: Option<f64>| s.map(|s| s * 1e6 / result.ok.max(1) as f64);
    Ok(BareHttp {
        server_us_per_request: per(server_cpu),
        process_us_per_request: per(process_cpu),
        server_cpu_seconds: server_cpu,
        process_cpu_seconds: process_cpu,
        load: result,
    })
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

#[derive(Debug, Clone, serde::Serialize)]
pub struct PostgresLimit {
    pub connections: usize,
    pub batch: usize,
    pub rows: u64,
    pub seconds: f64,
    pub rows_per_second: f64,
    pub commits_per_second: f64,
}

/// Inserts 1 KiB event rows into a table of a fresh database (created through
/// `admin_url`, dropped after) from `connections` connections at once, `batch` rows per
/// transaction, `synchronous_commit=on`, for `duration`. With several connections and
/// batch 1 this is Herald's pattern (one transaction per request, commits of concurrent
/// requests sharing a WAL flush).
pub async fn bare_postgres(
    admin_url: &str,
    connections: usize,
    batch: usize,
    duration: Duration,
) -> anyhow::Result<PostgresLimit> {
    let name = format!(
        "herald_bench_limit_{}_{}",
        std::process::id(),
        ulid::Ulid::new().to_string().to_lowercase()
    );
    let url = crate::target::postgres_admin(admin_url, name.clone(), true)?
        .ok_or_else(|| anyhow::anyhow!("no URL for the limit database"))?;
    let result = postgres_loop(&url, connections, batch, duration).await;
    crate::target::postgres_admin(admin_url, name, false)?;
    result
}

async fn postgres_loop(
    url: &str,
    connections: usize,
    batch: usize,
    duration: Duration,
) -> anyhow::Result<PostgresLimit> {
    let mut config: tokio_postgres::Config = url.parse()?;
    config.options("-c synchronous_commit=on");
    let connect = |config: tokio_postgres::Config| async move {
        let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        anyhow::Ok(client)
    };
    connect(config.clone())
        .await?
        .batch_execute(
            "CREATE TABLE events (id TEXT PRIMARY KEY, tenant_id TEXT, type TEXT NOT NULL, \
             data TEXT NOT NULL, created_at BIGINT NOT NULL)",
        )
        .await?;
    let data = payload_1k(0).to_string();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections.max(1) {
        let mut client = connect(config.clone()).await?;
        let data = data.clone();
        tasks.push(tokio::spawn(async move {
            let insert = client
                .prepare(
                    "INSERT INTO events (id, tenant_id, type, data, created_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .await?;
            let (mut rows, mut commits) = (0u64, 0u64);
            while start.elapsed() < duration {
                let tx = client.transaction().await?;
                for _ in 0..batch {
                    let id = format!("evt_{}", ulid::Ulid::new());
                    tx.execute(
                        &insert,
                        &[&id, &"tnt_bench", &"order.paid", &data, &(rows as i64)],
                    )
                    .await?;
                    rows += 1;
                }
                tx.commit().await?;
                commits += 1;
            }
            anyhow::Ok((rows, commits))
        }));
    }
    let (mut rows, mut commits) = (0u64, 0u64);
    for task in tasks {
        let (r, c) = task.await??;
        rows += r;
        commits += c;
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(PostgresLimit {
        connections,
        batch,
        rows,
        seconds,
        rows_per_second: rows as f64 / seconds,
        commits_per_second: commits as f64 / seconds,
    })
}
