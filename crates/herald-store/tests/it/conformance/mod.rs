//! One store conformance suite, written once against `&dyn Store` and run for both
//! backends: SQLite (a temp file, always) and PostgreSQL (a fresh database per test,
//! created through `HERALD_TEST_DATABASE_URL` and dropped after; skipped when unset).

mod claims;
mod deliveries;
mod events;
mod feed;
mod handoff;
mod lines;
mod nodes;
mod operations;
mod portal;
mod races;
mod retention;
mod subscriptions;
mod tenants;
mod webhooks;

use claims::*;
use deliveries::*;
use events::*;
use feed::*;
use lines::*;
use operations::*;
use portal::*;
use races::*;
use subscriptions::*;
use tenants::*;
use webhooks::*;

use herald_core::auth::Role;
use herald_core::ids::*;
use herald_core::operation::{codes, OperationError, OperationState, Outcome};
use herald_core::pattern::EventPattern;
use herald_core::signing::SignatureFormat;
use herald_core::Timestamp;
use herald_store::postgres::PgStore;
use herald_store::sqlite::SqliteStore;
use herald_store::*;
use herald_testkit::database::{admin_url, TestDatabase, DATABASE_URL};
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
    /// Dropped when the test ends, passed or not.
    _db: Option<TestDatabase>,
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
        let db = TestDatabase::create(admin_url(DATABASE_URL)?).await;
        let store = PgStore::connect(&db.url).await.unwrap();
        Some(Harness {
            store: Arc::new(store),
            _dir: None,
            _db: Some(db),
        })
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
    a_result_racing_an_enable_leaves_its_delivery_due,
    a_redeliver_or_replay_racing_an_enable_leaves_its_delivery_due,
    one_batch_of_results_settles_every_kind_of_delivery_in_it,
    concurrent_delivery_claims_never_share_a_delivery,
    gone_disables_the_webhook_and_pauses_its_deliveries,
    redeliver_and_replay,
    delivery_list_filters,
    purges_old_settled_events_in_batches_and_keeps_the_rest,
    replay_goes_in_batches_with_a_cursor,
    webhook_cap_is_checked_in_the_write,
    an_ordered_webhook_sends_a_key_one_at_a_time,
    a_line_moves_on_when_retention_purges_its_dead_head,
    a_replay_lines_deliveries_up_as_the_webhook_orders_now,
    the_dispatchers_sleep_skips_what_the_claim_cannot_take,
    ordered_lines_hold_against_a_model,
    feed_reads_in_commit_order_after_a_cursor,
    consumers_ack_forward_only_and_what_was_delivered,
    positions_never_go_back_after_retention_empties_the_feed,
    subscription_settings_are_stored_and_changed,
    filters_decide_fan_out_of_events_and_final_events,
    operational_events_are_raised_in_the_write_that_causes_them,
    delivery_failed_is_raised_once_a_minute_per_webhook,
    portal_tokens_open_their_session_once,
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
        ordering: Default::default(),
        options: Default::default(),
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

use retention::purges_old_settled_events_in_batches_and_keeps_the_rest;
