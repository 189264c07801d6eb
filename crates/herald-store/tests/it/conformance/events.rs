//! Events: dedupe, sequences per tenant and key, history, fan-out to webhooks (and of operations' final events).

use super::*;

pub(super) async fn events_dedupe_by_id_and_idempotency_key(s: &dyn Store) {
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

pub(super) async fn events_sequence_per_tenant_and_key(s: &dyn Store) {
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

pub(super) async fn event_history_filters_and_cursor(s: &dyn Store) {
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

pub(super) async fn fan_out_only_to_matching_enabled_webhooks_of_the_tenant(s: &dyn Store) {
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

pub(super) async fn final_events_fan_out_when_operations_end(s: &dyn Store) {
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
