//! The broker outbox in the store: events fan out to matching routes in their own
//! transaction, and only the head of each (route, key) line can be claimed.

use herald_core::ids::{AttemptId, EventId};
use herald_core::pattern::EventPattern;
use herald_core::Timestamp;
use herald_store::sqlite::SqliteStore;
use herald_store::*;
use serde_json::json;
use std::time::Duration;

const T0: Timestamp = Timestamp(1_775_834_400_000);
const LEASE: Duration = Duration::from_secs(60);

fn store() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("herald.db")).unwrap();
    store.set_routes(vec![OutboxRoute {
        name: "payments".into(),
        events: vec![EventPattern::parse("payment.*").unwrap()],
        key: "/data/payment_id".into(),
    }]);
    (store, dir)
}

async fn event(store: &SqliteStore, event_type: &str, payment: Option<&str>) -> EventId {
    let id = EventId::generate();
    let data = match payment {
        Some(p) => json!({ "payment_id": p }),
        None => json!({}),
    };
    store
        .insert_event(
            NewEvent {
                id,
                tenant: None,
                event_type: event_type.into(),
                key: None,
                data,
                created_at: T0,
                request_hash: id.to_string(),
            },
            None,
        )
        .await
        .unwrap();
    id
}

fn record(job: &BrokerJob, outcome: AttemptOutcome) -> AttemptRecord {
    AttemptRecord {
        delivery_id: job.delivery.id,
        attempt: Some(Attempt {
            id: AttemptId::generate(),
            delivery_id: job.delivery.id,
            at: T0,
            status_code: None,
            latency_ms: 1,
            error: (outcome != AttemptOutcome::Succeeded).then(|| "broker down".to_owned()),
            response_excerpt: None,
        }),
        outcome,
        disable_webhook: None,
    }
}

#[tokio::test]
async fn matching_events_get_a_route_delivery_with_their_key() {
    let (store, _dir) = store();
    let e = event(&store, "payment.succeeded", Some("pay_42")).await;
    event(&store, "invoice.paid", Some("pay_42")).await;
    let all = store
        .list_deliveries(DeliveryFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 1, "only the matching event: {all:?}");
    assert_eq!(all[0].event_id, e);
    assert_eq!(all[0].destination, Destination::Route("payments".into()));
    assert_eq!(all[0].ordering_key.as_deref(), Some("pay_42"));
    // Tenant views leave broker deliveries out; webhook claims never see them.
    let tenant_view = store
        .list_deliveries(DeliveryFilter {
            webhooks_only: true,
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(tenant_view.is_empty());
    assert!(store
        .claim_due_deliveries(T0, 10, LEASE)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.next_delivery_due().await.unwrap(), None);
}

#[tokio::test]
async fn only_the_head_of_each_key_line_is_claimed_retries_included() {
    let (store, _dir) = store();
    let a1 = event(&store, "payment.created", Some("a")).await;
    let a2 = event(&store, "payment.succeeded", Some("a")).await;
    let b1 = event(&store, "payment.created", Some("b")).await;
    let n1 = event(&store, "payment.noted", None).await;
    let n2 = event(&store, "payment.noted", None).await;

    let jobs = store
        .claim_due_broker_deliveries(T0, 100, LEASE)
        .await
        .unwrap();
    let claimed: Vec<EventId> = jobs.iter().map(|j| j.event.id).collect();
    // a2 waits behind a1; unkeyed deliveries are not ordered.
    assert_eq!(claimed, vec![a1, b1, n1, n2]);
    assert!(jobs.iter().all(|j| j.route == "payments"));
    // Leased: nothing more to claim while they are in flight.
    assert!(store
        .claim_due_broker_deliveries(T0, 100, LEASE)
        .await
        .unwrap()
        .is_empty());

    // a1 fails and is retried later; a2 must still wait even though it is due.
    let retry_at = T0.plus(Duration::from_secs(5));
    let records = jobs
        .iter()
        .map(|j| {
            if j.event.id == a1 {
                record(j, AttemptOutcome::RetryAt(retry_at))
            } else {
                record(j, AttemptOutcome::Succeeded)
            }
        })
        .collect();
    store.record_attempts(records).await.unwrap();
    let later = T0.plus(Duration::from_secs(1));
    assert!(store
        .claim_due_broker_deliveries(later, 100, LEASE)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.next_broker_delivery_due().await.unwrap(),
        Some(retry_at)
    );

    let jobs = store
        .claim_due_broker_deliveries(retry_at, 100, LEASE)
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].event.id, a1);
    assert_eq!(jobs[0].delivery.attempts, 1);
    // Refused for good: dead-lettered, and the line moves on.
    store
        .record_attempts(vec![record(&jobs[0], AttemptOutcome::Failed)])
        .await
        .unwrap();
    let jobs = store
        .claim_due_broker_deliveries(retry_at, 100, LEASE)
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].event.id, a2);
    store
        .record_attempts(vec![record(&jobs[0], AttemptOutcome::Succeeded)])
        .await
        .unwrap();

    // `:redeliver` puts the dead one back at the head of its line.
    let dead = store
        .list_deliveries(DeliveryFilter {
            status: Some(DeliveryStatus::Failed),
            route: Some("payments".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].last_error.as_deref(), Some("broker down"));
    let d = store.redeliver(dead[0].id, retry_at).await.unwrap();
    assert_eq!(d.status, DeliveryStatus::Pending);
    let jobs = store
        .claim_due_broker_deliveries(retry_at, 100, LEASE)
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].event.id, a1);
    let (_, attempts) = store.get_delivery(jobs[0].delivery.id).await.unwrap();
    assert_eq!(attempts.len(), 2);
}

#[tokio::test]
async fn a_key_pointer_that_finds_nothing_leaves_the_delivery_unkeyed() {
    let (store, _dir) = store();
    event(&store, "payment.created", None).await;
    let d = store
        .list_deliveries(DeliveryFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(d[0].ordering_key, None);
}
