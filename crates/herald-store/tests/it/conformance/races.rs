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

pub(super) async fn one_batch_of_results_settles_every_kind_of_delivery_in_it(s: &dyn Store) {
    // One batch of results mixing an ordered webhook's keyed head, an unordered webhook's
    // deliveries and the retries of a webhook deleted after they were claimed: the keyed
    // line's next delivery becomes due, the unordered ones end, and the deleted webhook's
    // retries end instead of waiting for a webhook that owes nothing. (The lines' and the
    // deleted-webhook statements run only for the results that need them.)
    let t = tenant(s, "a").await;
    let mut o = webhook(Some(t), &["mix.*"]);
    o.ordering = herald_core::webhook::Ordering::Key;
    o.max_concurrency = None;
    let ordered = s.create_webhook(o).await.unwrap();
    let mut p = webhook(Some(t), &["mix.*"]);
    p.max_concurrency = None;
    let plain = s.create_webhook(p.clone()).await.unwrap();
    p.id = WebhookId::generate();
    let doomed = s.create_webhook(p).await.unwrap();
    for _ in 0..2 {
        emit(s, event(Some(t), "mix.x", Some("k"), at(1))).await;
    }
    let jobs = s.claim_due_deliveries(at(1), 100, LEASE).await.unwrap();
    let of =
        |w: WebhookId| -> Vec<&DeliveryJob> { jobs.iter().filter(|j| j.webhook.id == w).collect() };
    assert_eq!(of(ordered.id).len(), 1, "only the line's head: {jobs:?}");
    assert_eq!(of(ordered.id)[0].event.sequence, Some(1));
    assert_eq!(of(plain.id).len(), 2);
    assert_eq!(of(doomed.id).len(), 2);
    s.delete_webhook(doomed.id, at(2)).await.unwrap();

    let mut results = vec![record(
        of(ordered.id)[0].delivery.id,
        at(2),
        Some(200),
        AttemptOutcome::Succeeded,
    )];
    for j in of(plain.id) {
        results.push(record(
            j.delivery.id,
            at(2),
            Some(200),
            AttemptOutcome::Succeeded,
        ));
    }
    for j in of(doomed.id) {
        results.push(record(
            j.delivery.id,
            at(2),
            Some(500),
            AttemptOutcome::RetryAt(at(5)),
        ));
    }
    s.record_attempts(results).await.unwrap();

    // The next of the line is due now; nothing of the deleted webhook is, then or later.
    for now in [at(3), at(60)] {
        let again = s.claim_due_deliveries(now, 100, LEASE).await.unwrap();
        let got: Vec<_> = again
            .iter()
            .map(|j| (j.webhook.id, j.event.sequence))
            .collect();
        let want = if now == at(3) {
            vec![(ordered.id, Some(2))]
        } else {
            vec![]
        };
        assert_eq!(got, want, "claimed at {now:?}");
        for j in &again {
            s.record_attempts(vec![record(
                j.delivery.id,
                now,
                Some(200),
                AttemptOutcome::Succeeded,
            )])
            .await
            .unwrap();
        }
    }
    for (w, want) in [
        (plain.id, DeliveryStatus::Succeeded),
        (ordered.id, DeliveryStatus::Succeeded),
    ] {
        for d in deliveries_of(
            s,
            DeliveryFilter {
                webhook: Some(w),
                ..Default::default()
            },
        )
        .await
        {
            assert_eq!(d.status, want, "{d:?}");
        }
    }
    for j in of(doomed.id) {
        let (d, _) = s.get_delivery(j.delivery.id).await.unwrap();
        assert_ne!(d.status, DeliveryStatus::Pending, "{d:?}");
        assert_eq!(d.next_attempt_at, None, "{d:?}");
    }
}
