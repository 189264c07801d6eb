//! Group commit for `POST /events` on PostgreSQL: requests queue up, and a few writer
//! tasks each take whatever is queued and store it in one transaction of set-based
//! statements, so many events share the round trips and the WAL flush of one commit.
//!
//! Guarantees are those of one event per transaction: an answer goes out only after its
//! batch has committed; event ids and idempotency keys dedupe across nodes (the same
//! advisory lock and `ON CONFLICT` waits as before); per-key sequences and route
//! `line_seq`s are drawn under the key's row lock, held to commit. A request that is
//! refused (an id or key reused with another body) changes nothing and does not fail the
//! others; a batch that fails as a whole is run again one request per transaction, so a
//! request is only ever failed by its own transaction.

use super::rows::{self, EVENT_COLUMNS};
use super::{is_transient, Note};
use crate::fanout::{self, PatternCache, Target, To};
use crate::lines;
use crate::model::*;
use crate::rules;
use crate::{Signals, StoreError, StoreResult};
use deadpool_postgres::{Pool, Transaction};
use herald_core::event::Event;
use herald_core::ids::*;
use herald_core::webhook::Ordering;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Mutex};

/// Writer tasks per node. Each holds one pooled connection while it stores a batch; more
/// than one lets a batch gather while another waits for its commit's flush.
const WRITERS: usize = 4;
/// Events one transaction takes at most.
const MAX_BATCH: usize = 512;

type Reply = oneshot::Sender<StoreResult<Created<Event>>>;

/// One `insert_event` call waiting for its batch.
pub(crate) struct EventJob {
    pub event: NewEvent,
    pub idempotency: Option<Idempotency>,
    /// The broker routes in force when the request came in.
    pub routes: Arc<Vec<OutboxRoute>>,
    pub reply: Reply,
}

/// The queue in front of the writer tasks; they stop when it is dropped. It is bounded:
/// a job past its bound is refused at once with [`StoreError::Overloaded`].
pub(crate) struct EventWriter {
    queue: mpsc::Sender<EventJob>,
}

impl EventWriter {
    /// `bound`: jobs that may wait (besides the batches being stored), at least 1.
    pub fn start(
        pool: Pool,
        signals: Arc<Signals>,
        notes: mpsc::UnboundedSender<Note>,
        bound: usize,
    ) -> (Self, Vec<tokio::task::JoinHandle<()>>) {
        let (queue, jobs) = mpsc::channel(bound.max(1));
        let jobs = Arc::new(Mutex::new(jobs));
        let tasks = (0..WRITERS)
            .map(|_| {
                tokio::spawn(writer_loop(
                    pool.clone(),
                    jobs.clone(),
                    signals.clone(),
                    notes.clone(),
                ))
            })
            .collect();
        (Self { queue }, tasks)
    }

    /// Queues `job`; its reply comes once its batch has committed (or failed). A full
    /// queue refuses it at once ([`StoreError::Overloaded`]): it never runs.
    pub fn submit(&self, job: EventJob) -> StoreResult<()> {
        self.queue.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => StoreError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => {
                StoreError::Backend("the event writer has stopped".into())
            }
        })
    }
}

