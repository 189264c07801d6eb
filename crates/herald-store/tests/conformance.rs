//! One store conformance suite, written once against `&dyn Store` and run for both
//! backends: SQLite (a temp file, always) and PostgreSQL (a fresh database per test,
//! created through `HERALD_TEST_DATABASE_URL` and dropped after; skipped when unset).

use herald_core::auth::Role;
use herald_core::ids::*;
use herald_core::operation::{codes, OperationError, OperationState, Outcome};
use herald_core::pattern::EventPattern;
use herald_core::signing::SignatureFormat;
use herald_core::Timestamp;
use herald_store::postgres::{create_database, drop_database, PgStore};
use herald_store::sqlite::SqliteStore;
use herald_store::*;
use serde_json::{json, Map};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

const T0: Timestamp = Timestamp(1_800_000_000_000);

fn at(secs: i64) -> Timestamp {
    Timestamp(T0.0 + secs * 1000)
}

// ---------------------------------------------------------------- harness

struct Harness {
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
    _db: Option<DropDatabase>,
}

/// Drops a test database when the test ends, passed or not.
struct DropDatabase {
    admin_url: String,
    name: String,
}

impl Harness {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("herald.db")).unwrap();
        Harness {
            store: Arc::new(store),
            _dir: Some(dir),
            _db: None,
        }
    }

    async fn postgres() -> Option<Self> {
        let admin = std::env::var("HERALD_TEST_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())?;
        let name = format!(
            "herald_test_{}",
            ulid::Ulid::new().to_string().to_lowercase()
        );
        let url = create_database(&admin, &name).await.unwrap();
        let db = DropDatabase {
            admin_url: admin,
            name,
        };
        let store = PgStore::connect(&url).await.unwrap();
        Some(Harness {
            store: Arc::new(store),
            _dir: None,
            _db: Some(db),
        })
    }
}

impl Drop for DropDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin_url.clone(), self.name.clone());
        // On a thread of its own: this runs inside the test's runtime.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(drop_database(&admin, &name))
        })
        .join();
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let h = super::Harness::sqlite();
                    super::$name(&*h.store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(h) = super::Harness::postgres().await else {
                        println!("skipped: HERALD_TEST_DATABASE_URL not set");
                        return;
                    };
                    super::$name(&*h.store).await;
                }
            )*
        }
    };
}

conformance!(
    tenants_and_keys,
    event_types_are_upserted,
    operation_create_get_and_list,
    operation_idempotency,
    operation_claim_heartbeat_complete,
    operation_retryable_failure_requeues_until_max_attempts,
    operation_cancel_queued_and_running,
    operation_delete_hides_but_work_goes_on,
    concurrent_gets_each_answer_their_own_operation,
    reap_requeues_expired_leases_then_worker_lost,
    reap_enforces_deadlines,
    reap_purges_after_retention,
    concurrent_claims_never_share_an_operation,
    claims_filter_by_tenant,
    events_dedupe_by_id_and_idempotency_key,
    events_sequence_per_tenant_and_key,
    event_history_filters_and_cursor,
    fan_out_only_to_matching_enabled_webhooks_of_the_tenant,
    final_events_fan_out_when_operations_end,
    webhook_crud,
    disabled_webhook_pauses_deliveries_and_enabling_resumes,
    deliveries_claim_lease_and_outcomes,
    two_results_for_one_delivery_in_a_batch_both_count,
    redeliver_keeps_an_attempt_in_flight_from_being_claimed_twice,
    concurrent_delivery_claims_never_share_a_delivery,
    gone_disables_the_webhook_and_pauses_its_deliveries,
    redeliver_and_replay,
    delivery_list_filters,
    purges_old_settled_events_in_batches_and_keeps_the_rest,
    replay_goes_in_batches_with_a_cursor,
    webhook_cap_is_checked_in_the_write,
);

// ---------------------------------------------------------------- helpers

async fn tenant(s: &dyn Store, name: &str) -> TenantId {
    let t = Tenant {
        id: TenantId::generate(),
        name: name.into(),
        created_at: T0,
    };
    s.create_tenant(t.clone()).await.unwrap().id
}

fn new_op(tenant: Option<TenantId>, op_type: &str, max_attempts: u32) -> NewOperation {
    let mut metadata = Map::new();
    metadata.insert("type".into(), json!(op_type));
    NewOperation {
        id: OperationId::generate(),
        tenant,
        op_type: op_type.into(),
        metadata,
        input: json!({ "video": "vid_1" }),
        max_attempts,
        deadline_at: None,
        retention: Duration::from_secs(3600),
        created_at: T0,
    }
}

async fn create(s: &dyn Store, op: NewOperation) -> OperationId {
    s.create_operation(op, None).await.unwrap().into_inner().id
}

async fn claim(
    s: &dyn Store,
    types: &[&str],
    max: u32,
    now: Timestamp,
) -> Vec<herald_core::operation::Operation> {
    s.claim_operations(ClaimRequest {
        types: types.iter().map(|t| t.to_string()).collect(),
        tenants: None,
        max,
        lease: Duration::from_secs(10),
        now,
    })
    .await
    .unwrap()
}

fn token(op: &herald_core::operation::Operation) -> String {
    match &op.state {
        OperationState::Running { lease_token, .. } => lease_token.clone(),
        other => panic!("not running: {other:?}"),
    }
}

fn error_code(op: &herald_core::operation::Operation) -> Option<String> {
    match &op.state {
        OperationState::Done(Outcome::Error(e)) => Some(e.code.clone()),
        _ => None,
    }
}

fn finish(id: OperationId, lease_token: &str, outcome: FinishAs, now: Timestamp) -> Finish {
    Finish {
        id,
        lease_token: lease_token.into(),
        outcome,
        now,
    }
}

fn fail(code: &str, retryable: bool) -> FinishAs {
    FinishAs::Fail {
        error: OperationError::new(code, "it broke"),
        retryable,
    }
}

fn event(
    tenant: Option<TenantId>,
    event_type: &str,
    key: Option<&str>,
    now: Timestamp,
) -> NewEvent {
    let data = json!({ "n": ulid::Ulid::new().to_string() });
    NewEvent {
        id: EventId::generate(),
        tenant,
        event_type: event_type.into(),
        key: key.map(Into::into),
        request_hash: data.to_string(),
        data,
        created_at: now,
    }
}

async fn emit(s: &dyn Store, e: NewEvent) -> herald_core::event::Event {
    let created = s.insert_event(e, None).await.unwrap();
    assert!(created.is_new());
    created.into_inner()
}

fn webhook(tenant: Option<TenantId>, patterns: &[&str]) -> Webhook {
    Webhook {
        id: WebhookId::generate(),
        tenant,
        url: "http://127.0.0.1:9/hook".into(),
        events: patterns
            .iter()
            .map(|p| EventPattern::parse(p).unwrap())
            .collect(),
        format: SignatureFormat::Herald,
        secret: "whsec_test".into(),
        secret_version: 1,
        previous_secret: None,
        schedule: None,
        max_concurrency: Some(4),
        disabled: false,
        disabled_reason: None,
        description: Some("test".into()),
        created_at: T0,
        updated_at: T0,
    }
}

async fn deliveries_of(s: &dyn Store, filter: DeliveryFilter) -> Vec<Delivery> {
    s.list_deliveries(DeliveryFilter {
        limit: 1000,
        ..filter
    })
    .await
    .unwrap()
}

fn attempt(delivery: DeliveryId, now: Timestamp, code: Option<u16>) -> Attempt {
    Attempt {
        id: AttemptId::generate(),
        delivery_id: delivery,
        at: now,
        status_code: code,
        latency_ms: 12,
        error: code.is_none().then(|| "connection refused".into()),
        response_excerpt: code.map(|c| format!("status {c}")),
    }
}

fn record(
    d: DeliveryId,
    now: Timestamp,
    code: Option<u16>,
    outcome: AttemptOutcome,
) -> AttemptRecord {
    AttemptRecord {
        delivery_id: d,
        attempt: Some(attempt(d, now, code)),
        outcome,
        disable_webhook: None,
    }
}

const LEASE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------- tenants, keys, event types

