//! The embedded backend: one SQLite file in WAL mode with `synchronous=FULL`.
//!
//! Writes go to a single writer thread that takes every job queued, runs each in its
//! own savepoint (one job failing undoes only itself) and commits them together: one
//! fsync for many requests (group commit). A job is answered success only once its
//! transaction has committed, and an error only when its write is not in the database:
//! when SQLite itself rolls back the whole transaction (`SQLITE_FULL`, `SQLITE_IOERR`…),
//! every job of the batch so far is failed and the queued rest waits for the next
//! transaction, and a transaction that cannot begin runs no job. The queue in front of
//! the writer is bounded: past it a write is refused at once with
//! [`StoreError::Overloaded`], having changed nothing. Reads use a small pool of
//! read-only connections, which WAL lets run beside the writer.

mod deliveries;
mod events;
mod feed;
mod migrations;

/// The schema version this build writes and expects.
pub use migrations::EXPECTED_VERSION;
mod operations;
mod outbox;
mod portal;
mod rows;
mod sql;
mod stats;
mod tenants;
mod webhooks;

use crate::{Handoff, OutboxRoute, Signals, StoreError, StoreResult};
use rusqlite::{Connection, OpenFlags};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};

/// Told once the job's transaction has ended: `Ok` if it committed.
type Reply = Box<dyn FnOnce(StoreResult<()>) + Send>;
/// A queued write. Given the writer's connection, it runs in the open transaction;
/// given `None`, it does not run at all (no transaction could begin).
type WriteJob = Box<dyn FnOnce(Option<&Connection>) -> Ran + Send>;

/// What a job left behind: how to answer its caller, and its own failure, if any.
struct Ran {
    reply: Reply,
    failed: Option<StoreError>,
}

/// How many queued jobs one commit takes at most.
const MAX_BATCH: usize = 2048;
/// Write jobs that may wait for the writer (besides the batch it is running) unless
/// [`SqliteStore::open_with`] says otherwise; one more is refused with
/// [`StoreError::Overloaded`]. Two full batches.
pub const DEFAULT_WRITE_QUEUE: usize = 4096;
/// Prepared statements each connection keeps.
const STATEMENT_CACHE: usize = 128;
/// Read connections kept open for reuse.
const MAX_IDLE_READERS: usize = 8;
/// Reads running at once, each on a blocking thread (where it cannot be cancelled).
const MAX_READS: usize = 16;
/// Reads that may wait for one of the [`MAX_READS`]; one more is refused with
/// [`StoreError::Overloaded`].
const MAX_WAITING_READS: usize = 1024;

pub struct SqliteStore {
    /// Held for the store's life: one process owns an SQLite database (see `open`).
    _lock: std::fs::File,
    writer: mpsc::SyncSender<WriteJob>,
    readers: Arc<ReaderPool>,
    signals: Arc<Signals>,
    /// Broker routes from config, read by every write that may store an event.
    routes: Arc<RwLock<Arc<Vec<OutboxRoute>>>>,
    /// The running dispatcher's offer for fresh deliveries ([`crate::handoff`]).
    handoff: Arc<RwLock<Option<Handoff>>>,
}

struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// One per read running: [`MAX_READS`].
    slots: Arc<tokio::sync::Semaphore>,
    /// Reads waiting for a slot.
    waiting: AtomicUsize,
}

/// One read counted as waiting for a slot, until dropped (however its caller ends).
struct WaitingRead<'a>(&'a AtomicUsize);

impl<'a> WaitingRead<'a> {
    fn enter(waiting: &'a AtomicUsize) -> StoreResult<Self> {
        if waiting.fetch_add(1, Ordering::SeqCst) >= MAX_WAITING_READS {
            waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(StoreError::Overloaded);
        }
        Ok(Self(waiting))
    }
}