async fn writer_loop(
    pool: Pool,
    jobs: Arc<Mutex<mpsc::Receiver<EventJob>>>,
    signals: Arc<Signals>,
    notes: mpsc::UnboundedSender<Note>,
) {
    let mut patterns = PatternCache::default();
    // Jobs that share an id or idempotency key with one in the batch before go in the next.
    let mut held: Vec<EventJob> = Vec::new();
    loop {
        let mut batch = std::mem::take(&mut held);
        if !super::take_batch(&jobs, &mut batch, MAX_BATCH).await {
            return;
        }
        // A job whose caller is gone (its request timed out or was dropped) is not stored.
        batch.retain(|job| !job.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let (batch, later) = split_repeats(batch);
        held = later;
        let (made, appended) = run(&pool, batch, &mut patterns).await;
        for tenant in appended {
            signals.events_appended(crate::signals::Appended::To(tenant));
            let _ = notes.send(Note::Appended(tenant));
        }
        // Only the engine whose deliveries were made looks for them: an outbox claim (and
        // its next-due read) per batch of webhook-only events was a third of the server's
        // planning time at low rates.
        let (webhooks, routes) = (made.webhooks > 0, made.routes > 0);
        signals.deliveries_made(webhooks, routes);
        if webhooks || routes {
            let _ = notes.send(Note::Due { webhooks, routes });
        }
    }
}

/// Keeps the first job of each event id and idempotency key; the rest wait for the next
/// batch, where they find what the first stored.
fn split_repeats(batch: Vec<EventJob>) -> (Vec<EventJob>, Vec<EventJob>) {
    let mut ids = HashSet::new();
    let mut keys = HashSet::new();
    let (mut now, mut later) = (Vec::with_capacity(batch.len()), Vec::new());
    for job in batch {
        let key = job
            .idempotency
            .as_ref()
            .map(|i| (i.scope.clone(), i.key.clone()));
        let repeat = ids.contains(&job.event.id) || key.as_ref().is_some_and(|k| keys.contains(k));
        if repeat {
            later.push(job);
        } else {
            ids.insert(job.event.id);
            if let Some(k) = key {
                keys.insert(k);
            }
            now.push(job);
        }
    }
    (now, later)
}

/// The tenants (or none) of the events a batch stored.
type Appended = std::collections::BTreeSet<Option<TenantId>>;

/// How many deliveries an event (or a batch) made, of each kind.
#[derive(Clone, Copy, Default)]
struct Made {
    webhooks: usize,
    routes: usize,
}

impl std::ops::Add for Made {
    type Output = Made;
    fn add(self, other: Made) -> Made {
        Made {
            webhooks: self.webhooks + other.webhooks,
            routes: self.routes + other.routes,
        }
    }
}

/// Stores `batch` and answers each job. Returns the deliveries made, and the tenants whose
/// events were stored.
async fn run(pool: &Pool, batch: Vec<EventJob>, patterns: &mut PatternCache) -> (Made, Appended) {
    let mut tries = 0;
    let outcome = loop {
        match store_batch(pool, &batch, patterns).await {
            Err(e) if tries < 3 && is_transient(&e) => tries += 1,
            other => break other,
        }
    };
    match outcome {
        Ok(stored) => {
            let made = stored.iter().fold(Made::default(), |sum, (_, m)| sum + *m);
            let appended = stored
                .iter()
                .filter_map(|(r, _)| match r {
                    Ok(Created::New(e)) => Some(e.tenant),
                    _ => None,
                })
                .collect();
            for (job, (result, _)) in batch.into_iter().zip(stored) {
                let _ = job.reply.send(result);
            }
            (made, appended)
        }
        Err(e) if batch.len() == 1 => {
            for job in batch {
                let _ = job.reply.send(Err(e.clone()));
            }
            (Made::default(), Appended::new())
        }
        Err(e) => {
            // Whatever failed, it takes down only the request that caused it.
            tracing::warn!(error = %e, events = batch.len(), "an event batch failed; storing its events one by one");
            let (mut made, mut appended) = (Made::default(), Appended::new());
            for job in batch {
                let (m, a) = Box::pin(run(pool, vec![job], patterns)).await;
                made = made + m;
                appended.extend(a);
            }
            (made, appended)
        }
    }
}

/// Per job: its answer and how many deliveries it made.
type Stored = Vec<(StoreResult<Created<Event>>, Made)>;

/// One transaction for the whole batch; rolled back (and nothing answered) on any error.
async fn store_batch(
    pool: &Pool,
    batch: &[EventJob],
    patterns: &mut PatternCache,
) -> StoreResult<Stored> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    match store_in(&tx, batch, patterns).await {
        Ok(stored) => {
            tx.commit().await?;
            Ok(stored)
        }
        Err(e) => {
            // Rolled back before the connection returns to the pool (see `in_tx!`).
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

async fn query(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> StoreResult<Vec<tokio_postgres::Row>> {
    let stmt = tx.prepare_cached(sql).await?;
    Ok(tx.query(&stmt, params).await?)
}

/// The batch's new events, column by column (for `unnest`).
#[derive(Default)]
struct EventColumns {
    id: Vec<String>,
    tenant: Vec<Option<String>>,
    ty: Vec<String>,
    key: Vec<Option<String>>,
    seq: Vec<Option<i64>>,
    data: Vec<String>,
    hash: Vec<String>,
    at: Vec<i64>,
}

/// Their deliveries, column by column.
#[derive(Default)]
struct DeliveryColumns {
    id: Vec<String>,
    event: Vec<String>,
    webhook: Vec<Option<String>>,
    route: Vec<Option<String>>,
    key: Vec<Option<String>>,
    /// The event's sequence, on an ordered webhook's delivery.
    seq: Vec<Option<i64>>,
    /// No due time yet: an ordered webhook's delivery, made due below if it heads its line.
    held: Vec<bool>,
    tenant: Vec<Option<String>>,
    ty: Vec<String>,
    at: Vec<i64>,
}

/// What became of one job so far.
enum Fate {
    /// Still to be stored as a new event.
    Store,
    /// Its idempotency key names this earlier event.
    ExistingKey(String),
    Done(StoreResult<Created<Event>>),
}

async fn store_in(
    tx: &Transaction<'_>,
    batch: &[EventJob],
    patterns: &mut PatternCache,
) -> StoreResult<Stored> {
    let mut fate: Vec<Fate> = batch.iter().map(|_| Fate::Store).collect();
    let ids: Vec<String> = batch.iter().map(|j| j.event.id.to_string()).collect();

    // 1. Idempotency keys: claimed in one statement, in one order on every node, so two
    //    batches never wait for each other's keys crosswise. A concurrent request with the
    //    same key (on any node) waits here until the first commits.
    let mut claimed: HashSet<(String, String)> = HashSet::new();
    let with_key: Vec<usize> = (0..batch.len())
        .filter(|&i| batch[i].idempotency.is_some())
        .collect();
    if !with_key.is_empty() {
        let idem = |i: usize| batch[i].idempotency.as_ref().expect("filtered on Some");
        let scopes: Vec<&str> = with_key.iter().map(|&i| idem(i).scope.as_str()).collect();
        let keys: Vec<&str> = with_key.iter().map(|&i| idem(i).key.as_str()).collect();
        let hashes: Vec<&str> = with_key
            .iter()
            .map(|&i| idem(i).request_hash.as_str())
            .collect();
        let resources: Vec<&str> = with_key.iter().map(|&i| ids[i].as_str()).collect();
        let at: Vec<i64> = with_key
            .iter()
            .map(|&i| batch[i].event.created_at.0)
            .collect();
        for row in query(
            tx,
            "INSERT INTO idempotency_keys (scope, key, request_hash, resource_id, created_at) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[]) \
             AS u(scope, key, request_hash, resource_id, created_at) ORDER BY scope, key \
             ON CONFLICT (scope, key) DO NOTHING RETURNING scope, key",
            &[&scopes, &keys, &hashes, &resources, &at],
        )
        .await?
        {
            claimed.insert((row.try_get(0)?, row.try_get(1)?));
        }
        let taken: Vec<usize> = with_key
            .iter()
            .copied()
            .filter(|&i| !claimed.contains(&(idem(i).scope.clone(), idem(i).key.clone())))
            .collect();
        if !taken.is_empty() {
            let scopes: Vec<&str> = taken.iter().map(|&i| idem(i).scope.as_str()).collect();
            let keys: Vec<&str> = taken.iter().map(|&i| idem(i).key.as_str()).collect();
            let mut earlier: HashMap<(String, String), (String, String)> = HashMap::new();
            for row in query(
                tx,
                "SELECT scope, key, request_hash, resource_id FROM idempotency_keys \
                 WHERE (scope, key) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
                &[&scopes, &keys],
            )
            .await?
            {
                earlier.insert(
                    (row.try_get(0)?, row.try_get(1)?),
                    (row.try_get(2)?, row.try_get(3)?),
                );
            }
            for i in taken {
                let idem = idem(i);
                fate[i] = match earlier.get(&(idem.scope.clone(), idem.key.clone())) {
                    None => Fate::Done(Err(StoreError::Backend("idempotency key vanished".into()))),
                    Some((hash, _)) if *hash != idem.request_hash => {
                        Fate::Done(Err(StoreError::IdempotencyMismatch))
                    }
                    Some((_, resource)) => Fate::ExistingKey(resource.clone()),
                };
            }
        }
    }

    // 2. Two nodes given the same event id at once: the second waits here, then finds it.
    //    Locks are taken in hash order, the same on every node.
    let fresh: Vec<usize> = (0..batch.len())
        .filter(|&i| matches!(fate[i], Fate::Store))
        .collect();
    let fresh_ids: Vec<&str> = fresh.iter().map(|&i| ids[i].as_str()).collect();
    if !fresh_ids.is_empty() {
        query(
            tx,
            "SELECT pg_advisory_xact_lock(h) FROM (SELECT DISTINCT hashtextextended(id, 0) AS h \
             FROM unnest($1::text[]) AS u(id) ORDER BY h) AS locks",
            &[&fresh_ids],
        )
        .await?;
    }

    // 3. Events already stored under these ids (retries), or named by idempotency keys;
    //    and the webhooks of the batch's tenants, in the same round trip (pipelined).
    let mut wanted: Vec<&str> = fresh_ids.clone();
    for f in &fate {
        if let Fate::ExistingKey(id) = f {
            wanted.push(id.as_str());
        }
    }
    let tenants: Vec<String> = {
        let set: HashSet<String> = fresh
            .iter()
            .filter_map(|&i| batch[i].event.tenant.map(|t| t.to_string()))
            .collect();
        set.into_iter().collect()
    };
    let no_tenant = fresh.iter().any(|&i| batch[i].event.tenant.is_none());
    // `request_hash` last, so the row reads as `rows::event` expects.
    let existing_sql =
        format!("SELECT {EVENT_COLUMNS}, request_hash FROM events WHERE id = ANY($1)");
    let existing = async {
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        query(tx, &existing_sql, &[&wanted]).await
    };
    let webhooks = async {
        if fresh.is_empty() {
            return Ok(Vec::new());
        }
        query(
            tx,
            "SELECT id, tenant_id, events, ordering, filter FROM webhooks WHERE NOT deleted AND NOT disabled \
             AND (tenant_id = ANY($1) OR ($2 AND tenant_id IS NULL))",
            &[&tenants, &no_tenant],
        )
        .await
    };
    let (existing, webhooks) = futures::try_join!(existing, webhooks)?;
    let mut found: HashMap<String, (String, tokio_postgres::Row)> = HashMap::new();
    for row in existing {
        let id: String = row.try_get(0)?;
        let hash: String = row.try_get(7)?;
        found.insert(id, (hash, row));
    }
    let event_of = rows::event;
    let mut unclaim: Vec<usize> = Vec::new();
    for i in 0..batch.len() {
        match &fate[i] {
            Fate::ExistingKey(resource) => {
                fate[i] = Fate::Done(match found.get(resource) {
                    Some((_, row)) => event_of(row).map(Created::Existing),
                    None => Err(StoreError::NotFound),
                });
            }
            Fate::Store => {
                if let Some((hash, row)) = found.get(&ids[i]) {
                    fate[i] = Fate::Done(if *hash != batch[i].event.request_hash {
                        // Refused: the key this request claimed above is given back.
                        if batch[i].idempotency.is_some() {
                            unclaim.push(i);
                        }
                        Err(StoreError::IdempotencyMismatch)
                    } else {
                        event_of(row).map(Created::Existing)
                    });
                }
            }
            Fate::Done(_) => {}
        }
    }
    if !unclaim.is_empty() {
        let idem = |i: usize| batch[i].idempotency.as_ref().expect("pushed when Some");
        let scopes: Vec<&str> = unclaim.iter().map(|&i| idem(i).scope.as_str()).collect();
        let keys: Vec<&str> = unclaim.iter().map(|&i| idem(i).key.as_str()).collect();
        query(
            tx,
            "DELETE FROM idempotency_keys WHERE (scope, key) IN \
             (SELECT * FROM unnest($1::text[], $2::text[]))",
            &[&scopes, &keys],
        )
        .await?;
    }
    let new: Vec<usize> = (0..batch.len())
        .filter(|&i| matches!(fate[i], Fate::Store))
        .collect();
    let mut stored: Stored = Vec::with_capacity(batch.len());
    if new.is_empty() {
        for f in fate {
            match f {
                Fate::Done(r) => stored.push((r, Made::default())),
                _ => unreachable!("every job without a new event is done"),
            }
        }
        return Ok(stored);
    }

    // 4. Sequences: one upsert per (tenant, key), by the number of the batch's events with
    //    it; they are numbered in batch order. The row lock is held to commit, so a key's
    //    sequences (and route lines) commit in order, across nodes too.
    let tenant_text = |i: usize| batch[i].event.tenant.map(|t| t.to_string());
    let mut per_key: Vec<((String, String), i64)> = Vec::new();
    let mut key_index: HashMap<(String, String), usize> = HashMap::new();
    for &i in &new {
        if let Some(key) = &batch[i].event.key {
            let k = (tenant_text(i).unwrap_or_default(), key.clone());
            match key_index.get(&k) {
                Some(&at) => per_key[at].1 += 1,
                None => {
                    key_index.insert(k.clone(), per_key.len());
                    per_key.push((k, 1));
                }
            }
        }
    }
    let mut next_sequence: HashMap<(String, String), i64> = HashMap::new();
    if !per_key.is_empty() {
        let t: Vec<&str> = per_key.iter().map(|((t, _), _)| t.as_str()).collect();
        let k: Vec<&str> = per_key.iter().map(|((_, k), _)| k.as_str()).collect();
        let n: Vec<i64> = per_key.iter().map(|(_, n)| *n).collect();
        for row in query(
            tx,
            "INSERT INTO event_keys (tenant_id, key, last_sequence) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::int8[]) AS u(tenant_id, key, n) \
             ORDER BY tenant_id, key \
             ON CONFLICT (tenant_id, key) DO UPDATE SET last_sequence = event_keys.last_sequence + excluded.last_sequence \
             RETURNING tenant_id, key, last_sequence",
            &[&t, &k, &n],
        )
        .await?
        {
            let k = (row.try_get::<_, String>(0)?, row.try_get::<_, String>(1)?);
            let last: i64 = row.try_get(2)?;
            let count = per_key[key_index[&k]].1;
            next_sequence.insert(k, last - count + 1);
        }
    }

    // 5. The events and their deliveries (webhooks, then broker routes), two statements
    //    sent together.
    let targets = targets(patterns, &webhooks)?;
    let mut events: Vec<Event> = Vec::with_capacity(new.len());
    let mut fanned: Vec<Made> = Vec::with_capacity(new.len());
    let mut ev = EventColumns::default();
    let mut dv = DeliveryColumns::default();
    for &i in &new {
        let e = &batch[i].event;
        let tenant = tenant_text(i);
        let sequence = match &e.key {
            Some(key) => {
                let k = (tenant.clone().unwrap_or_default(), key.clone());
                let seq = next_sequence.get_mut(&k).ok_or_else(|| {
                    StoreError::Backend("no sequence returned for an event key".into())
                })?;
                *seq += 1;
                Some(*seq - 1)
            }
            None => None,
        };
        ev.id.push(ids[i].clone());
        ev.tenant.push(tenant.clone());
        ev.ty.push(e.event_type.clone());
        ev.key.push(e.key.clone());
        ev.seq.push(sequence);
        ev.data.push(serde_json::to_string(&e.data)?);
        ev.hash.push(e.request_hash.clone());
        ev.at.push(e.created_at.0);
        let event = rules::stored_event(e.clone(), sequence);
        let planned = fanout::plan(&event, &targets, &batch[i].routes);
        for p in &planned {
            dv.id.push(p.id.to_string());
            dv.event.push(ids[i].clone());
            match &p.to {
                To::Webhook {
                    webhook,
                    ordering_key,
                } => {
                    dv.webhook.push(Some(webhook.to_string()));
                    dv.route.push(None);
                    dv.key.push(ordering_key.clone());
                    dv.seq.push(ordering_key.as_ref().and(sequence));
                    dv.held.push(ordering_key.is_some());
                }
                To::Route { name, ordering_key } => {
                    dv.webhook.push(None);
                    dv.route.push(Some(name.to_string()));
                    dv.key.push(ordering_key.clone());
                    dv.seq.push(None);
                    dv.held.push(false);
                }
            }
            dv.tenant.push(tenant.clone());
            dv.ty.push(e.event_type.clone());
            dv.at.push(e.created_at.0);
        }
        let webhooks = planned
            .iter()
            .filter(|p| matches!(p.to, To::Webhook { .. }))
            .count();
        events.push(event);
        fanned.push(Made {
            webhooks,
            routes: planned.len() - webhooks,
        });
    }
    let insert_events = async {
        query(
            tx,
            "INSERT INTO events (id, tenant_id, type, key, sequence, data, request_hash, created_at) \
             SELECT i, t, ty, k, s, d, h, at FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], \
             $5::int8[], $6::text[], $7::text[], $8::int8[]) WITH ORDINALITY AS u(i, t, ty, k, s, d, h, at, n) \
             ORDER BY n",
            &[&ev.id, &ev.tenant, &ev.ty, &ev.key, &ev.seq, &ev.data, &ev.hash, &ev.at],
        )
        .await
    };
    // `line_seq` is drawn row by row in this order: a key's route deliveries in sequence order.
    let insert_deliveries = async {
        if dv.id.is_empty() {
            return Ok(Vec::new());
        }
        query(
            tx,
            "INSERT INTO deliveries (id, event_id, webhook_id, route, ordering_key, tenant_id, event_type, \
             event_created_at, status, next_attempt_at, created_at, updated_at, sequence) \
             SELECT d, e, w, r, k, t, ty, at, 'pending', CASE WHEN h THEN NULL ELSE at END, at, at, s \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
             $8::int8[], $9::int8[], $10::bool[]) WITH ORDINALITY \
             AS u(d, e, w, r, k, t, ty, at, s, h, n) ORDER BY n",
            &[
                &dv.id, &dv.event, &dv.webhook, &dv.route, &dv.key, &dv.tenant, &dv.ty, &dv.at, &dv.seq,
                &dv.held,
            ],
        )
        .await
    };
    futures::try_join!(insert_events, insert_deliveries)?;
    // Ordered webhooks' deliveries were stored held; those that head their line (no earlier
    // delivery of their webhook and key is pending or failed) are due now. This
    // transaction holds its keys' `event_keys` rows, so no other writer adds to these lines
    // meanwhile (a head finished on another node meanwhile is the reaper's sweep's to see).
    let ordered: Vec<&String> = dv
        .id
        .iter()
        .zip(&dv.held)
        .filter_map(|(id, held)| held.then_some(id))
        .collect();
    if !ordered.is_empty() {
        query(
            tx,
            &format!(
                "UPDATE deliveries SET next_attempt_at = event_created_at WHERE id = ANY($1) AND {} AND {}",
                lines::WEBHOOK_HEAD,
                lines::WEBHOOK_LIVE
            ),
            &[&ordered],
        )
        .await?;
    }

    let mut events = events.into_iter().zip(fanned);
    for f in fate {
        stored.push(match f {
            Fate::Done(r) => (r, Made::default()),
            Fate::Store => {
                let (event, count) = events.next().expect("one stored event per new job");
                (Ok(Created::New(event)), count)
            }
            Fate::ExistingKey(_) => unreachable!("resolved above"),
        });
    }
    Ok(stored)
}

/// The writer task's pattern cache, reading this batch's webhook rows (`id, tenant_id,
/// events, ordering, filter`): which webhooks exist is read afresh in every batch (another node may have
/// changed them), only their parse is kept.
fn targets(cache: &mut PatternCache, rows: &[tokio_postgres::Row]) -> StoreResult<Vec<Target>> {
    cache.trim();
    rows.iter()
        .map(|row| {
            let tenant: Option<String> = row.try_get(1)?;
            let tenant = tenant
                .as_deref()
                .map(|t| rows::parse_id(t, TenantId::parse))
                .transpose()?;
            let ordering: Option<String> = row.try_get(3)?;
            let ordered = ordering.as_deref() == Some(Ordering::Key.as_str());
            cache.target(
                row.try_get(0)?,
                tenant,
                row.try_get(2)?,
                row.try_get(4)?,
                ordered,
            )
        })
        .collect()
}
