//! Deliveries: claim, lease and outcomes, concurrent claims, 410 Gone, redeliver and replay (in batches), list filters, two results in one batch, a redeliver while an attempt is in flight.

use super::*;

pub(super) async fn deliveries_claim_lease_and_outcomes(s: &dyn Store) {
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

pub(super) async fn concurrent_delivery_claims_never_share_a_delivery(s: &dyn Store) {
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

pub(super) async fn gone_disables_the_webhook_and_pauses_its_deliveries(s: &dyn Store) {
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

pub(super) async fn redeliver_and_replay(s: &dyn Store) {
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
            event_types: None,
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
            event_types: None,
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
            event_types: None,
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

pub(super) async fn delivery_list_filters(s: &dyn Store) {
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

pub(super) async fn replay_goes_in_batches_with_a_cursor(s: &dyn Store) {
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
        event_types: None,
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
            event_types: None,
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

pub(super) async fn two_results_for_one_delivery_in_a_batch_both_count(s: &dyn Store) {
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

pub(super) async fn redeliver_keeps_an_attempt_in_flight_from_being_claimed_twice(s: &dyn Store) {
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
