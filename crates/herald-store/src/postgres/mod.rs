//! The backend for many nodes: PostgreSQL with `synchronous_commit=on`, a connection pool,
//! claims with `FOR UPDATE SKIP LOCKED` and leases, and `LISTEN/NOTIFY` wake-ups.
//!
//! Every write is one transaction; PostgreSQL flushes the WAL of concurrent commits
//! together, so many requests still share an fsync. After a change others may be waiting
//! for commits, the node's notifier sends a `NOTIFY` (batched, outside the data's
//! transaction); a listener connection per node turns those into local [`Signals`].

mod deliveries;
mod event_writer;
mod events;
mod feed;
mod migrations;
mod operations;
mod outbox;
mod point_reader;
mod portal;
mod rows;
mod sql;
mod stats;
mod tenants;
mod webhooks;

use crate::{Signals, StoreError, StoreResult};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures::StreamExt;
use herald_core::ids::{OperationId, TenantId};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

/// Connections each node keeps in its pool (plus one for `LISTEN`).
pub const DEFAULT_POOL_SIZE: usize = 16;
/// `insert_event` calls that may wait for the event writer tasks (besides the batches
/// being stored) unless [`PgStore::connect_with_queues`] says otherwise; one more is
/// refused with [`StoreError::Overloaded`].
pub const DEFAULT_WRITE_QUEUE: usize = 4096;
/// `get_operation` look-ups that may wait for the reader tasks, likewise.
pub const DEFAULT_READ_QUEUE: usize = 4096;

/// Notification channels, one per kind of wake-up in [`Signals`].
pub(crate) mod channel {
    /// Payload: the operation id.
    pub const OPERATION_CHANGED: &str = "herald_operation_changed";
    pub const OPERATIONS_QUEUED: &str = "herald_operations_queued";
    pub const DELIVERIES_DUE: &str = "herald_deliveries_due";
    pub const EVENT_TYPES_CHANGED: &str = "herald_event_types_changed";
    pub const EVENTS_APPENDED: &str = "herald_events_appended";
}

pub struct PgStore {
    pool: Pool,
    signals: Arc<Signals>,
    /// Wake-ups for the other nodes, sent by the notifier task.
    notes: mpsc::UnboundedSender<Note>,
    /// Turns other nodes' notifications into local wake-ups; stopped when the store drops.
    listener: tokio::task::JoinHandle<()>,
    notifier: tokio::task::JoinHandle<()>,
    /// Group-commits `insert_event` calls (see [`event_writer`]).
    pub(crate) events: event_writer::EventWriter,
    /// Batches `get_operation` look-ups (see [`point_reader`]).
    pub(crate) operations: point_reader::OperationReader,
    /// The event writer's and the operation reader's tasks.
    batchers: Vec<tokio::task::JoinHandle<()>>,
    /// Broker routes from config, read by every write that may store an event.
    pub(crate) routes: std::sync::RwLock<Arc<Vec<crate::OutboxRoute>>>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listener.abort();
        self.notifier.abort();
        for task in &self.batchers {
            task.abort();
        }
    }
}

/// A wake-up another node may be waiting for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Note {
    Changed(OperationId),
    Queued,
    /// Deliveries may have become due: for webhooks, for broker routes, or both.
    Due {
        webhooks: bool,
        routes: bool,
    },
    EventTypes,
    /// Events of this tenant (or of none) committed: feed long polls on other nodes read again.
    Appended(Option<TenantId>),
}