async fn tenants_and_keys(s: &dyn Store) {
    let t = tenant(s, "acme").await;
    assert_eq!(s.get_tenant(t).await.unwrap().name, "acme");
    assert!(matches!(
        s.get_tenant(TenantId::generate()).await,
        Err(StoreError::NotFound)
    ));

    assert_eq!(s.count_live_admin_keys().await.unwrap(), 0);
    let admin = ApiKey {
        id: KeyId::generate(),
        hash: "h1".into(),
        role: Role::Admin,
        created_at: T0,
        revoked: false,
        scope: WorkerScope::default(),
    };
    let tenant_key = ApiKey {
        id: KeyId::generate(),
        hash: "h2".into(),
        role: Role::Tenant(t),
        created_at: T0,
        revoked: false,
        scope: WorkerScope::default(),
    };
    s.create_key(admin.clone()).await.unwrap();
    s.create_key(tenant_key.clone()).await.unwrap();
    assert_eq!(s.count_live_admin_keys().await.unwrap(), 1);
    assert_eq!(s.get_key(tenant_key.id).await.unwrap(), tenant_key);
    // Worker keys keep their scope: types, tenants, both, or neither.
    let other = tenant(s, "globex").await;
    for scope in [
        WorkerScope::default(),
        WorkerScope {
            types: Some(vec!["transcode".into(), "resize".into()]),
            tenants: None,
        },
        WorkerScope {
            types: None,
            tenants: Some(vec![t, other]),
        },
        WorkerScope {
            types: Some(vec!["transcode".into()]),
            tenants: Some(vec![other]),
        },
    ] {
        let worker = ApiKey {
            id: KeyId::generate(),
            hash: "h3".into(),
            role: Role::Worker,
            created_at: T0,
            revoked: false,
            scope,
        };
        s.create_key(worker.clone()).await.unwrap();
        assert_eq!(s.get_key(worker.id).await.unwrap(), worker);
    }
    s.revoke_key(admin.id, at(1)).await.unwrap();
    assert!(s.get_key(admin.id).await.unwrap().revoked);
    assert_eq!(s.count_live_admin_keys().await.unwrap(), 0);
    assert!(matches!(
        s.revoke_key(KeyId::generate(), at(1)).await,
        Err(StoreError::NotFound)
    ));
}

async fn event_types_are_upserted(s: &dyn Store) {
    s.put_event_type(EventType {
        name: "b.x".into(),
        schema: json!({"type": "object"}),
    })
    .await
    .unwrap();
    s.put_event_type(EventType {
        name: "a.x".into(),
        schema: json!({}),
    })
    .await
    .unwrap();
    s.put_event_type(EventType {
        name: "b.x".into(),
        schema: json!({"type": "string"}),
    })
    .await
    .unwrap();
    let types = s.list_event_types().await.unwrap();
    assert_eq!(types.len(), 2);
    assert_eq!(types[0].name, "a.x");
    assert_eq!(types[1].schema, json!({"type": "string"}));
}

// ---------------------------------------------------------------- operations

