//! Retention: `purge_settled_events` removes old events that no delivery still owes, with
//! their deliveries and attempts, in bounded batches, and keeps events that are new or
//! still owed and the per-key sequence.

use crate::fixtures::*;
use herald_core::ids::*;
use herald_core::Timestamp;
use herald_store::*;
use serde_json::json;
use std::time::Duration;

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