/// Sends queued wake-ups as `NOTIFY`, everything queued at once, after the changes they
/// announce have committed.
///
/// Not inside the data's transaction: PostgreSQL serialises the commits of transactions
/// that notify (a cluster-wide lock held until the commit is done), which would keep
/// concurrent requests from sharing a WAL flush. A notification is only a hint (every
/// waiter also has a timer), so its own transaction commits with `synchronous_commit=off`
/// and waits for no fsync.
///
/// `node` names this node in the deliveries' wake-up (`<node>:w`, `:r` or `:wr`, for the
/// engines concerned), so its own listener skips what its signals have already said.
async fn notify_loop(pool: Pool, mut notes: mpsc::UnboundedReceiver<Note>, node: String) {
    while let Some(first) = notes.recv().await {
        let mut changed = std::collections::BTreeSet::new();
        let (mut queued, mut event_types) = (false, false);
        let (mut webhooks_due, mut routes_due) = (false, false);
        let mut appended = std::collections::BTreeSet::new();
        let mut note = Some(first);
        while let Some(n) = note {
            match n {
                Note::Changed(id) => {
                    changed.insert(id.to_string());
                }
                Note::Queued => queued = true,
                Note::Due { webhooks, routes } => {
                    webhooks_due |= webhooks;
                    routes_due |= routes;
                }
                Note::EventTypes => event_types = true,
                Note::Appended(tenant) => {
                    appended.insert(tenant.map(|t| t.to_string()).unwrap_or_default());
                }
            }
            note = notes.try_recv().ok();
        }
        // Ids (a prefix and a ULID) and channel names are `[A-Za-z0-9_]`: safe to inline.
        let mut sql = String::from("BEGIN; SET LOCAL synchronous_commit = off;");
        for id in &changed {
            sql.push_str(&format!(
                " SELECT pg_notify('{}', '{id}');",
                channel::OPERATION_CHANGED
            ));
        }
        if queued {
            sql.push_str(&format!(
                " SELECT pg_notify('{}', '');",
                channel::OPERATIONS_QUEUED
            ));
        }
        if webhooks_due || routes_due {
            let kinds = match (webhooks_due, routes_due) {
                (true, true) => "wr",
                (true, false) => "w",
                _ => "r",
            };
            sql.push_str(&format!(
                " SELECT pg_notify('{}', '{node}:{kinds}');",
                channel::DELIVERIES_DUE
            ));
        }
        if event_types {
            sql.push_str(&format!(
                " SELECT pg_notify('{}', '');",
                channel::EVENT_TYPES_CHANGED
            ));
        }
        // Payload: the tenant id, or empty for events of no tenant.
        for tenant in &appended {
            sql.push_str(&format!(
                " SELECT pg_notify('{}', '{tenant}');",
                channel::EVENTS_APPENDED
            ));
        }
        sql.push_str(" COMMIT;");
        match pool.get().await {
            Ok(client) => {
                if let Err(e) = client.batch_execute(&sql).await {
                    tracing::warn!(error = %e, "notifying other nodes failed; they will catch up on their timers");
                    // It may be left inside the failed transaction: never reuse it.
                    let _ = deadpool_postgres::Object::take(client);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "notifying other nodes failed; they will catch up on their timers")
            }
        }
    }
}

/// Fills `batch` from a queue shared by several tasks: with `batch` empty, waits for one
/// item first; then takes whatever else is queued, up to `max` in all, without waiting.
/// False when the queue has closed (and `batch` was empty).
pub(crate) async fn take_batch<T>(
    queue: &tokio::sync::Mutex<mpsc::Receiver<T>>,
    batch: &mut Vec<T>,
    max: usize,
) -> bool {
    let mut queue = queue.lock().await;
    if batch.is_empty() {
        match queue.recv().await {
            Some(item) => batch.push(item),
            None => return false,
        }
    }
    while batch.len() < max {
        match queue.try_recv() {
            Ok(item) => batch.push(item),
            Err(_) => break,
        }
    }
    true
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => {
                StoreError::Backend(format!("postgres: {} ({})", db.message(), db.code().code()))
            }
            None => StoreError::Backend(format!("postgres: {e}")),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StoreError::Backend(format!("postgres pool: {e}"))
    }
}

/// A deadlock or serialization failure: the transaction was rolled back and may be run again.
pub(crate) fn is_transient(e: &StoreError) -> bool {
    matches!(e, StoreError::Backend(m) if m.ends_with("(40P01)") || m.ends_with("(40001)"))
}

/// Whether `url` names a PostgreSQL database.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

fn parse_config(url: &str) -> StoreResult<tokio_postgres::Config> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| StoreError::Backend(format!("bad PostgreSQL URL: {e}")))?;
    // Durable means fsync'd before the answer, whatever the server's default says.
    config.options("-c synchronous_commit=on");
    if config.get_application_name().is_none() {
        config.application_name("herald");
    }
    config.connect_timeout(Duration::from_secs(10));
    Ok(config)
}