async fn operation_create_get_and_list(s: &dyn Store) {
    let t = tenant(s, "acme").await;
    let other = tenant(s, "other").await;
    let mut ids = vec![];
    for _ in 0..3 {
        ids.push(create(s, new_op(Some(t), "transcode", 3)).await);
    }
    create(s, new_op(Some(t), "resize", 3)).await;
    create(s, new_op(Some(other), "transcode", 3)).await;

    let op = s.get_operation(ids[0]).await.unwrap();
    assert_eq!(op.state, OperationState::Queued);
    assert_eq!(op.tenant, Some(t));
    assert_eq!(op.attempt, 0);
    assert_eq!(op.input, json!({ "video": "vid_1" }));
    assert!(matches!(
        s.get_operation(OperationId::generate()).await,
        Err(StoreError::NotFound)
    ));

    let listed = s
        .list_operations(OperationFilter {
            tenant: Some(t),
            op_type: Some("transcode".into()),
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    // Newest first, two to a page.
    assert_eq!(
        listed.iter().map(|o| o.id).collect::<Vec<_>>(),
        vec![ids[2], ids[1]]
    );
    let next = s
        .list_operations(OperationFilter {
            tenant: Some(t),
            op_type: Some("transcode".into()),
            before: Some(ids[1]),
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(next.iter().map(|o| o.id).collect::<Vec<_>>(), vec![ids[0]]);
    let all = s
        .list_operations(OperationFilter {
            tenant: Some(t),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 4);
    let done = s
        .list_operations(OperationFilter {
            tenant: Some(t),
            done: Some(true),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(done.is_empty());
}

async fn operation_idempotency(s: &dyn Store) {
    let idem = |hash: &str| Idempotency {
        scope: "admin:POST /operations".into(),
        key: "k1".into(),
        request_hash: hash.into(),
    };
    let first = s
        .create_operation(new_op(None, "transcode", 3), Some(idem("h")))
        .await
        .unwrap();
    assert!(first.is_new());
    let again = s
        .create_operation(new_op(None, "transcode", 3), Some(idem("h")))
        .await
        .unwrap();
    assert!(!again.is_new());
    assert_eq!(again.into_inner().id, first.clone().into_inner().id);
    assert!(matches!(
        s.create_operation(new_op(None, "transcode", 3), Some(idem("other")))
            .await,
        Err(StoreError::IdempotencyMismatch)
    ));
    let other_scope = Idempotency {
        scope: "tenant:x".into(),
        ..idem("h")
    };
    assert!(s
        .create_operation(new_op(None, "transcode", 3), Some(other_scope))
        .await
        .unwrap()
        .is_new());
    // Only two operations exist.
    assert_eq!(
        s.list_operations(OperationFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .len(),
        2
    );
    // Deleting the operation releases its key: a retry, even with another body, makes a
    // new one (a Location the client could not read would be no answer), and the key then
    // names the new one.
    let first = first.into_inner().id;
    s.delete_operation(first, at(1)).await.unwrap();
    let after = s
        .create_operation(new_op(None, "transcode", 3), Some(idem("other")))
        .await
        .unwrap();
    assert!(after.is_new());
    let after = after.into_inner().id;
    assert_ne!(after, first);
    let again = s
        .create_operation(new_op(None, "transcode", 3), Some(idem("other")))
        .await
        .unwrap();
    assert!(!again.is_new());
    assert_eq!(again.into_inner().id, after);
    assert!(matches!(
        s.create_operation(new_op(None, "transcode", 3), Some(idem("h")))
            .await,
        Err(StoreError::IdempotencyMismatch)
    ));
}

async fn operation_claim_heartbeat_complete(s: &dyn Store) {
    let t = tenant(s, "acme").await;
    let id = create(s, new_op(Some(t), "transcode", 3)).await;
    create(s, new_op(Some(t), "resize", 3)).await;
    assert!(claim(s, &["nothing"], 10, at(1)).await.is_empty());
    let claimed = claim(s, &["transcode"], 10, at(1)).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, id);
    assert_eq!(claimed[0].attempt, 1);
    let lease = token(&claimed[0]);
    assert!(
        claim(s, &["transcode"], 10, at(1)).await.is_empty(),
        "a running operation is not claimed twice"
    );

    let stale = s
        .heartbeat(Heartbeat {
            id,
            lease_token: "lt_wrong".into(),
            metadata: None,
            lease: LEASE,
            now: at(2),
        })
        .await;
    assert!(matches!(stale, Err(StoreError::StaleLease)));
    let mut progress = Map::new();
    progress.insert("progress_percent".into(), json!(42));
    progress.insert("type".into(), json!("hijacked"));
    let beat = s
        .heartbeat(Heartbeat {
            id,
            lease_token: lease.clone(),
            metadata: Some(progress),
            lease: LEASE,
            now: at(2),
        })
        .await
        .unwrap();
    assert!(!beat.cancel_requested);
    assert_eq!(
        beat.state,
        OperationState::Running {
            lease_token: lease.clone(),
            lease_expires_at: at(32)
        }
    );
    let read = s.get_operation(id).await.unwrap();
    assert_eq!(read.metadata["progress_percent"], json!(42));
    assert_eq!(read.metadata["type"], json!("transcode"));

    assert!(matches!(
        s.finish_operation(finish(id, "lt_wrong", FinishAs::Complete(json!({})), at(3)))
            .await,
        Err(StoreError::StaleLease)
    ));
    let done = s
        .finish_operation(finish(
            id,
            &lease,
            FinishAs::Complete(json!({ "url": "u" })),
            at(3),
        ))
        .await
        .unwrap();
    assert_eq!(
        done.state,
        OperationState::Done(Outcome::Response(json!({ "url": "u" })))
    );
    let read = s.get_operation(id).await.unwrap();
    assert_eq!(read, done);
    assert_eq!(read.metadata["progress_percent"], json!(100));
    assert!(matches!(
        s.finish_operation(finish(id, &lease, FinishAs::Complete(json!({})), at(4)))
            .await,
        Err(StoreError::AlreadyDone)
    ));
    // The final event carries the final operation.
    let events = s
        .list_events(EventFilter {
            event_type: Some("transcode.succeeded".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].tenant, Some(t));
    assert_eq!(events[0].data["done"], json!(true));
    assert_eq!(events[0].data["response"], json!({ "url": "u" }));
    let done = s
        .list_operations(OperationFilter {
            done: Some(true),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(done.len(), 1);
}

async fn operation_retryable_failure_requeues_until_max_attempts(s: &dyn Store) {
    let id = create(s, new_op(None, "transcode", 2)).await;
    let first = claim(s, &["transcode"], 1, at(1)).await;
    let op = s
        .finish_operation(finish(id, &token(&first[0]), fail("FLAKY", true), at(2)))
        .await
        .unwrap();
    assert_eq!(op.state, OperationState::Queued);
    let second = claim(s, &["transcode"], 1, at(3)).await;
    assert_eq!(second[0].attempt, 2);
    // The first lease is stale now.
    assert!(matches!(
        s.finish_operation(finish(id, &token(&first[0]), fail("FLAKY", true), at(4)))
            .await,
        Err(StoreError::StaleLease)
    ));
    let op = s
        .finish_operation(finish(id, &token(&second[0]), fail("FLAKY", true), at(4)))
        .await
        .unwrap();
    assert_eq!(error_code(&op).as_deref(), Some("FLAKY"));
    let failed = s
        .list_events(EventFilter {
            event_type: Some("transcode.failed".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);

    // A failure that is not retryable ends the operation at once.
    let id = create(s, new_op(None, "transcode", 5)).await;
    let c = claim(s, &["transcode"], 1, at(5)).await;
    let op = s
        .finish_operation(finish(id, &token(&c[0]), fail("BAD_INPUT", false), at(6)))
        .await
        .unwrap();
    assert_eq!(error_code(&op).as_deref(), Some("BAD_INPUT"));
}

async fn operation_cancel_queued_and_running(s: &dyn Store) {
    let queued = create(s, new_op(None, "transcode", 3)).await;
    let op = s.cancel_operation(queued, at(1)).await.unwrap();
    assert_eq!(error_code(&op).as_deref(), Some(codes::CANCELLED));
    assert_eq!(
        error_code(&s.get_operation(queued).await.unwrap()).as_deref(),
        Some(codes::CANCELLED)
    );
    assert_eq!(
        s.list_events(EventFilter {
            event_type: Some("transcode.cancelled".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .len(),
        1
    );
    // Cancelling again changes nothing.
    assert_eq!(
        s.cancel_operation(queued, at(2)).await.unwrap(),
        s.get_operation(queued).await.unwrap()
    );

    let running = create(s, new_op(None, "transcode", 3)).await;
    let c = claim(s, &["transcode"], 1, at(1)).await;
    let op = s.cancel_operation(running, at(2)).await.unwrap();
    assert!(op.cancel_requested);
    assert!(!op.state.is_done());
    let beat = s
        .heartbeat(Heartbeat {
            id: running,
            lease_token: token(&c[0]),
            metadata: None,
            lease: LEASE,
            now: at(3),
        })
        .await
        .unwrap();
    assert!(beat.cancel_requested);
    // A retryable failure after a cancel request is final.
    let op = s
        .finish_operation(finish(running, &token(&c[0]), fail("STOPPED", true), at(4)))
        .await
        .unwrap();
    assert!(op.state.is_done());
    assert!(matches!(
        s.cancel_operation(OperationId::generate(), at(5)).await,
        Err(StoreError::NotFound)
    ));
}

async fn operation_delete_hides_but_work_goes_on(s: &dyn Store) {
    let id = create(s, new_op(None, "transcode", 3)).await;
    let c = claim(s, &["transcode"], 1, at(1)).await;
    s.delete_operation(id, at(2)).await.unwrap();
    assert!(matches!(
        s.get_operation(id).await,
        Err(StoreError::NotFound)
    ));
    assert!(s
        .list_operations(OperationFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .is_empty());
    assert!(matches!(
        s.delete_operation(id, at(3)).await,
        Err(StoreError::NotFound)
    ));
    // The worker-facing read still finds it, lease and all, and a heartbeat extends it.
    let held = s.get_operation_for_worker(id).await.unwrap();
    assert_eq!(held.state, c[0].state);
    assert!(matches!(
        s.get_operation_for_worker(OperationId::generate()).await,
        Err(StoreError::NotFound)
    ));
    s.heartbeat(Heartbeat {
        id,
        lease_token: token(&c[0]),
        metadata: None,
        lease: LEASE,
        now: at(3),
    })
    .await
    .unwrap();
    // The worker can still finish it, and its final event is still raised.
    s.finish_operation(finish(
        id,
        &token(&c[0]),
        FinishAs::Complete(json!(1)),
        at(4),
    ))
    .await
    .unwrap();
    assert_eq!(
        s.list_events(EventFilter {
            event_type: Some("transcode.succeeded".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .len(),
        1
    );
}

/// Many look-ups at once (PostgreSQL answers them in shared batches): each gets its own
/// operation, an operation asked for by several gets it every time, and deleted or unknown
/// ids are not found.
async fn concurrent_gets_each_answer_their_own_operation(s: &dyn Store) {
    let mut live = Vec::new();
    let mut gone = Vec::new();
    for i in 0..30 {
        let id = create(s, new_op(None, &format!("type{}", i % 3), 3)).await;
        if i % 6 == 0 {
            s.delete_operation(id, at(1)).await.unwrap();
            gone.push(id);
        } else {
            live.push(id);
        }
    }
    let unknown: Vec<OperationId> = (0..5).map(|_| OperationId::generate()).collect();
    // Every id five times over, interleaved, all in flight together.
    let mut asks: Vec<OperationId> = Vec::new();
    for _ in 0..5 {
        asks.extend(&live);
        asks.extend(&gone);
        asks.extend(&unknown);
    }
    let answers = futures::future::join_all(asks.iter().map(|&id| s.get_operation(id))).await;
    for (id, answer) in asks.iter().zip(answers) {
        if live.contains(id) {
            let op = answer.unwrap_or_else(|e| panic!("{id}: {e}"));
            assert_eq!(op.id, *id);
            assert_eq!(op.state, OperationState::Queued);
        } else {
            assert!(
                matches!(answer, Err(StoreError::NotFound)),
                "{id} should not be found: {answer:?}"
            );
        }
    }
}

async fn reap_requeues_expired_leases_then_worker_lost(s: &dyn Store) {
    let id = create(s, new_op(None, "transcode", 2)).await;
    let first = claim(s, &["transcode"], 1, at(0)).await; // lease until at(10)
    assert_eq!(s.next_operation_timer().await.unwrap(), Some(at(10)));
    assert_eq!(
        s.reap_operations(at(5)).await.unwrap(),
        ReapReport::default()
    );
    let report = s.reap_operations(at(10)).await.unwrap();
    assert_eq!(report.requeued, 1);
    assert_eq!(
        s.get_operation(id).await.unwrap().state,
        OperationState::Queued
    );
    assert!(matches!(
        s.heartbeat(Heartbeat {
            id,
            lease_token: token(&first[0]),
            metadata: None,
            lease: LEASE,
            now: at(11)
        })
        .await,
        Err(StoreError::StaleLease)
    ));
    let second = claim(s, &["transcode"], 1, at(11)).await;
    assert_eq!(second[0].attempt, 2);
    let report = s.reap_operations(at(30)).await.unwrap();
    assert_eq!(report.worker_lost, 1);
    let op = s.get_operation(id).await.unwrap();
    assert_eq!(error_code(&op).as_deref(), Some(codes::WORKER_LOST));
    assert_eq!(
        s.list_events(EventFilter {
            event_type: Some("transcode.failed".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .len(),
        1
    );
}

async fn reap_enforces_deadlines(s: &dyn Store) {
    let mut op = new_op(None, "transcode", 3);
    op.deadline_at = Some(at(5));
    let queued = create(s, op).await;
    let mut op = new_op(None, "transcode", 3);
    op.deadline_at = Some(at(100));
    let later = create(s, op).await;
    assert_eq!(s.next_operation_timer().await.unwrap(), Some(at(5)));
    assert_eq!(s.reap_operations(at(4)).await.unwrap().deadline_exceeded, 0);
    let report = s.reap_operations(at(5)).await.unwrap();
    assert_eq!(report.deadline_exceeded, 1);
    assert_eq!(
        error_code(&s.get_operation(queued).await.unwrap()).as_deref(),
        Some(codes::DEADLINE_EXCEEDED)
    );
    assert_eq!(
        s.get_operation(later).await.unwrap().state,
        OperationState::Queued
    );
}

async fn reap_purges_after_retention(s: &dyn Store) {
    let mut op = new_op(None, "transcode", 3);
    op.retention = Duration::from_secs(60);
    let id = create(s, op).await;
    s.cancel_operation(id, at(1)).await.unwrap(); // done at(1), purge at(61)
    assert_eq!(s.next_operation_timer().await.unwrap(), Some(at(61)));
    assert_eq!(s.reap_operations(at(60)).await.unwrap().purged, 0);
    assert!(s.get_operation(id).await.is_ok());
    assert_eq!(s.reap_operations(at(61)).await.unwrap().purged, 1);
    assert!(matches!(
        s.get_operation(id).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(s.next_operation_timer().await.unwrap(), None);
}

/// A tenant-scoped claim leases only those tenants' operations, oldest first, never
/// another tenant's nor one of no tenant; an empty tenant list claims nothing.
async fn claims_filter_by_tenant(s: &dyn Store) {
    let (a, b, c) = (
        tenant(s, "a").await,
        tenant(s, "b").await,
        tenant(s, "c").await,
    );
    let mut made = HashMap::new();
    for (i, owner) in [Some(a), Some(b), None, Some(c), Some(a), Some(b)]
        .into_iter()
        .enumerate()
    {
        let mut op = new_op(owner, "transcode", 3);
        op.created_at = at(i as i64);
        made.insert(create(s, op).await, owner);
    }
    let scoped = |tenants: Option<Vec<TenantId>>, max| ClaimRequest {
        types: vec!["transcode".into()],
        tenants,
        max,
        lease: LEASE,
        now: at(10),
    };
    assert!(s
        .claim_operations(scoped(Some(vec![]), 10))
        .await
        .unwrap()
        .is_empty());
    let first = s
        .claim_operations(scoped(Some(vec![a, c]), 2))
        .await
        .unwrap();
    let owners: Vec<_> = first.iter().map(|o| o.tenant).collect();
    assert_eq!(
        owners,
        vec![Some(a), Some(c)],
        "oldest first, in scope only"
    );
    let rest = s
        .claim_operations(scoped(Some(vec![a, c]), 10))
        .await
        .unwrap();
    assert_eq!(
        rest.iter().map(|o| o.tenant).collect::<Vec<_>>(),
        vec![Some(a)]
    );
    assert!(s
        .claim_operations(scoped(Some(vec![a, c]), 10))
        .await
        .unwrap()
        .is_empty());
    for op in first.iter().chain(&rest) {
        assert_eq!(made[&op.id], op.tenant);
    }
    // Unscoped, the rest: b's two and the one of no tenant.
    let others = s.claim_operations(scoped(None, 10)).await.unwrap();
    let mut owners: Vec<_> = others.iter().map(|o| o.tenant).collect();
    owners.sort_by_key(|t| t.map(|t| t.to_string()));
    assert_eq!(owners, vec![None, Some(b), Some(b)]);
}

async fn concurrent_claims_never_share_an_operation(s: &dyn Store) {
    const N: usize = 300;
    for _ in 0..N {
        create(s, new_op(None, "transcode", 3)).await;
    }
    let claimer = || async {
        let mut mine = Vec::new();
        loop {
            let got = claim(s, &["transcode"], 7, at(1)).await;
            if got.is_empty() {
                return mine;
            }
            mine.extend(got.into_iter().map(|o| o.id));
        }
    };
    let all: Vec<Vec<OperationId>> = futures::future::join_all((0..8).map(|_| claimer())).await;
    let total: usize = all.iter().map(Vec::len).sum();
    let distinct: HashSet<OperationId> = all.into_iter().flatten().collect();
    assert_eq!(total, N, "every operation claimed exactly once");
    assert_eq!(distinct.len(), N);
}

// ---------------------------------------------------------------- events

async fn events_dedupe_by_id_and_idempotency_key(s: &dyn Store) {
    let t = tenant(s, "acme").await;
    let e = event(Some(t), "payment.succeeded", Some("pay_1"), at(0));
    let first = s.insert_event(e.clone(), None).await.unwrap();
    assert!(first.is_new());
    let again = s.insert_event(e.clone(), None).await.unwrap();
    assert!(!again.is_new());
    assert_eq!(again.into_inner(), first.clone().into_inner());
    let mut changed = e.clone();
    changed.request_hash = "different".into();
    assert!(matches!(
        s.insert_event(changed, None).await,
        Err(StoreError::IdempotencyMismatch)
    ));

    let idem = |hash: &str| Idempotency {
        scope: "admin:POST /events".into(),
        key: "idem-1".into(),
        request_hash: hash.into(),
    };
    let a = s
        .insert_event(
            event(Some(t), "payment.succeeded", Some("pay_1"), at(1)),
            Some(idem("h")),
        )
        .await
        .unwrap();
    assert!(a.is_new());
    let b = s
        .insert_event(
            event(Some(t), "payment.succeeded", Some("pay_1"), at(2)),
            Some(idem("h")),
        )
        .await
        .unwrap();
    assert!(!b.is_new());
    assert_eq!(b.into_inner().id, a.clone().into_inner().id);
    assert!(matches!(
        s.insert_event(
            event(Some(t), "payment.succeeded", Some("pay_1"), at(3)),
            Some(idem("x"))
        )
        .await,
        Err(StoreError::IdempotencyMismatch)
    ));
    // Deduped events took no sequence numbers.
    let history = s
        .list_events(EventFilter {
            key: Some("pay_1".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        history.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        vec![Some(1), Some(2)]
    );
    assert_eq!(
        s.get_event(first.into_inner().id).await.unwrap().sequence,
        Some(1)
    );
    assert!(matches!(
        s.get_event(EventId::generate()).await,
        Err(StoreError::NotFound)
    ));
}

async fn events_sequence_per_tenant_and_key(s: &dyn Store) {
    let a = tenant(s, "a").await;
    let b = tenant(s, "b").await;
    for n in 1..=3 {
        assert_eq!(
            emit(s, event(Some(a), "x.y", Some("k1"), at(n)))
                .await
                .sequence,
            Some(n)
        );
    }
    assert_eq!(
        emit(s, event(Some(a), "x.y", Some("k2"), at(4)))
            .await
            .sequence,
        Some(1)
    );
    assert_eq!(
        emit(s, event(Some(b), "x.y", Some("k1"), at(5)))
            .await
            .sequence,
        Some(1)
    );
    assert_eq!(
        emit(s, event(None, "x.y", Some("k1"), at(5)))
            .await
            .sequence,
        Some(1)
    );
    assert_eq!(
        emit(s, event(Some(a), "x.y", None, at(6))).await.sequence,
        None
    );
    assert_eq!(
        emit(s, event(Some(a), "x.y", Some("k1"), at(7)))
            .await
            .sequence,
        Some(4)
    );

    // Many writers on one key at once still get 1..n without gaps or repeats.
    let writers = (0..40).map(|_| async {
        emit(s, event(Some(b), "x.y", Some("hot"), at(8)))
            .await
            .sequence
            .unwrap()
    });
    let mut seqs: Vec<i64> = futures::future::join_all(writers).await;
    seqs.sort();
    assert_eq!(seqs, (1..=40).collect::<Vec<_>>());
}

async fn event_history_filters_and_cursor(s: &dyn Store) {
    let a = tenant(s, "a").await;
    let b = tenant(s, "b").await;
    let e1 = emit(s, event(Some(a), "payment.succeeded", Some("p1"), at(1))).await;
    let e2 = emit(s, event(Some(a), "payment.failed", Some("p1"), at(2))).await;
    let e3 = emit(s, event(Some(a), "payment.succeeded", Some("p2"), at(3))).await;
    emit(s, event(Some(b), "payment.succeeded", Some("p1"), at(4))).await;
    let ids = |v: Vec<herald_core::event::Event>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();
    let of_a = s
        .list_events(EventFilter {
            tenant: Some(a),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(of_a), vec![e1.id, e2.id, e3.id]);
    let by_type = s
        .list_events(EventFilter {
            tenant: Some(a),
            event_type: Some("payment.succeeded".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(by_type), vec![e1.id, e3.id]);
    let by_key = s
        .list_events(EventFilter {
            tenant: Some(a),
            key: Some("p1".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(by_key), vec![e1.id, e2.id]);
    let page = s
        .list_events(EventFilter {
            tenant: Some(a),
            after: Some(e1.id),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(page), vec![e2.id]);
}

async fn fan_out_only_to_matching_enabled_webhooks_of_the_tenant(s: &dyn Store) {
    let a = tenant(s, "a").await;
    let b = tenant(s, "b").await;
    let all_payments = s
        .create_webhook(webhook(Some(a), &["payment.*"]))
        .await
        .unwrap();
    let succeeded = s
        .create_webhook(webhook(Some(a), &["payment.succeeded", "refund.created"]))
        .await
        .unwrap();
    let refunds = s
        .create_webhook(webhook(Some(a), &["refund.*"]))
        .await
        .unwrap();
    let mut off = webhook(Some(a), &["payment.*"]);
    off.disabled = true;
    s.create_webhook(off).await.unwrap();
    let deleted = s
        .create_webhook(webhook(Some(a), &["payment.*"]))
        .await
        .unwrap();
    s.delete_webhook(deleted.id, at(0)).await.unwrap();
    let other_tenant = s
        .create_webhook(webhook(Some(b), &["payment.*"]))
        .await
        .unwrap();

    let e = emit(s, event(Some(a), "payment.succeeded", Some("p1"), at(1))).await;
    let made = deliveries_of(s, DeliveryFilter::default()).await;
    let mut targets: Vec<WebhookId> = made
        .iter()
        .filter_map(|d| d.destination.webhook())
        .collect();
    targets.sort();
    let mut expected = vec![all_payments.id, succeeded.id];
    expected.sort();
    assert_eq!(targets, expected);
    for d in &made {
        assert_eq!(d.event_id, e.id);
        assert_eq!(d.tenant, Some(a));
        assert_eq!(d.status, DeliveryStatus::Pending);
        assert_eq!(d.next_attempt_at, Some(at(1)));
        assert_eq!(d.attempts, 0);
    }
    emit(s, event(Some(a), "payment.failed", None, at(2))).await;
    let failed = deliveries_of(
        s,
        DeliveryFilter {
            event_type: Some("payment.failed".into()),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        failed
            .iter()
            .filter_map(|d| d.destination.webhook())
            .collect::<Vec<_>>(),
        vec![all_payments.id]
    );
    assert!(deliveries_of(
        s,
        DeliveryFilter {
            webhook: Some(refunds.id),
            ..Default::default()
        }
    )
    .await
    .is_empty());
    assert!(deliveries_of(
        s,
        DeliveryFilter {
            webhook: Some(other_tenant.id),
            ..Default::default()
        }
    )
    .await
    .is_empty());
    emit(s, event(Some(b), "payment.failed", None, at(3))).await;
    assert_eq!(
        deliveries_of(
            s,
            DeliveryFilter {
                tenant: Some(b),
                ..Default::default()
            }
        )
        .await
        .len(),
        1
    );
}

async fn final_events_fan_out_when_operations_end(s: &dyn Store) {
    let t = tenant(s, "acme").await;
    let wh = s
        .create_webhook(webhook(Some(t), &["transcode.*"]))
        .await
        .unwrap();
    let id = create(s, new_op(Some(t), "transcode", 3)).await;
    let c = claim(s, &["transcode"], 1, at(1)).await;
    s.finish_operation(finish(
        id,
        &token(&c[0]),
        FinishAs::Complete(json!({"ok": true})),
        at(2),
    ))
    .await
    .unwrap();
    let made = deliveries_of(
        s,
        DeliveryFilter {
            webhook: Some(wh.id),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(made.len(), 1);
    assert_eq!(made[0].event_type, "transcode.succeeded");
    let jobs = s.claim_due_deliveries(at(3), 10, LEASE).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        jobs[0].event.data["name"],
        json!(format!("operations/{id}"))
    );
}

// ---------------------------------------------------------------- webhooks

async fn webhook_crud(s: &dyn Store) {
    let a = tenant(s, "a").await;
    let b = tenant(s, "b").await;
    let w1 = s
        .create_webhook(webhook(Some(a), &["payment.*"]))
        .await
        .unwrap();
    let w2 = s
        .create_webhook(webhook(Some(a), &["refund.created"]))
        .await
        .unwrap();
    let w3 = s
        .create_webhook(webhook(Some(b), &["payment.*"]))
        .await
        .unwrap();
    assert_eq!(s.get_webhook(w1.id).await.unwrap(), w1);
    let of_a = s
        .list_webhooks(WebhookFilter {
            tenant: Some(a),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        of_a.iter().map(|w| w.id).collect::<Vec<_>>(),
        vec![w1.id, w2.id]
    );
    let all = s
        .list_webhooks(WebhookFilter {
            all_tenants: true,
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
    let page = s
        .list_webhooks(WebhookFilter {
            all_tenants: true,
            after: Some(w1.id),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page[0].id, w2.id);

    let schedule =
        herald_core::retry::RetrySchedule::new(vec![Duration::ZERO, Duration::from_secs(5)])
            .unwrap();
    let change = WebhookChange {
        url: Some("http://127.0.0.1:9/other".into()),
        schedule: Some(schedule.clone()),
        max_concurrency: Some(7),
        rotate: Some(Rotation {
            secret: "whsec_new".into(),
            grace_until: Some(at(100)),
        }),
        ..Default::default()
    };
    let updated = s.update_webhook(w1.id, change, at(5)).await.unwrap();
    let expected = Webhook {
        url: "http://127.0.0.1:9/other".into(),
        secret: "whsec_new".into(),
        secret_version: 2,
        previous_secret: Some(("whsec_test".into(), at(100))),
        schedule: Some(schedule),
        max_concurrency: Some(7),
        updated_at: at(5),
        ..w1.clone()
    };
    assert_eq!(updated, expected);
    assert_eq!(s.get_webhook(w1.id).await.unwrap(), expected);
    // A second rotation applies to the stored row, not to what a caller read before:
    // it rotates version 2 (whose secret becomes the previous one), making version 3.
    let again = s
        .update_webhook(
            w1.id,
            WebhookChange {
                rotate: Some(Rotation {
                    secret: "whsec_third".into(),
                    grace_until: Some(at(200)),
                }),
                ..Default::default()
            },
            at(6),
        )
        .await
        .unwrap();
    assert_eq!(again.secret_version, 3);
    assert_eq!(again.previous_secret, Some(("whsec_new".into(), at(200))));
    assert_eq!(again.url, "http://127.0.0.1:9/other");
    // A change to a webhook that does not exist is NotFound (deleted: see below).
    assert!(matches!(
        s.update_webhook(WebhookId::generate(), WebhookChange::default(), at(7))
            .await,
        Err(StoreError::NotFound)
    ));

    emit(s, event(Some(b), "payment.succeeded", None, at(6))).await;
    s.delete_webhook(w3.id, at(7)).await.unwrap();
    assert!(matches!(
        s.get_webhook(w3.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        s.delete_webhook(w3.id, at(8)).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        s.list_webhooks(WebhookFilter {
            all_tenants: true,
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .len(),
        2
    );
    // Its pending deliveries are given up.
    let gone = deliveries_of(
        s,
        DeliveryFilter {
            webhook: Some(w3.id),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].status, DeliveryStatus::Failed);
    assert!(s
        .claim_due_deliveries(at(9), 10, LEASE)
        .await
        .unwrap()
        .is_empty());
    assert!(matches!(
        s.update_webhook(w3.id, WebhookChange::default(), at(9))
            .await,
        Err(StoreError::NotFound)
    ));
}

async fn disabled_webhook_pauses_deliveries_and_enabling_resumes(s: &dyn Store) {
    let t = tenant(s, "a").await;
    let wh = s
        .create_webhook(webhook(Some(t), &["payment.*"]))
        .await
        .unwrap();
    emit(s, event(Some(t), "payment.succeeded", None, at(1))).await;
    let off = s
        .update_webhook(
            wh.id,
            WebhookChange {
                disabled: Some(true),
                ..Default::default()
            },
            at(2),
        )
        .await
        .unwrap();
    assert!(off.disabled);
    assert_eq!(
        off.disabled_reason.as_deref(),
        Some(WebhookChange::DISABLED_THROUGH_API)
    );
    let paused = deliveries_of(
        s,
        DeliveryFilter {
            webhook: Some(wh.id),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(paused[0].status, DeliveryStatus::Pending);
    assert_eq!(paused[0].next_attempt_at, None);
    assert_eq!(s.next_delivery_due().await.unwrap(), None);
    assert!(s
        .claim_due_deliveries(at(1000), 10, LEASE)
        .await
        .unwrap()
        .is_empty());
    // Events while disabled make no deliveries for it.
    emit(s, event(Some(t), "payment.succeeded", None, at(3))).await;
    assert_eq!(
        deliveries_of(
            s,
            DeliveryFilter {
                webhook: Some(wh.id),
                ..Default::default()
            }
        )
        .await
        .len(),
        1
    );

    s.update_webhook(
        off.id,
        WebhookChange {
            disabled: Some(false),
            ..Default::default()
        },
        at(10),
    )
    .await
    .unwrap();
    let resumed = deliveries_of(
        s,
        DeliveryFilter {
            webhook: Some(wh.id),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(resumed[0].next_attempt_at, Some(at(10)));
    assert_eq!(s.next_delivery_due().await.unwrap(), Some(at(10)));
    assert_eq!(
        s.claim_due_deliveries(at(10), 10, LEASE)
            .await
            .unwrap()
            .len(),
        1
    );
}

// ---------------------------------------------------------------- deliveries

async fn deliveries_claim_lease_and_outcomes(s: &dyn Store) {
    let t = tenant(s, "a").await;
    let wh = s
        .create_webhook(webhook(Some(t), &["payment.*"]))
        .await
        .unwrap();
    let e1 = emit(s, event(Some(t), "payment.succeeded", Some("p"), at(1))).await;
    emit(s, event(Some(t), "payment.succeeded", Some("p"), at(2))).await;
    emit(s, event(Some(t), "payment.succeeded", Some("p"), at(3))).await;
    emit(s, event(Some(t), "payment.succeeded", Some("p"), at(50))).await; // not due yet

    assert_eq!(s.next_delivery_due().await.unwrap(), Some(at(1)));
    let first = s.claim_due_deliveries(at(5), 2, LEASE).await.unwrap();
    assert_eq!(first.len(), 2);
    // Oldest due first, with what is needed to send it.
    assert_eq!(first[0].event.id, e1.id);
    assert_eq!(first[0].event.sequence, Some(1));
    assert_eq!(first[0].webhook.id, wh.id);
    assert_eq!(first[0].webhook.secret, "whsec_test");
    let second = s.claim_due_deliveries(at(5), 10, LEASE).await.unwrap();
    assert_eq!(second.len(), 1, "leased deliveries are not claimed again");
    assert!(s
        .claim_due_deliveries(at(6), 10, LEASE)
        .await
        .unwrap()
        .is_empty());

    let (d1, d2, d3) = (
        first[0].delivery.id,
        first[1].delivery.id,
        second[0].delivery.id,
    );
    s.record_attempts(vec![
        record(d1, at(6), Some(200), AttemptOutcome::Succeeded),
        record(d2, at(6), Some(500), AttemptOutcome::RetryAt(at(20))),
        record(d3, at(6), None, AttemptOutcome::Failed),
    ])
    .await
    .unwrap();
    let (one, attempts) = s.get_delivery(d1).await.unwrap();
    assert_eq!(one.status, DeliveryStatus::Succeeded);
    assert_eq!((one.attempts, one.window_attempts), (1, 1));
    assert_eq!(one.last_status_code, Some(200));
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].status_code, Some(200));
    assert_eq!(attempts[0].latency_ms, 12);
    assert_eq!(attempts[0].response_excerpt.as_deref(), Some("status 200"));
    let (two, _) = s.get_delivery(d2).await.unwrap();
    assert_eq!(two.status, DeliveryStatus::Pending);
    assert_eq!(two.next_attempt_at, Some(at(20)));
    assert_eq!(two.last_status_code, Some(500));
    let (three, attempts) = s.get_delivery(d3).await.unwrap();
    assert_eq!(three.status, DeliveryStatus::Failed);
    assert_eq!(three.last_error.as_deref(), Some("connection refused"));
    assert_eq!(attempts[0].error.as_deref(), Some("connection refused"));
    assert_eq!(s.next_delivery_due().await.unwrap(), Some(at(20)));

    // A deferral counts no attempt.
    let again = s.claim_due_deliveries(at(20), 10, LEASE).await.unwrap();
    assert_eq!(again.len(), 1);
    s.record_attempts(vec![AttemptRecord {
        delivery_id: d2,
        attempt: None,
        outcome: AttemptOutcome::Deferred(at(25)),
        disable_webhook: None,
    }])
    .await
    .unwrap();
    let (two, attempts) = s.get_delivery(d2).await.unwrap();
    assert_eq!((two.attempts, two.next_attempt_at), (1, Some(at(25))));
    assert_eq!(attempts.len(), 1);

    // A lease that runs out makes the delivery claimable again (its sender died).
    let leased = s.claim_due_deliveries(at(25), 10, LEASE).await.unwrap();
    assert_eq!(leased.len(), 1);
    assert!(s
        .claim_due_deliveries(at(54), 10, LEASE)
        .await
        .unwrap()
        .iter()
        .all(|j| j.delivery.id != d2));
    let retaken = s.claim_due_deliveries(at(55), 10, LEASE).await.unwrap();
    assert!(retaken.iter().any(|j| j.delivery.id == d2));
    assert!(matches!(
        s.get_delivery(DeliveryId::generate()).await,
        Err(StoreError::NotFound)
    ));
}

async fn concurrent_delivery_claims_never_share_a_delivery(s: &dyn Store) {
    let t = tenant(s, "a").await;
    for _ in 0..3 {
        s.create_webhook(webhook(Some(t), &["x.*"])).await.unwrap();
    }
    for n in 0..100 {
        emit(s, event(Some(t), "x.y", Some("k"), at(n))).await;
    }
    let claimer = || async {
        let mut mine = Vec::new();
        loop {
            let got = s.claim_due_deliveries(at(200), 9, LEASE).await.unwrap();
            if got.is_empty() {
                return mine;
            }
            mine.extend(got.into_iter().map(|j| j.delivery.id));
        }
    };
    let all: Vec<Vec<DeliveryId>> = futures::future::join_all((0..6).map(|_| claimer())).await;
    let total: usize = all.iter().map(Vec::len).sum();
    let distinct: HashSet<DeliveryId> = all.into_iter().flatten().collect();
    assert_eq!(total, 300);
    assert_eq!(distinct.len(), 300);
}

async fn gone_disables_the_webhook_and_pauses_its_deliveries(s: &dyn Store) {
    let t = tenant(s, "a").await;
    let wh = s.create_webhook(webhook(Some(t), &["x.*"])).await.unwrap();
    for n in 0..3 {
        emit(s, event(Some(t), "x.y", None, at(n))).await;
    }
    let jobs = s.claim_due_deliveries(at(5), 2, LEASE).await.unwrap();
    s.record_attempts(vec![
        AttemptRecord {
            disable_webhook: Some((wh.id, "410 Gone".into())),
            ..record(
                jobs[0].delivery.id,
                at(6),
                Some(410),
                AttemptOutcome::Failed,
            )
        },
        record(
            jobs[1].delivery.id,
            at(6),
            Some(500),
            AttemptOutcome::RetryAt(at(10)),
        ),
    ])
    .await
    .unwrap();
    let w = s.get_webhook(wh.id).await.unwrap();
    assert!(w.disabled);
    assert_eq!(w.disabled_reason.as_deref(), Some("410 Gone"));
    let all = deliveries_of(
        s,
        DeliveryFilter {
            webhook: Some(wh.id),
            ..Default::default()
        },
    )
    .await;
    let pending: Vec<_> = all
        .iter()
        .filter(|d| d.status == DeliveryStatus::Pending)
        .collect();
    assert_eq!(pending.len(), 2);
    assert!(
        pending.iter().all(|d| d.next_attempt_at.is_none()),
        "paused: {pending:?}"
    );
    assert!(s
        .claim_due_deliveries(at(100), 10, LEASE)
        .await
        .unwrap()
        .is_empty());
}

async fn redeliver_and_replay(s: &dyn Store) {
    let t = tenant(s, "a").await;
    let wh = s.create_webhook(webhook(Some(t), &["x.*"])).await.unwrap();
    for n in 0..4 {
        emit(s, event(Some(t), "x.y", None, at(n))).await;
    }
    let jobs = s.claim_due_deliveries(at(10), 10, LEASE).await.unwrap();
    assert_eq!(jobs.len(), 4);
    // Event times 0 and 1 succeed; 2 and 3 fail for good.
    let records = jobs
        .iter()
        .map(|j| {
            let ok = j.event.created_at < at(2);
            let outcome = if ok {
                AttemptOutcome::Succeeded
            } else {
                AttemptOutcome::Failed
            };
            record(
                j.delivery.id,
                at(11),
                Some(if ok { 200 } else { 500 }),
                outcome,
            )
        })
        .collect();
    s.record_attempts(records).await.unwrap();
    let failed = deliveries_of(
        s,
        DeliveryFilter {
            status: Some(DeliveryStatus::Failed),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(failed.len(), 2);

    let d = s.redeliver(failed[0].id, at(20)).await.unwrap();
    assert_eq!(d.status, DeliveryStatus::Pending);
    assert_eq!(d.window_attempts, 0);
    assert_eq!(d.attempts, 1);
    assert_eq!(d.next_attempt_at, Some(at(20)));
    assert_eq!(d.event_id, failed[0].event_id);
    assert!(matches!(
        s.redeliver(DeliveryId::generate(), at(20)).await,
        Err(StoreError::NotFound)
    ));

    // Replay of succeeded ones in [0, 1s): just the first.
    let n = s
        .replay(Replay {
            webhook: wh.id,
            since: at(0),
            until: at(1),
            status: Some(DeliveryStatus::Succeeded),
            now: at(30),
            after: None,
            limit: 1000,
        })
        .await
        .unwrap();
    assert_eq!(
        n,
        ReplayBatch {
            replayed: 1,
            next: None
        }
    );
    // Without a status: everything in range not already pending (one succeeded, one failed).
    let n = s
        .replay(Replay {
            webhook: wh.id,
            since: at(0),
            until: at(100),
            status: None,
            now: at(31),
            after: None,
            limit: 1000,
        })
        .await
        .unwrap();
    assert_eq!(
        n,
        ReplayBatch {
            replayed: 2,
            next: None
        }
    );
    let pending = deliveries_of(
        s,
        DeliveryFilter {
            status: Some(DeliveryStatus::Pending),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(pending.len(), 4);
    assert_eq!(
        s.claim_due_deliveries(at(31), 10, LEASE)
            .await
            .unwrap()
            .len(),
        4
    );
    assert!(matches!(
        s.replay(Replay {
            webhook: WebhookId::generate(),
            since: at(0),
            until: at(1),
            status: None,
            now: at(32),
            after: None,
            limit: 1000,
        })
        .await,
        Err(StoreError::NotFound)
    ));
}

async fn delivery_list_filters(s: &dyn Store) {
    let a = tenant(s, "a").await;
    let b = tenant(s, "b").await;
    let wa = s
        .create_webhook(webhook(Some(a), &["x.*", "y.*"]))
        .await
        .unwrap();
    let wa2 = s.create_webhook(webhook(Some(a), &["y.*"])).await.unwrap();
    s.create_webhook(webhook(Some(b), &["x.*"])).await.unwrap();
    emit(s, event(Some(a), "x.one", None, at(1))).await;
    emit(s, event(Some(a), "y.one", None, at(2))).await;
    emit(s, event(Some(b), "x.one", None, at(3))).await;
    let of_a = deliveries_of(
        s,
        DeliveryFilter {
            tenant: Some(a),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(of_a.len(), 3);
    // Newest first.
    assert!(of_a.windows(2).all(|w| w[0].id > w[1].id));
    assert_eq!(
        deliveries_of(
            s,
            DeliveryFilter {
                webhook: Some(wa.id),
                ..Default::default()
            }
        )
        .await
        .len(),
        2
    );
    assert_eq!(
        deliveries_of(
            s,
            DeliveryFilter {
                webhook: Some(wa2.id),
                ..Default::default()
            }
        )
        .await
        .len(),
        1
    );
    assert_eq!(
        deliveries_of(
            s,
            DeliveryFilter {
                tenant: Some(a),
                event_type: Some("y.one".into()),
                ..Default::default()
            }
        )
        .await
        .len(),
        2
    );
    assert_eq!(
        deliveries_of(
            s,
            DeliveryFilter {
                since: Some(at(2)),
                ..Default::default()
            }
        )
        .await
        .len(),
        3
    );
    assert_eq!(
        deliveries_of(
            s,
            DeliveryFilter {
                until: Some(at(2)),
                ..Default::default()
            }
        )
        .await
        .len(),
        1
    );
    assert_eq!(
        deliveries_of(
            s,
            DeliveryFilter {
                status: Some(DeliveryStatus::Succeeded),
                ..Default::default()
            }
        )
        .await
        .len(),
        0
    );
    let page = s
        .list_deliveries(DeliveryFilter {
            tenant: Some(a),
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.len(), 2);
    let rest = s
        .list_deliveries(DeliveryFilter {
            tenant: Some(a),
            before: Some(page[1].id),
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].id, of_a[2].id);
}

// ---------------------------------------------------------------- PostgreSQL only: many nodes

/// Several stores on one database stand for several nodes: migrations run once when
/// they start together, and a change made through one wakes the waiters of another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_nodes_share_migrations_and_wake_each_other() {
    let Some(admin) = std::env::var("HERALD_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        println!("skipped: HERALD_TEST_DATABASE_URL not set");
        return;
    };
    let name = format!(
        "herald_test_{}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    let url = create_database(&admin, &name).await.unwrap();
    let _db = DropDatabase {
        admin_url: admin,
        name: name.clone(),
    };
    // Even on a database whose default is not durable, Herald's commits are.
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "ALTER DATABASE \"{name}\" SET synchronous_commit = off"
        ))
        .await
        .unwrap();
    drop(client);
    let (a, b, c) = tokio::join!(
        PgStore::connect(&url),
        PgStore::connect(&url),
        PgStore::connect(&url)
    );
    let (a, b, _c) = (a.unwrap(), b.unwrap(), c.unwrap());
    let patience = Duration::from_secs(30);
    assert_eq!(a.setting("synchronous_commit").await.unwrap(), "on");

    // Queued on A wakes a claimer waiting on B.
    let queued = b.signals().operations_queued.notified();
    tokio::pin!(queued);
    queued.as_mut().enable();
    let id = a
        .create_operation(new_op(None, "transcode", 3), None)
        .await
        .unwrap()
        .into_inner()
        .id;
    tokio::time::timeout(patience, queued)
        .await
        .expect("B heard of the queued operation");

    // A change on A reaches B's `:wait` waiters, with the operation's id.
    let mut changed = b.signals().operation_changed.subscribe();
    let claimed = claim(&a, &["transcode"], 1, at(1)).await;
    assert_eq!(claimed[0].id, id);
    let heard = tokio::time::timeout(patience, changed.recv())
        .await
        .expect("B heard of the change")
        .unwrap();
    assert_eq!(heard, id);
    // B sees what A committed.
    assert!(matches!(
        b.get_operation(id).await.unwrap().state,
        OperationState::Running { .. }
    ));

    // New deliveries made through B wake A's dispatcher.
    let t = tenant(&b, "acme").await;
    b.create_webhook(webhook(Some(t), &["x.*"])).await.unwrap();
    let due = a.signals().deliveries_due.notified();
    tokio::pin!(due);
    due.as_mut().enable();
    emit(&b, event(Some(t), "x.y", None, at(2))).await;
    tokio::time::timeout(patience, due)
        .await
        .expect("A heard of the due delivery");
    assert_eq!(
        a.claim_due_deliveries(at(3), 10, LEASE)
            .await
            .unwrap()
            .len(),
        1
    );
}

/// Retention: `purge_settled_events` removes old events that no delivery still owes, with
/// their deliveries and attempts, in bounded batches, and keeps events that are new or
/// still owed and the per-key sequence.
mod retention {
    use herald_core::ids::*;
    use herald_core::pattern::EventPattern;
    use herald_core::signing::SignatureFormat;
    use herald_core::Timestamp;
    use herald_store::*;
    use serde_json::json;
    use std::time::Duration;

    const T0: Timestamp = Timestamp(1_775_834_400_000);

    fn at(secs: i64) -> Timestamp {
        Timestamp(T0.0 + secs * 1000)
    }

    async fn tenant(store: &dyn Store, name: &str) -> TenantId {
        store
            .create_tenant(Tenant {
                id: TenantId::generate(),
                name: name.into(),
                created_at: T0,
            })
            .await
            .unwrap()
            .id
    }

    async fn webhook(store: &dyn Store, tenant: TenantId) -> WebhookId {
        store
            .create_webhook(Webhook {
                id: WebhookId::generate(),
                tenant: Some(tenant),
                url: "http://127.0.0.1:9/h".into(),
                events: vec![EventPattern::parse("payment.*").unwrap()],
                format: SignatureFormat::Herald,
                secret: "hsec_test".into(),
                secret_version: 1,
                previous_secret: None,
                schedule: None,
                max_concurrency: None,
                disabled: false,
                disabled_reason: None,
                description: None,
                created_at: T0,
                updated_at: T0,
            })
            .await
            .unwrap()
            .id
    }

    async fn event(store: &dyn Store, tenant: TenantId, when: Timestamp) -> EventId {
        let id = EventId::generate();
        store
            .insert_event(
                NewEvent {
                    id,
                    tenant: Some(tenant),
                    event_type: "payment.succeeded".into(),
                    key: Some("pay_1".into()),
                    data: json!({}),
                    created_at: when,
                    request_hash: "h".into(),
                },
                None,
            )
            .await
            .unwrap();
        id
    }

    fn attempt(job: &DeliveryJob, when: Timestamp, code: u16, latency_ms: u64) -> Attempt {
        Attempt {
            id: AttemptId::generate(),
            delivery_id: job.delivery.id,
            at: when,
            status_code: Some(code),
            latency_ms,
            error: (code >= 300).then(|| format!("HTTP {code}")),
            response_excerpt: None,
        }
    }

    pub async fn purges_old_settled_events_in_batches_and_keeps_the_rest(store: &dyn Store) {
        let acme = tenant(store, "acme").await;
        webhook(store, acme).await;
        // Five old events: three delivered, one dead (failed), one still owed (pending).
        let mut old = vec![];
        for _ in 0..5 {
            old.push(event(store, acme, at(0)).await);
        }
        let recent = event(store, acme, at(10_000)).await;
        let jobs = store
            .claim_due_deliveries(at(10_001), 10, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(jobs.len(), 6);
        let job_of = |e: EventId| jobs.iter().find(|j| j.event.id == e).unwrap();
        let mut records = vec![];
        for (i, e) in old.iter().chain([&recent]).enumerate() {
            let job = job_of(*e);
            let (code, outcome) = match i {
                3 => (500, AttemptOutcome::Failed),
                4 => (500, AttemptOutcome::RetryAt(at(3600))),
                _ => (200, AttemptOutcome::Succeeded),
            };
            records.push(AttemptRecord {
                delivery_id: job.delivery.id,
                attempt: Some(attempt(job, at(10_002), code, 5)),
                outcome,
                disable_webhook: None,
            });
        }
        store.record_attempts(records).await.unwrap();

        // Batches of two: the four settled old events go in two passes, then nothing is left.
        let cutoff = at(5_000);
        let first = store.purge_settled_events(cutoff, 2).await.unwrap();
        assert_eq!(
            first,
            PurgeReport {
                events: 2,
                deliveries: 2,
                attempts: 2
            }
        );
        let second = store.purge_settled_events(cutoff, 2).await.unwrap();
        assert_eq!(
            second,
            PurgeReport {
                events: 2,
                deliveries: 2,
                attempts: 2
            }
        );
        let third = store.purge_settled_events(cutoff, 2).await.unwrap();
        assert_eq!(third, PurgeReport::default());

        for e in &old[..4] {
            assert!(
                matches!(store.get_event(*e).await, Err(StoreError::NotFound)),
                "{e}"
            );
            let d = job_of(*e).delivery.id;
            assert!(
                matches!(store.get_delivery(d).await, Err(StoreError::NotFound)),
                "{d}"
            );
        }
        // The owed one and the recent one stay, with their attempts.
        for e in [old[4], recent] {
            store.get_event(e).await.unwrap();
            let (_, attempts) = store.get_delivery(job_of(e).delivery.id).await.unwrap();
            assert_eq!(attempts.len(), 1);
        }
        // Sequences per key carry on after a purge.
        let next = store
            .insert_event(
                NewEvent {
                    id: EventId::generate(),
                    tenant: Some(acme),
                    event_type: "payment.succeeded".into(),
                    key: Some("pay_1".into()),
                    data: json!({}),
                    created_at: at(20_000),
                    request_hash: "h".into(),
                },
                None,
            )
            .await
            .unwrap();
        let next = match next {
            Created::New(e) | Created::Existing(e) => e,
        };
        assert_eq!(next.sequence, Some(7));
    }
}
use retention::purges_old_settled_events_in_batches_and_keeps_the_rest;

async fn replay_goes_in_batches_with_a_cursor(s: &dyn Store) {
    let t = tenant(s, "a").await;
    let wh = s.create_webhook(webhook(Some(t), &["x.*"])).await.unwrap();
    let other = s.create_webhook(webhook(Some(t), &["x.*"])).await.unwrap();
    // Seven events, three of them at one instant: the cursor must tell those apart.
    for secs in [0, 1, 1, 1, 2, 3, 4] {
        emit(s, event(Some(t), "x.y", None, at(secs))).await;
    }
    let jobs = s.claim_due_deliveries(at(10), 100, LEASE).await.unwrap();
    assert_eq!(jobs.len(), 14);
    let records = jobs
        .iter()
        .map(|j| record(j.delivery.id, at(11), Some(500), AttemptOutcome::Failed))
        .collect();
    s.record_attempts(records).await.unwrap();
    let replay = |after, status| Replay {
        webhook: wh.id,
        since: at(0),
        until: at(100),
        status,
        now: at(20),
        after,
        limit: 3,
    };

    // Asking for succeeded ones: each batch looks at three deliveries and replays none.
    let first = s
        .replay(replay(None, Some(DeliveryStatus::Succeeded)))
        .await
        .unwrap();
    assert_eq!(first.replayed, 0);
    assert!(first.next.is_some(), "three looked at, more to come");

    let (mut batches, mut replayed, mut after) = (0, 0, None);
    loop {
        let batch = s
            .replay(replay(after, Some(DeliveryStatus::Failed)))
            .await
            .unwrap();
        batches += 1;
        replayed += batch.replayed;
        assert!(batch.replayed <= 3);
        match batch.next {
            Some(next) => after = Some(next),
            None => break,
        }
        assert!(batches < 10, "the cursor moves on");
    }
    assert_eq!((batches, replayed), (3, 7));
    let of = |webhook| DeliveryFilter {
        webhook: Some(webhook),
        ..Default::default()
    };
    let mine = deliveries_of(s, of(wh.id)).await;
    assert_eq!(mine.len(), 7);
    assert!(mine.iter().all(|d| d.status == DeliveryStatus::Pending
        && d.window_attempts == 0
        && d.next_attempt_at == Some(at(20))));
    // The other webhook's deliveries are untouched.
    let theirs = deliveries_of(s, of(other.id)).await;
    assert!(theirs.iter().all(|d| d.status == DeliveryStatus::Failed));
    // Once pending, they are not replayed again.
    assert_eq!(
        s.replay(Replay {
            limit: 100,
            ..replay(None, None)
        })
        .await
        .unwrap(),
        ReplayBatch {
            replayed: 0,
            next: None
        }
    );
}

async fn webhook_cap_is_checked_in_the_write(s: &dyn Store) {
    let a = tenant(s, "a").await;
    let b = tenant(s, "b").await;
    // Eight creates at once for a tenant capped at three: exactly three get in.
    let results = futures::future::join_all(
        (0..8).map(|_| s.create_webhook_capped(webhook(Some(a), &["x.*"]), 3)),
    )
    .await;
    let created: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(created.len(), 3, "{results:?}");
    assert!(results
        .iter()
        .all(|r| r.is_ok() || matches!(r, Err(StoreError::LimitReached))));
    let of_a = s
        .list_webhooks(WebhookFilter {
            tenant: Some(a),
            all_tenants: false,
            after: None,
            limit: 100,
        })
        .await
        .unwrap();
    assert_eq!(of_a.len(), 3);
    // Another tenant has its own count; a deleted webhook no longer counts.
    s.create_webhook_capped(webhook(Some(b), &["x.*"]), 3)
        .await
        .unwrap();
    s.delete_webhook(created[0].id, at(1)).await.unwrap();
    s.create_webhook_capped(webhook(Some(a), &["x.*"]), 3)
        .await
        .unwrap();
    assert!(matches!(
        s.create_webhook_capped(webhook(Some(a), &["x.*"]), 3).await,
        Err(StoreError::LimitReached)
    ));
    // Webhooks of no tenant are counted together.
    s.create_webhook_capped(webhook(None, &["x.*"]), 1)
        .await
        .unwrap();
    assert!(matches!(
        s.create_webhook_capped(webhook(None, &["x.*"]), 1).await,
        Err(StoreError::LimitReached)
    ));
}

async fn two_results_for_one_delivery_in_a_batch_both_count(s: &dyn Store) {
    // Claimed again after its lease ran out, a delivery can have two results in one
    // batch: both attempts count, and the later result is the delivery's state.
    let t = tenant(s, "a").await;
    s.create_webhook(webhook(Some(t), &["payment.*"]))
        .await
        .unwrap();
    emit(s, event(Some(t), "payment.succeeded", None, at(1))).await;
    let job = s.claim_due_deliveries(at(2), 10, LEASE).await.unwrap();
    let d = job[0].delivery.id;
    s.record_attempts(vec![
        record(d, at(3), Some(500), AttemptOutcome::RetryAt(at(60))),
        record(d, at(4), Some(200), AttemptOutcome::Succeeded),
    ])
    .await
    .unwrap();
    let (one, attempts) = s.get_delivery(d).await.unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!((one.attempts, one.window_attempts), (2, 2));
    assert_eq!(one.status, DeliveryStatus::Succeeded);
    assert_eq!(one.last_status_code, Some(200));
}

async fn redeliver_keeps_an_attempt_in_flight_from_being_claimed_twice(s: &dyn Store) {
    // A redeliver while an attempt is in flight (its lease held) resets the window but
    // leaves the lease: the delivery is not claimed, and sent, a second time at once.
    let t = tenant(s, "a").await;
    s.create_webhook(webhook(Some(t), &["payment.*"]))
        .await
        .unwrap();
    emit(s, event(Some(t), "payment.succeeded", None, at(1))).await;
    let job = s.claim_due_deliveries(at(2), 10, LEASE).await.unwrap();
    let d = job[0].delivery.id;
    let again = s.redeliver(d, at(3)).await.unwrap();
    assert_eq!(again.status, DeliveryStatus::Pending);
    assert!(s
        .claim_due_deliveries(at(4), 10, LEASE)
        .await
        .unwrap()
        .is_empty());
    // Its in-flight result settles it; had the lease run out, it would be claimable.
    assert_eq!(
        s.claim_due_deliveries(at(2 + 31), 10, LEASE)
            .await
            .unwrap()
            .len(),
        1
    );
}
