//! Webhooks: CRUD, disabled webhooks pause their deliveries, the per-tenant cap checked in the write.

use super::*;

pub(super) async fn webhook_crud(s: &dyn Store) {
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
        ordering: Default::default(),
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
        ordering: Default::default(),
        options: Default::default(),
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

pub(super) async fn disabled_webhook_pauses_deliveries_and_enabling_resumes(s: &dyn Store) {
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

pub(super) async fn webhook_cap_is_checked_in_the_write(s: &dyn Store) {
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