impl PgStore {
    /// Connects to `url`, applies migrations (once, even if several nodes start together)
    /// and starts listening for other nodes' changes.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        Self::connect_with(url, DEFAULT_POOL_SIZE).await
    }

    pub async fn connect_with(url: &str, pool_size: usize) -> StoreResult<Self> {
        Self::connect_with_queues(url, pool_size, DEFAULT_WRITE_QUEUE, DEFAULT_READ_QUEUE).await
    }

    /// [`PgStore::connect_with`], with at most `write_queue` events waiting for the event
    /// writer and `read_queue` look-ups for the operation reader (each at least 1); past
    /// that a call is answered [`StoreError::Overloaded`] and changes nothing.
    pub async fn connect_with_queues(
        url: &str,
        pool_size: usize,
        write_queue: usize,
        read_queue: usize,
    ) -> StoreResult<Self> {
        let config = parse_config(url)?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .build()
            .map_err(|e| StoreError::Backend(format!("postgres pool: {e}")))?;
        let mut client = pool.get().await?;
        migrations::apply(&mut client).await?;
        drop(client);
        let signals = Arc::new(Signals::default());
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        // This node's name in its wake-ups (a ULID: `[0-9A-Z]`, safe to inline).
        let node = ulid::Ulid::new().to_string();
        let listener = tokio::spawn(listen(
            config,
            signals.clone(),
            Some(ready_tx),
            node.clone(),
        ));
        // Listening before the first request is served, so no change is missed at start.
        let _ = ready_rx.await;
        let (notes, queue) = mpsc::unbounded_channel();
        let notifier = tokio::spawn(notify_loop(pool.clone(), queue, node));
        let (events, mut batchers) = event_writer::EventWriter::start(
            pool.clone(),
            signals.clone(),
            notes.clone(),
            write_queue,
        );
        let (operations, readers) = point_reader::OperationReader::start(pool.clone(), read_queue);
        batchers.extend(readers);
        Ok(Self {
            pool,
            signals,
            notes,
            listener,
            notifier,
            events,
            operations,
            batchers,
            routes: Default::default(),
        })
    }

    /// The broker routes in force now.
    pub(crate) fn routes(&self) -> Arc<Vec<crate::OutboxRoute>> {
        self.routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A server setting as this store's connections see it (`synchronous_commit`, say).
    pub async fn setting(&self, name: &str) -> StoreResult<String> {
        let client = self.client().await?;
        Ok(client
            .query_one("SELECT current_setting($1)", &[&name])
            .await?
            .get(0))
    }

    pub(crate) async fn client(&self) -> StoreResult<deadpool_postgres::Client> {
        Ok(self.pool.get().await?)
    }

    pub(crate) fn signals_arc(&self) -> &Arc<Signals> {
        &self.signals
    }

    pub(crate) fn notes(&self) -> &mpsc::UnboundedSender<Note> {
        &self.notes
    }
}

/// A deliveries' wake-up (`<node>:<kinds>`, see [`notify_loop`]) turned into local signals:
/// none for this node's own (its signals fired when it committed), the engines it names for
/// another's, and both for one that names none (an older node's empty payload).
fn deliveries_due(signals: &Signals, node: &str, payload: &str) {
    let kinds = match payload.split_once(':') {
        Some((from, _)) if from == node => return,
        Some((_, kinds)) => kinds,
        None => "",
    };
    let (webhooks, routes) = (kinds.contains('w'), kinds.contains('r'));
    signals.deliveries_made(webhooks || !routes, routes || !webhooks);
}

