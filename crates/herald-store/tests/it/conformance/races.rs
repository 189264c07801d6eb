//! Two writers on one webhook's deliveries at once: the result stays the one either order
//! would give.

use super::*;

pub(super) async fn a_result_racing_an_enable_leaves_its_delivery_due(s: &dyn Store) {
    // An attempt's result and the user's enable of its (disabled) webhook, at the same
    // time, in either order: the retry must end up due, never pending with no due time
    // (which nothing would ever claim). Repeated, as the two race.
    let t = tenant(s, "a").await;
    let toggle = |disabled| WebhookChange {
        disabled: Some(disabled),
        ..Default::default()
    };
    for n in 0..20 {
        let wh = s
            .create_webhook(webhook(Some(t), &["race.*"]))
            .await
            .unwrap();
        emit(s, event(Some(t), "race.x", None, at(n))).await;
        let jobs = s.claim_due_deliveries(at(n), 10, LEASE).await.unwrap();
        let job = jobs.iter().find(|j| j.webhook.id == wh.id).unwrap();
        s.update_webhook(wh.id, toggle(true), at(n)).await.unwrap();
        let result = s.record_attempts(vec![record(
            job.delivery.id,
            at(n),
            Some(500),
            AttemptOutcome::RetryAt(at(n + 5)),
        )]);
        let enable = s.update_webhook(wh.id, toggle(false), at(n));
        let (recorded, enabled) = tokio::join!(result, enable);
        recorded.unwrap();
        enabled.unwrap();
        let (d, _) = s.get_delivery(job.delivery.id).await.unwrap();
        assert_eq!(d.status, DeliveryStatus::Pending);
        assert!(
            d.next_attempt_at.is_some(),
            "round {n}: pending with no due time after the enable: {d:?}"
        );
        s.delete_webhook(wh.id, at(n)).await.unwrap();
    }
}

pub(super) async fn a_redeliver_or_replay_racing_an_enable_leaves_its_delivery_due(s: &dyn Store) {
    // The same race with an operator's redeliver or replay of a dead delivery: it must
    // end up due once the webhook is enabled, whichever commits first.
    let t = tenant(s, "a").await;
    let toggle = |disabled| WebhookChange {
        disabled: Some(disabled),
        ..Default::default()
    };
    for n in 0..20 {
        let wh = s
            .create_webhook(webhook(Some(t), &["race.*"]))
            .await
            .unwrap();
        emit(s, event(Some(t), "race.x", None, at(n))).await;
        let jobs = s.claim_due_deliveries(at(n), 10, LEASE).await.unwrap();
        let job = jobs.iter().find(|j| j.webhook.id == wh.id).unwrap();
        let id = job.delivery.id;
        s.record_attempts(vec![record(id, at(n), Some(500), AttemptOutcome::Failed)])
            .await
            .unwrap();
        s.update_webhook(wh.id, toggle(true), at(n)).await.unwrap();
        let enable = s.update_webhook(wh.id, toggle(false), at(n));
        if n % 2 == 0 {
            let (again, enabled) = tokio::join!(s.redeliver(id, at(n)), enable);
            again.unwrap();
            enabled.unwrap();
        } else {
            let replay = s.replay(Replay {
                event_types: None,
                webhook: wh.id,
                since: at(0),
                until: at(n + 1),
                status: None,
                after: None,
                limit: 500,
                now: at(n),
            });
            let (replayed, enabled) = tokio::join!(replay, enable);
            assert_eq!(replayed.unwrap().replayed, 1);
            enabled.unwrap();
        }
        let (d, _) = s.get_delivery(id).await.unwrap();
        assert_eq!(d.status, DeliveryStatus::Pending);
        assert!(
            d.next_attempt_at.is_some(),
            "round {n}: pending with no due time after the enable: {d:?}"
        );
        s.delete_webhook(wh.id, at(n)).await.unwrap();
    }
}
