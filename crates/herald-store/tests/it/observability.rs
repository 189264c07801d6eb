//! The SQLite backend's observability reads: `state_counts` (per tenant and overall),
//! `activity` (attempts and backlog spans inside a window, tenant-scoped) and
//! `schema_version`.

use crate::fixtures::*;
use herald_core::ids::*;
use herald_core::Timestamp;
use herald_store::sqlite::SqliteStore;
use herald_store::*;
use serde_json::json;
use std::time::Duration;

async fn event(store: &SqliteStore, tenant: TenantId, when: Timestamp) {
    store
        .insert_event(
            NewEvent {
                id: EventId::generate(),
                tenant: Some(tenant),
                event_type: "payment.succeeded".into(),
                key: None,
                data: json!({}),
                created_at: when,
                request_hash: "h".into(),
            },
            None,
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn counts_activity_and_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("herald.db")).unwrap();
    let (acme, globex) = (tenant(&store, "acme").await, tenant(&store, "globex").await);
    let (acme_hook, globex_hook) = (webhook(&store, acme).await, webhook(&store, globex).await);
    event(&store, acme, at(0)).await;
    event(&store, acme, at(0)).await;
    event(&store, globex, at(0)).await;

    let jobs = store
        .claim_due_deliveries(at(10), 10, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(jobs.len(), 3);
    let acme_jobs: Vec<&DeliveryJob> = jobs.iter().filter(|j| j.webhook.id == acme_hook).collect();
    let globex_job = jobs.iter().find(|j| j.webhook.id == globex_hook).unwrap();
    // acme: one delivery succeeds at 10 s; the other fails at 20 s and waits for a retry at 1 h.
    // globex: succeeds at 30 s.
    store
        .record_attempts(vec![
            AttemptRecord {
                delivery_id: acme_jobs[0].delivery.id,
                attempt: Some(attempt(acme_jobs[0], at(10), 200, 15)),
                outcome: AttemptOutcome::Succeeded,
                disable_webhook: None,
            },
            AttemptRecord {
                delivery_id: acme_jobs[1].delivery.id,
                attempt: Some(attempt(acme_jobs[1], at(20), 500, 40)),
                outcome: AttemptOutcome::RetryAt(at(3600)),
                disable_webhook: None,
            },
            AttemptRecord {
                delivery_id: globex_job.delivery.id,
                attempt: Some(attempt(globex_job, at(30), 204, 5)),
                outcome: AttemptOutcome::Succeeded,
                disable_webhook: None,
            },
        ])
        .await
        .unwrap();

    let counts = store.state_counts(Some(acme)).await.unwrap();
    assert_eq!(counts.deliveries_in(DeliveryStatus::Pending), 1);
    assert_eq!(counts.deliveries_in(DeliveryStatus::Succeeded), 1);
    assert_eq!(counts.deliveries_in(DeliveryStatus::Failed), 0);
    assert_eq!(counts.operations, vec![]);
    let all = store.state_counts(None).await.unwrap();
    assert_eq!(all.deliveries_in(DeliveryStatus::Succeeded), 2);

    let acme_activity = store
        .activity(ActivityFilter {
            tenant: Some(acme),
            since: at(0),
            until: at(60),
            limit: 100,
        })
        .await
        .unwrap();
    let seen: Vec<(Timestamp, Option<u16>, u64)> = acme_activity
        .attempts
        .iter()
        .map(|a| (a.at, a.status_code, a.latency_ms))
        .collect();
    assert_eq!(
        seen,
        vec![(at(10), Some(200), 15), (at(20), Some(500), 40)],
        "oldest first, acme only"
    );
    assert!(acme_activity
        .attempts
        .iter()
        .all(|a| a.destination == Destination::Webhook(acme_hook)));
    assert_eq!(acme_activity.attempts[1].error.as_deref(), Some("HTTP 500"));
    assert_eq!(acme_activity.deliveries.len(), 2);
    let pending = acme_activity
        .deliveries
        .iter()
        .filter(|d| d.status == DeliveryStatus::Pending)
        .count();
    assert_eq!(pending, 1);

    // The limit keeps the newest attempts.
    let newest = store
        .activity(ActivityFilter {
            tenant: None,
            since: at(0),
            until: at(60),
            limit: 1,
        })
        .await
        .unwrap();
    assert_eq!(newest.attempts.len(), 1);
    assert_eq!(newest.attempts[0].at, at(30));

    let v = store.schema_version().await.unwrap();
    assert!(v.is_current(), "{v:?}");
    // No exact number: migrations are added by more than one branch at a time.
    assert!(v.expected >= 6, "{v:?}");
}
