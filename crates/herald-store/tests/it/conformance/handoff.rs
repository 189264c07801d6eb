//! SQLite hands fresh webhook deliveries straight to the dispatcher
//! (`herald_store::handoff`): leased in the event's own write while the dispatcher has
//! free slots, claimable as before when it has none or has stopped taking them.

use super::*;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

type Taken = Arc<std::sync::Mutex<Vec<(DeliveryJob, OwnedSemaphorePermit)>>>;

fn handoff(slots: usize) -> (Handoff, Arc<Semaphore>, Taken) {
    let semaphore = Arc::new(Semaphore::new(slots));
    let taken: Taken = Arc::default();
    let into = taken.clone();
    let handoff = Handoff::new(
        semaphore.clone(),
        Duration::from_secs(60),
        Arc::new(move |job, slot| into.lock().unwrap().push((job, slot))),
    );
    (handoff, semaphore, taken)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_deliveries_are_handed_off_while_slots_are_free() {
    let h = Harness::sqlite();
    let s = &*h.store;
    let tenant = Some(TenantId::generate());
    let first = s
        .create_webhook(webhook(tenant, &["payment.*"]))
        .await
        .unwrap();
    let second = s
        .create_webhook(webhook(tenant, &["payment.*"]))
        .await
        .unwrap();
    let (offer, slots, taken) = handoff(1);
    s.hand_off_fresh(offer.clone());

    let stored = emit(s, event(tenant, "payment.succeeded", Some("pay_1"), at(0))).await;
    let jobs = std::mem::take(&mut *taken.lock().unwrap());
    assert_eq!(jobs.len(), 1, "one slot: one delivery handed off");
    assert_eq!(slots.available_permits(), 0, "the job holds its slot");
    let (job, _slot) = &jobs[0];
    assert_eq!(**job.event, stored);
    assert_eq!(*job.webhook, s.get_webhook(job.webhook.id).await.unwrap());
    assert!(job.unsendable.is_none());
    assert_eq!(job.lease_until, at(60), "leased for the handoff's 60 s");
    let (delivery, attempts) = s.get_delivery(job.delivery.id).await.unwrap();
    assert_eq!(job.delivery, delivery, "the job is the delivery as stored");
    assert!(attempts.is_empty());

    // Leased: only the other webhook's delivery is claimable, even when due.
    let claimed = s
        .claim_due_deliveries(at(1), 10, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    assert_ne!(claimed[0].delivery.id, job.delivery.id);
    let handed_to = job.webhook.id;
    assert!([first.id, second.id].contains(&handed_to));
    assert!([first.id, second.id].contains(&claimed[0].webhook.id));
    assert_ne!(claimed[0].webhook.id, handed_to);
    // The lease is the handoff's: claimable again once it is over.
    let again = s
        .claim_due_deliveries(at(61), 10, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(again.len(), 2, "both leases ran out at 60 s: {again:?}");

    // Slots free again, but the dispatcher stopped taking: nothing handed off.
    drop(jobs);
    assert_eq!(slots.available_permits(), 1);
    offer.close();
    emit(s, event(tenant, "payment.succeeded", None, at(100))).await;
    assert!(taken.lock().unwrap().is_empty());
    assert_eq!(slots.available_permits(), 1);
    let claimed = s
        .claim_due_deliveries(at(100), 10, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        claimed
            .iter()
            .filter(|j| j.event.created_at == at(100))
            .count(),
        2
    );
}

/// An event that matches no webhook, or only broker routes, hands nothing off and takes
/// no slot; a replayed event (same id) makes no second delivery and hands nothing off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_new_webhook_deliveries_are_handed_off() {
    let h = Harness::sqlite();
    let s = &*h.store;
    let tenant = Some(TenantId::generate());
    s.create_webhook(webhook(tenant, &["payment.*"]))
        .await
        .unwrap();
    let (offer, slots, taken) = handoff(8);
    s.hand_off_fresh(offer);
    emit(s, event(tenant, "invoice.paid", None, at(0))).await;
    assert!(taken.lock().unwrap().is_empty());
    let e = event(tenant, "payment.succeeded", None, at(1));
    assert!(s.insert_event(e.clone(), None).await.unwrap().is_new());
    assert!(!s.insert_event(e, None).await.unwrap().is_new());
    assert_eq!(taken.lock().unwrap().len(), 1);
    assert_eq!(slots.available_permits(), 7);
}