impl Drop for WaitingRead<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
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
        Self::open_with(path, DEFAULT_WRITE_QUEUE)
    }

    /// [`SqliteStore::open`] with at most `write_queue` writes (at least 1) waiting for
    /// the writer thread; a write past that is answered [`StoreError::Overloaded`].
    pub fn open_with(path: &Path, write_queue: usize) -> StoreResult<Self> {
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

        let (tx, rx) = mpsc::sync_channel::<WriteJob>(write_queue.max(1));
        let signals = Arc::new(Signals::default());
        let writer_signals = signals.clone();
        std::thread::Builder::new()
            .name("herald-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, &writer_signals))
            .map_err(|e| StoreError::Backend(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            _lock: lock,
            writer: tx,
            readers: Arc::new(ReaderPool {
                path: path.to_owned(),
                idle: Mutex::new(Vec::new()),
                slots: Arc::new(tokio::sync::Semaphore::new(MAX_READS)),
                waiting: AtomicUsize::new(0),
            }),
            signals,
            routes: Arc::default(),
            handoff: Arc::default(),
        })
    }

    /// The dispatcher's offer for fresh deliveries, if one is open.
    fn handoff(&self) -> Option<Handoff> {
        let handoff = self.handoff.read().unwrap_or_else(|p| p.into_inner());
        handoff.as_ref().filter(|h| h.is_open()).cloned()
    }

    fn set_handoff(&self, handoff: Handoff) {
        *self.handoff.write().unwrap_or_else(|p| p.into_inner()) = Some(handoff);
    }

    /// The broker routes in force now.
    fn routes(&self) -> Arc<Vec<OutboxRoute>> {
        self.routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Runs `f` in the writer's next transaction; returns once that transaction is on disk.
    /// `Ok` only if it committed; an error only if `f`'s changes are not in the database.
    async fn write<R, F>(&self, f: F) -> StoreResult<R>
    where
        F: FnOnce(&Connection) -> StoreResult<R> + Send + 'static,
        R: Send + 'static,
    {
        self.write_queued(f, false).await
    }

    /// [`Self::write`] for Herald's own loops (delivery claims and results, the reaper,
    /// retention): a full queue makes it wait for room instead of failing. Those loops
    /// are few and each has one write in flight, so waiting stays bounded, and a result
    /// refused under overload would only be sent again when its lease ran out.
    async fn write_internal<R, F>(&self, f: F) -> StoreResult<R>
    where
        F: FnOnce(&Connection) -> StoreResult<R> + Send + 'static,
        R: Send + 'static,
    {
        self.write_queued(f, true).await
    }

    async fn write_queued<R, F>(&self, f: F, wait_for_room: bool) -> StoreResult<R>
    where
        F: FnOnce(&Connection) -> StoreResult<R> + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: WriteJob = Box::new(move |conn: Option<&Connection>| match conn {
            // Its caller is gone (the request timed out or was dropped) before the job
            // ran: nobody waits for it, so it is not run at all.
            Some(_) if tx.is_closed() => Ran {
                reply: Box::new(|_| {}),
                failed: None,
            },
            Some(conn) => {
                let result = run_in_savepoint(conn, f);
                let failed = result.as_ref().err().cloned();
                Ran {
                    reply: Box::new(move |commit: StoreResult<()>| {
                        // Its own failure first: it undid itself whatever became of the batch.
                        let _ = tx.send(result.and_then(|r| commit.map(|()| r)));
                    }),
                    failed,
                }
            }
            None => Ran {
                reply: Box::new(move |why: StoreResult<()>| {
                    let _ = tx.send(Err(why
                        .err()
                        .unwrap_or_else(|| StoreError::Backend("the write was not run".into()))));
                }),
                failed: None,
            },
        });
        let mut job = job;
        loop {
            match self.writer.try_send(job) {
                Ok(()) => break,
                Err(mpsc::TrySendError::Full(back)) if wait_for_room => {
                    job = back;
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                Err(mpsc::TrySendError::Full(_)) => return Err(StoreError::Overloaded),
                Err(mpsc::TrySendError::Disconnected(_)) => {
                    return Err(StoreError::Backend("the writer thread has stopped".into()))
                }
            }
        }
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

    /// Runs `f` on a read connection, off the async threads, once one of [`MAX_READS`]
    /// slots is free. A blocking thread cannot be cancelled, so the slot is taken here,
    /// while waiting still can be: a caller that gives up (its request timed out) before
    /// its read started leaves no work behind, and reads never pile up on the blocking
    /// pool. Past [`MAX_WAITING_READS`] waiting, a read is refused with
    /// [`StoreError::Overloaded`].
    async fn read<R, F>(&self, f: F) -> StoreResult<R>
    where
        F: FnOnce(&Connection) -> StoreResult<R> + Send + 'static,
        R: Send + 'static,
    {
        let pool = self.readers.clone();
        let slot = match pool.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                let waiting = WaitingRead::enter(&pool.waiting)?;
                let slot =
                    pool.slots.clone().acquire_owned().await.map_err(|_| {
                        StoreError::Backend("the store's readers are closed".into())
                    })?;
                drop(waiting);
                slot
            }
        };
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let conn = pool.get()?;
            let result = f(&conn);
            pool.put(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
    }
}

/// Runs `f` in a savepoint of the open transaction: on error its changes are undone and
/// the rest of the transaction stands. Should the savepoint itself fail to roll back or
/// release, the whole transaction is rolled back, so a failed job's changes can never
/// commit with the others (the writer sees the transaction gone and fails the batch).
fn run_in_savepoint<R>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> StoreResult<R>,
) -> StoreResult<R> {
    // Prepared once and cached: `execute_batch` would parse these again for every job.
    conn.prepare_cached("SAVEPOINT job")?.execute([])?;
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| f(conn)))
        .unwrap_or_else(|_| Err(StoreError::Backend("a store write panicked".into())));
    if conn.is_autocommit() {
        // SQLite rolled back the whole transaction, this savepoint with it.
        events::forget_fan_out_targets();
        return result.and(Err(StoreError::Backend(
            "the transaction was rolled back during this write".into(),
        )));
    }
    let end = |sql: &str| -> StoreResult<()> {
        match conn.prepare_cached(sql).and_then(|mut s| s.execute([])) {
            Ok(_) => Ok(()),
            Err(e) => {
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                Err(e.into())
            }
        }
    };
    if result.is_err() {
        // What the job cached may describe rows it is about to undo.
        events::forget_fan_out_targets();
        if end("ROLLBACK TO job").is_err() {
            return result;
        }
    }
    let released = end("RELEASE job");
    // The job's own error first: it is the better answer, and its changes are undone.
    result.and_then(|r| released.map(|()| r))
}

