//! The embedded backend: one SQLite file in WAL mode with `synchronous=FULL`.
//!
//! Writes go to a single writer thread that takes every job queued, runs each in its
//! own savepoint (one job failing undoes only itself) and commits them together: one
//! fsync for many requests (group commit). Reads use a small pool of read-only
//! connections, which WAL lets run beside the writer.

mod migrations;
pub(crate) mod rows;
mod store_impl;

use crate::{OutboxRoute, Signals, StoreError, StoreResult};
use rusqlite::{Connection, OpenFlags};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, RwLock};

type Reply = Box<dyn FnOnce(StoreResult<()>) + Send>;
type WriteJob = Box<dyn FnOnce(&Connection) -> Reply + Send>;

/// How many queued jobs one commit takes at most.
const MAX_BATCH: usize = 2048;
/// Prepared statements each connection keeps.
const STATEMENT_CACHE: usize = 128;
/// Read connections kept open for reuse.
const MAX_IDLE_READERS: usize = 8;

pub struct SqliteStore {
    /// Held for the store's life: one process owns an SQLite database (see `open`).
    _lock: std::fs::File,
    writer: mpsc::Sender<WriteJob>,
    readers: Arc<ReaderPool>,
    signals: Arc<Signals>,
    /// Broker routes from config, read by every write that may store an event.
    routes: Arc<RwLock<Arc<Vec<OutboxRoute>>>>,
}

struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReaderPool {
    fn get(&self) -> StoreResult<Connection> {
        if let Some(conn) = self.idle.lock().expect("reader pool lock").pop() {
            return Ok(conn);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(conn)
    }

    fn put(&self, conn: Connection) {
        let mut idle = self.idle.lock().expect("reader pool lock");
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
    }
}

/// `sqlite://path`, `sqlite:path` or a bare path.
pub fn path_from_url(url: &str) -> PathBuf {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    PathBuf::from(rest)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies migrations.
    pub fn open(path: &Path) -> StoreResult<Self> {
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() && !parent.exists() {
                std::fs::create_dir_all(parent).map_err(|e| {
                    StoreError::Backend(format!("cannot create {}: {e}", parent.display()))
                })?;
            }
        }
        // One process owns the file: its single writer thread is what makes group commit and
        // lease bookkeeping safe. A second `herald serve` on the same file is refused.
        let lock_path = path.with_extension("db.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| {
                StoreError::Backend(format!("cannot open {}: {e}", lock_path.display()))
            })?;
        lock.try_lock().map_err(|_| {
            StoreError::Backend(format!(
                "{} is in use by another Herald process (lock file {}); several nodes need PostgreSQL",
                path.display(),
                lock_path.display()
            ))
        })?;
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // The writer runs some 40 distinct statements; rusqlite's default cache holds 16, so
        // a mixed load (events, claims, results) would keep evicting and re-parsing them.
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(format!(
                "could not switch {} to WAL (got {mode})",
                path.display()
            )));
        }
        // FULL: every commit is fsync'd before the answer that depends on it goes out.
        conn.execute_batch(
            "PRAGMA synchronous=FULL; PRAGMA foreign_keys=OFF; PRAGMA temp_store=MEMORY;",
        )?;
        migrations::apply(&mut conn)?;
        // Delivery leases belong to this process's dispatcher; any left in the file are from a
        // process that died mid-send, so they are released now instead of waiting out the lease.
        conn.execute("UPDATE deliveries SET lease_until = NULL WHERE status = 'pending' AND lease_until IS NOT NULL", [])?;

        let (tx, rx) = mpsc::channel::<WriteJob>();
        std::thread::Builder::new()
            .name("herald-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx))
            .map_err(|e| StoreError::Backend(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            _lock: lock,
            writer: tx,
            readers: Arc::new(ReaderPool {
                path: path.to_owned(),
                idle: Mutex::new(Vec::new()),
            }),
            signals: Arc::new(Signals::default()),
            routes: Arc::default(),
        })
    }

    /// The broker routes in force now.
    fn routes(&self) -> Arc<Vec<OutboxRoute>> {
        self.routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Runs `f` in the writer's next transaction; returns once that transaction is on disk.
    async fn write<R, F>(&self, f: F) -> StoreResult<R>
    where
        F: FnOnce(&Connection) -> StoreResult<R> + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: WriteJob = Box::new(move |conn: &Connection| {
            let result = run_in_savepoint(conn, f);
            Box::new(move |commit: StoreResult<()>| {
                let _ = tx.send(commit.and(result));
            })
        });
        self.writer
            .send(job)
            .map_err(|_| StoreError::Backend("the writer thread has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Backend("the writer thread has stopped".into()))?
    }

    /// Runs `f`, a read of a few rows by key, on a read connection right here on the async
    /// thread. A WAL reader never waits for the writer, and such a read takes microseconds,
    /// less than handing it to a blocking thread and back (which, for `GET
    /// /operations/{id}`, was the largest cost: thread wake-ups and context switches).
    fn read_now<R>(&self, f: impl FnOnce(&Connection) -> StoreResult<R>) -> StoreResult<R> {
        let conn = self.readers.get()?;
        let result = f(&conn);
        self.readers.put(conn);
        result
    }

    /// Runs `f` on a read connection, off the async threads.
    async fn read<R, F>(&self, f: F) -> StoreResult<R>
    where
        F: FnOnce(&Connection) -> StoreResult<R> + Send + 'static,
        R: Send + 'static,
    {
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.get()?;
            let result = f(&conn);
            pool.put(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
    }
}

fn run_in_savepoint<R>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> StoreResult<R>,
) -> StoreResult<R> {
    // Prepared once and cached: `execute_batch` would parse these again for every job.
    conn.prepare_cached("SAVEPOINT job")?.execute([])?;
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| f(conn)))
        .unwrap_or_else(|_| Err(StoreError::Backend("a store write panicked".into())));
    if result.is_err() {
        // What the job cached may describe rows it is about to undo.
        store_impl::forget_fan_out_targets();
        conn.prepare_cached("ROLLBACK TO job")?.execute([])?;
    }
    conn.prepare_cached("RELEASE job")?.execute([])?;
    result
}

fn writer_loop(conn: Connection, jobs: mpsc::Receiver<WriteJob>) {
    while let Ok(first) = jobs.recv() {
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            let err: StoreError = e.into();
            // The job never ran; tell its caller.
            first(&conn)(Err(err));
            continue;
        }
        let mut replies: Vec<Reply> = Vec::with_capacity(64);
        replies.push(first(&conn));
        while replies.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => replies.push(job(&conn)),
                Err(_) => break,
            }
        }
        let committed = conn.execute_batch("COMMIT").map_err(StoreError::from);
        if committed.is_err() {
            store_impl::forget_fan_out_targets();
            let _ = conn.execute_batch("ROLLBACK");
        }
        for reply in replies {
            reply(committed.clone());
        }
    }
}