/// Keeps one connection listening on Herald's channels and reconnects when it drops.
async fn listen(
    config: tokio_postgres::Config,
    signals: Arc<Signals>,
    mut ready: Option<tokio::sync::oneshot::Sender<()>>,
    node: String,
) {
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(AsyncMessage::Notification(n)) => {
                                if tx.send(n).is_err() {
                                    break;
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "the PostgreSQL listener connection failed");
                                break;
                            }
                        }
                    }
                });
                let listening = client
                    .batch_execute(&format!(
                        "LISTEN {}; LISTEN {}; LISTEN {}; LISTEN {}; LISTEN {};",
                        channel::OPERATION_CHANGED,
                        channel::OPERATIONS_QUEUED,
                        channel::DELIVERIES_DUE,
                        channel::EVENT_TYPES_CHANGED,
                        channel::EVENTS_APPENDED
                    ))
                    .await;
                match listening {
                    Ok(()) => {
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(());
                        }
                        // Anything may have changed while we were not listening.
                        signals.operations_queued.notify_waiters();
                        signals.deliveries_changed();
                        signals.event_types_changed();
                        signals.events_appended(crate::signals::Appended::Anything);
                        while let Some(n) = rx.recv().await {
                            match n.channel() {
                                channel::OPERATION_CHANGED => {
                                    if let Ok(id) = OperationId::parse(n.payload()) {
                                        signals.operation_changed(id);
                                    }
                                }
                                channel::OPERATIONS_QUEUED => {
                                    signals.operations_queued.notify_waiters()
                                }
                                channel::DELIVERIES_DUE => {
                                    deliveries_due(&signals, &node, n.payload())
                                }
                                channel::EVENT_TYPES_CHANGED => signals.event_types_changed(),
                                channel::EVENTS_APPENDED => {
                                    let to = match n.payload() {
                                        "" => Some(crate::signals::Appended::To(None)),
                                        t => TenantId::parse(t)
                                            .ok()
                                            .map(|t| crate::signals::Appended::To(Some(t))),
                                    };
                                    signals.events_appended(
                                        to.unwrap_or(crate::signals::Appended::Anything),
                                    );
                                }
                                _ => {}
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "LISTEN failed"),
                }
                driver.abort();
                drop(client);
            }
            Err(e) => tracing::warn!(error = %e, "cannot open the PostgreSQL listener connection"),
        }
        if let Some(ready) = ready.take() {
            // Start anyway: long polls still end at their timeouts, the dispatcher and
            // reaper still wake on their timers; we keep trying to listen.
            let _ = ready.send(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Creates the database `name` through `admin_url` (any database on the same server)
/// and returns the URL of the new one. For tests and first set-up.
pub async fn create_database(admin_url: &str, name: &str) -> StoreResult<String> {
    check_name(name)?;
    let (client, connection) = parse_config(admin_url)?.connect(NoTls).await?;
    let driver = tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await?;
    drop(client);
    let _ = driver.await;
    let mut url = url::Url::parse(admin_url)
        .map_err(|e| StoreError::Backend(format!("bad PostgreSQL URL: {e}")))?;
    url.set_path(&format!("/{name}"));
    Ok(url.to_string())
}

/// Drops the database `name` (closing its connections) through `admin_url`.
pub async fn drop_database(admin_url: &str, name: &str) -> StoreResult<()> {
    check_name(name)?;
    let (client, connection) = parse_config(admin_url)?.connect(NoTls).await?;
    let driver = tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await?;
    drop(client);
    let _ = driver.await;
    Ok(())
}

fn check_name(name: &str) -> StoreResult<()> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(StoreError::Backend(format!(
            "unsafe database name {name:?}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    /// Which engines a deliveries' wake-up with `payload` wakes on the node named "me".
    fn woken(payload: &str) -> (bool, bool) {
        let signals = Signals::default();
        let webhooks = signals.deliveries_due.notified();
        let routes = signals.broker_deliveries_due.notified();
        futures::pin_mut!(webhooks, routes);
        webhooks.as_mut().enable();
        routes.as_mut().enable();
        deliveries_due(&signals, "me", payload);
        (
            webhooks.now_or_never().is_some(),
            routes.now_or_never().is_some(),
        )
    }

    #[test]
    fn a_nodes_own_deliveries_wake_up_is_skipped_and_anothers_wakes_the_engines_it_names() {
        assert_eq!(
            woken("me:wr"),
            (false, false),
            "its own: its signals fired at commit"
        );
        assert_eq!(woken("other:w"), (true, false));
        assert_eq!(woken("other:r"), (false, true));
        assert_eq!(woken("other:wr"), (true, true));
        // An older node's empty payload names no engine: both look.
        assert_eq!(woken(""), (true, true));
        assert_eq!(woken("other:"), (true, true));
    }
}