/// The writer thread: one transaction per batch of queued jobs, until the store drops.
/// After a commit that stored events, feed long polls are woken.
fn writer_loop(conn: Connection, jobs: mpsc::Receiver<WriteJob>, signals: &Signals) {
    while let Ok(first) = jobs.recv() {
        feed::take_appended();
        if !conn.is_autocommit() {
            // Left open by a failed COMMIT whose ROLLBACK failed too; start clean.
            let _ = conn.execute_batch("ROLLBACK");
        }
        if let Err(e) = conn
            .prepare_cached("BEGIN IMMEDIATE")
            .and_then(|mut s| s.execute([]))
        {
            // The job does not run (outside a transaction it would commit on its own,
            // whatever its caller was told): its caller gets the error, nothing changed.
            (first(None).reply)(Err(e.into()));
            continue;
        }
        let mut replies: Vec<Reply> = Vec::with_capacity(64);
        let mut lost: Option<StoreError> = None;
        let mut next = Some(first);
        while let Some(job) = next.take() {
            let ran = job(Some(&conn));
            replies.push(ran.reply);
            if conn.is_autocommit() {
                // SQLite rolled back the whole transaction (disk full, I/O error…): every
                // job of this batch so far is undone. The jobs still queued are not run
                // here, where each would commit on its own; they wait for the next batch.
                lost = Some(ran.failed.unwrap_or_else(|| {
                    StoreError::Backend("the transaction was rolled back".into())
                }));
                break;
            }
            if replies.len() < MAX_BATCH {
                next = jobs.try_recv().ok();
            }
        }
        let committed = match lost {
            Some(cause) => Err(StoreError::Backend(format!(
                "the write was rolled back with its batch after another write failed: {cause}"
            ))),
            None => conn
                .prepare_cached("COMMIT")
                .and_then(|mut s| s.execute([]))
                .map(|_| ())
                .map_err(StoreError::from),
        };
        if committed.is_err() {
            events::forget_fan_out_targets();
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
        }
        // Before the replies: whoever is answered may read the feed at once.
        let appended = feed::take_appended();
        if committed.is_ok() {
            for tenant in appended {
                signals.events_appended(crate::signals::Appended::To(tenant));
            }
        }
        for reply in replies {
            reply(committed.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Tenant, TenantStore};
    use herald_core::ids::TenantId;
    use herald_core::Timestamp;

    fn tenant(name: String) -> Tenant {
        Tenant {
            id: TenantId::generate(),
            name,
            created_at: Timestamp(1_775_834_400_000),
        }
    }

    /// Whether each tenant is in the database, read through a freshly opened store.
    async fn stored_after_reopen(path: &Path, ids: &[TenantId]) -> Vec<bool> {
        let store = SqliteStore::open(path).unwrap();
        let mut found = Vec::with_capacity(ids.len());
        for id in ids {
            found.push(match store.get_tenant(*id).await {
                Ok(_) => true,
                Err(StoreError::NotFound) => false,
                Err(e) => panic!("reading {id} back: {e}"),
            });
        }
        found
    }

    /// SQLite answers `SQLITE_FULL` mid-batch and rolls the whole transaction back: the
    /// writes of that batch that ran before it are gone, those queued after it must not
    /// run outside a transaction. Every caller told `Ok` finds its row after a reopen;
    /// every caller told `Err` finds none.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_full_disk_fails_exactly_the_writes_that_did_not_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.db");
        let store = Arc::new(SqliteStore::open(&path).unwrap());
        // Room for a few dozen more pages on the writer's connection, then SQLITE_FULL.
        store
            .write(|conn| {
                let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
                let max: i64 = conn.query_row(
                    &format!("PRAGMA max_page_count = {}", pages + 30),
                    [],
                    |r| r.get(0),
                )?;
                assert_eq!(max, pages + 30);
                Ok(())
            })
            .await
            .unwrap();

        let mut outcomes: Vec<(TenantId, StoreResult<Tenant>)> = Vec::new();
        for wave in 0..8 {
            // Concurrent writers, so batches hold many jobs: big rows that soon do not
            // fit, and small ones that may still fit in what is left.
            let calls: Vec<_> = (0..64)
                .map(|i| {
                    let size = if (i + wave) % 3 == 0 { 20 } else { 1500 };
                    let t = tenant("x".repeat(size));
                    let id = t.id;
                    let store = store.clone();
                    (
                        id,
                        tokio::spawn(async move { store.create_tenant(t).await }),
                    )
                })
                .collect();
            for (id, call) in calls {
                outcomes.push((id, call.await.unwrap()));
            }
        }
        let ok = outcomes.iter().filter(|(_, r)| r.is_ok()).count();
        let batch_rolled_back = outcomes
            .iter()
            .filter(|(_, r)| {
                matches!(r, Err(StoreError::Backend(m)) if m.contains("rolled back with its batch"))
            })
            .count();
        let full = outcomes
            .iter()
            .filter(|(_, r)| matches!(r, Err(StoreError::Backend(m)) if m.contains("full")))
            .count();
        assert!(ok > 0, "some writes fit before the disk filled up");
        assert!(full > 0, "some writes hit SQLITE_FULL");
        assert!(
            batch_rolled_back > 0,
            "some writes were undone with their batch (ok {ok}, full {full})"
        );
        drop(store);

        let ids: Vec<TenantId> = outcomes.iter().map(|(id, _)| *id).collect();
        let found = stored_after_reopen(&path, &ids).await;
        for ((id, result), found) in outcomes.iter().zip(found) {
            match result {
                Ok(_) => assert!(found, "{id} was acknowledged but is not stored"),
                Err(e) => assert!(!found, "{id} was answered {e:?} but is stored"),
            }
        }
    }

    /// A transaction that cannot begin (another connection holds the write lock past the
    /// busy timeout) runs no job: the caller gets the error and the write is not made;
    /// once the lock is gone the writer carries on.
    #[tokio::test]
    async fn a_transaction_that_cannot_begin_runs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.db");
        let store = SqliteStore::open(&path).unwrap();
        store
            .write(|conn| Ok(conn.busy_timeout(std::time::Duration::from_millis(50))?))
            .await
            .unwrap();
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let refused = tenant("refused".into());
        let err = store.create_tenant(refused.clone()).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Backend(m) if m.contains("locked")),
            "{err:?}"
        );
        other.execute_batch("ROLLBACK").unwrap();
        let accepted = tenant("accepted".into());
        store.create_tenant(accepted.clone()).await.unwrap();
        drop(store);
        assert_eq!(
            stored_after_reopen(&path, &[refused.id, accepted.id]).await,
            [false, true]
        );
    }

    /// Reads run on blocking threads, which cannot be cancelled: a read whose caller gave
    /// up (its request timed out, its future dropped) before it started must not run, and
    /// reads may not pile up without bound behind busy ones (say many `GET /stats` at
    /// once): past the bound, a read is refused at once with `Overloaded` (503), while
    /// point reads by key still answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_are_bounded_and_an_abandoned_one_never_runs() {
        use std::sync::atomic::AtomicBool;
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("herald.db")).unwrap());
        // Every read slot busy with a read held on a latch.
        let (release, latch) = std::sync::mpsc::channel::<()>();
        let latch = Arc::new(Mutex::new(latch));
        let running = Arc::new(AtomicUsize::new(0));
        let mut busy = Vec::new();
        for _ in 0..MAX_READS {
            let (store, latch, running) = (store.clone(), latch.clone(), running.clone());
            busy.push(tokio::spawn(async move {
                store
                    .read(move |_| {
                        running.fetch_add(1, Ordering::SeqCst);
                        let _ = latch.lock().unwrap().recv();
                        Ok(())
                    })
                    .await
            }));
        }
        while running.load(Ordering::SeqCst) < MAX_READS {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // A read that waits, and whose caller then gives up.
        let ran = Arc::new(AtomicBool::new(false));
        let abandoned = {
            let (store, ran) = (store.clone(), ran.clone());
            tokio::spawn(async move {
                store
                    .read(move |_| {
                        ran.store(true, Ordering::SeqCst);
                        Ok(())
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        abandoned.abort();
        let _ = abandoned.await;
        // Reads that wait, up to the bound; one more is refused.
        let mut waiting = Vec::new();
        for _ in 0..MAX_WAITING_READS {
            let store = store.clone();
            waiting.push(tokio::spawn(async move { store.read(|_| Ok(())).await }));
        }
        for _ in 0..400 {
            if store.readers.waiting.load(Ordering::SeqCst) >= MAX_WAITING_READS {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let past = tokio::time::timeout(Duration::from_secs(5), store.read(|_| Ok(()))).await;
        assert!(
            matches!(past, Ok(Err(StoreError::Overloaded))),
            "a read past the bound: {past:?}"
        );
        // Point reads by key (an API key, a tenant: every request needs them) do not
        // queue behind the busy reads.
        assert!(matches!(
            store.get_tenant(TenantId::generate()).await,
            Err(StoreError::NotFound)
        ));
        for _ in 0..MAX_READS {
            release.send(()).unwrap();
        }
        for read in busy.into_iter().chain(waiting) {
            read.await.unwrap().unwrap();
        }
        assert!(
            !ran.load(Ordering::SeqCst),
            "the abandoned read ran after its caller had gone"
        );
    }
}
