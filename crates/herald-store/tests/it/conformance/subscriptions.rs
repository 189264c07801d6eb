//! Subscription settings: custom headers, payload filters and rate limits are stored,
//! changed and cleared alike; a filter decides fan-out, of published events and of the
//! final events of operations (each backend's two fan-out paths).

use super::*;
use herald_core::payload_filter::PayloadFilter;
use herald_core::webhook::{CustomHeaders, DeliveryOptions};

fn options(filter: serde_json::Value) -> DeliveryOptions {
    DeliveryOptions {
        headers: CustomHeaders::parse([("Authorization", "Bearer t"), ("x-team", "payments")])
            .unwrap(),
        filter: Some(PayloadFilter::parse(&filter).unwrap()),
        rate_limit: Some(25),
    }
}

pub(super) async fn subscription_settings_are_stored_and_changed(s: &dyn Store) {
    let t = tenant(s, "acme").await;
    let mut wh = webhook(Some(t), &["payment.*"]);
    wh.options = options(json!({"/data/currency": {"$in": ["USD", "EUR"]}}));
    let wh = s.create_webhook(wh).await.unwrap();
    let read = s.get_webhook(wh.id).await.unwrap();
    assert_eq!(read, wh, "stored whole");
    assert_eq!(
        read.options.headers.iter().collect::<Vec<_>>(),
        vec![("authorization", "Bearer t"), ("x-team", "payments")]
    );
    let listed = s
        .list_webhooks(WebhookFilter {
            tenant: Some(t),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed, vec![wh.clone()]);

    // Only what a change names changes.
    let renamed = s
        .update_webhook(
            wh.id,
            WebhookChange {
                description: Some("renamed".into()),
                ..Default::default()
            },
            at(1),
        )
        .await
        .unwrap();
    assert_eq!(renamed.options, wh.options);

    let other = PayloadFilter::parse(&json!({"/type": "payment.failed"})).unwrap();
    let changed = s
        .update_webhook(
            wh.id,
            WebhookChange {
                headers: Some(CustomHeaders::parse([("x-only", "1")]).unwrap()),
                filter: Some(Some(other.clone())),
                rate_limit: Some(Some(3)),
                ..Default::default()
            },
            at(2),
        )
        .await
        .unwrap();
    assert_eq!(changed.options.filter, Some(other));
    assert_eq!(changed.options.rate_limit, Some(3));
    assert_eq!(
        changed.options.headers.iter().collect::<Vec<_>>(),
        vec![("x-only", "1")]
    );
    assert_eq!(s.get_webhook(wh.id).await.unwrap(), changed);

    let cleared = s
        .update_webhook(
            wh.id,
            WebhookChange {
                headers: Some(CustomHeaders::default()),
                filter: Some(None),
                rate_limit: Some(None),
                ..Default::default()
            },
            at(3),
        )
        .await
        .unwrap();
    assert_eq!(cleared.options, DeliveryOptions::default());
    assert_eq!(s.get_webhook(wh.id).await.unwrap(), cleared);
}

pub(super) async fn filters_decide_fan_out_of_events_and_final_events(s: &dyn Store) {
    let t = tenant(s, "acme").await;
    let mut usd = webhook(Some(t), &["payment.*", "transcode.*"]);
    usd.options = options(json!({"$or": [
        {"/data/currency": "USD"},
        {"$and": [{"/type": "transcode.succeeded"}, {"/data/response/ok": true}]}
    ]}));
    let usd = s.create_webhook(usd).await.unwrap();
    let all = s
        .create_webhook(webhook(Some(t), &["payment.*", "transcode.*"]))
        .await
        .unwrap();
    let pay = |currency: &str| {
        let mut e = event(Some(t), "payment.succeeded", None, at(1));
        e.data = json!({ "currency": currency, "amount": 5 });
        e.request_hash = format!("{}{currency}", e.id);
        e
    };
    let dollars = emit(s, pay("USD")).await;
    let euros = emit(s, pay("EUR")).await;
    let events_of = |w: WebhookId| async move {
        let mut got: Vec<EventId> = deliveries_of(
            s,
            DeliveryFilter {
                webhook: Some(w),
                ..Default::default()
            },
        )
        .await
        .iter()
        .map(|d| d.event_id)
        .collect();
        got.sort();
        got
    };
    assert_eq!(events_of(usd.id).await, vec![dollars.id]);
    assert_eq!(events_of(all.id).await, vec![dollars.id, euros.id]);

    // An operation's final event fans out in the operation's transaction, through the
    // same plan: `{"ok": true}` passes, `{"ok": false}` does not.
    for ok in [true, false] {
        let id = create(s, new_op(Some(t), "transcode", 3)).await;
        let c = claim(s, &["transcode"], 1, at(2)).await;
        s.finish_operation(finish(
            id,
            &token(&c[0]),
            FinishAs::Complete(json!({ "ok": ok })),
            at(3),
        ))
        .await
        .unwrap();
    }
    let final_types = |w: WebhookId| async move {
        deliveries_of(
            s,
            DeliveryFilter {
                webhook: Some(w),
                ..Default::default()
            },
        )
        .await
        .iter()
        .filter(|d| d.event_type == "transcode.succeeded")
        .count()
    };
    assert_eq!(final_types(usd.id).await, 1);
    assert_eq!(final_types(all.id).await, 2);

    // A filter edit is seen by the next event at once (both backends cache parsed targets).
    s.update_webhook(
        usd.id,
        WebhookChange {
            filter: Some(Some(
                PayloadFilter::parse(&json!({"/data/currency": "EUR"})).unwrap(),
            )),
            ..Default::default()
        },
        at(4),
    )
    .await
    .unwrap();
    let more_euros = emit(s, pay("EUR")).await;
    let more_dollars = emit(s, pay("USD")).await;
    let got = events_of(usd.id).await;
    assert!(got.contains(&more_euros.id) && !got.contains(&more_dollars.id));
    // The claimed job carries the headers the dispatcher sends.
    let jobs = s.claim_due_deliveries(at(5), 100, LEASE).await.unwrap();
    let job = jobs.iter().find(|j| j.webhook.id == usd.id).unwrap();
    assert_eq!(job.webhook.options.headers, usd.options.headers);
}

async fn events_of_type(
    s: &dyn Store,
    t: TenantId,
    event_type: &str,
) -> Vec<herald_core::event::Event> {
    s.list_events(EventFilter {
        tenant: Some(t),
        event_type: Some(event_type.into()),
        limit: 100,
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn event_ids_for(s: &dyn Store, w: WebhookId) -> Vec<EventId> {
    deliveries_of(
        s,
        DeliveryFilter {
            webhook: Some(w),
            ..Default::default()
        },
    )
    .await
    .iter()
    .map(|d| d.event_id)
    .collect()
}

/// `delivery.failed` (a final failure) and `webhook.disabled` (a 410, or through the API)
/// are stored for the webhook's tenant in the write that causes them and fan out like any
/// event, except to the webhook they are about; a failed `delivery.failed` raises nothing.
pub(super) async fn operational_events_are_raised_in_the_write_that_causes_them(s: &dyn Store) {
    let t = tenant(s, "acme").await;
    let failing = s.create_webhook(webhook(Some(t), &["*"])).await.unwrap();
    let owner = s
        .create_webhook(webhook(Some(t), &["delivery.failed", "webhook.disabled"]))
        .await
        .unwrap();
    emit(s, event(Some(t), "payment.succeeded", None, at(1))).await;
    emit(s, event(Some(t), "payment.succeeded", None, at(1))).await;
    let jobs = s.claim_due_deliveries(at(2), 10, LEASE).await.unwrap();
    assert_eq!(jobs.len(), 2);
    s.record_attempts(vec![record(
        jobs[0].delivery.id,
        at(3),
        Some(500),
        AttemptOutcome::Failed,
    )])
    .await
    .unwrap();
    let failed = events_of_type(s, t, "delivery.failed").await;
    assert_eq!(failed.len(), 1);
    let data = &failed[0].data;
    assert_eq!(data["delivery"], json!(jobs[0].delivery.id.to_string()));
    assert_eq!(data["webhook"], json!(failing.id.to_string()));
    assert_eq!(data["event"]["id"], json!(jobs[0].event.id.to_string()));
    assert_eq!(data["event"]["type"], "payment.succeeded");
    assert_eq!(data["attempts"], 1);
    assert_eq!(data["last_status_code"], 500);
    // Fanned out to the owner's webhook, not back to the failing one (which takes `*`).
    assert!(event_ids_for(s, owner.id).await.contains(&failed[0].id));
    assert!(!event_ids_for(s, failing.id).await.contains(&failed[0].id));
    // A retry scheduled is not a failure.
    assert_eq!(events_of_type(s, t, "webhook.disabled").await.len(), 0);

    // A 410: the delivery is dead (delivery.failed) and the webhook disabled (webhook.disabled).
    s.record_attempts(vec![AttemptRecord {
        disable_webhook: Some((failing.id, "endpoint answered 410 Gone".into())),
        ..record(
            jobs[1].delivery.id,
            at(4),
            Some(410),
            AttemptOutcome::Failed,
        )
    }])
    .await
    .unwrap();
    let disabled = events_of_type(s, t, "webhook.disabled").await;
    assert_eq!(disabled.len(), 1);
    assert_eq!(disabled[0].data["webhook"], json!(failing.id.to_string()));
    assert_eq!(disabled[0].data["reason"], "endpoint answered 410 Gone");
    // The dead delivery a second later is held: one `delivery.failed` per webhook a minute.
    assert_eq!(events_of_type(s, t, "delivery.failed").await.len(), 1);
    assert!(event_ids_for(s, owner.id).await.contains(&disabled[0].id));
    // Disabling what is already disabled is no news.
    s.update_webhook(
        failing.id,
        WebhookChange {
            disabled: Some(true),
            ..Default::default()
        },
        at(5),
    )
    .await
    .unwrap();
    assert_eq!(events_of_type(s, t, "webhook.disabled").await.len(), 1);

    // The owner's webhook fails a `delivery.failed` for good: no cascade.
    let owner_jobs = s.claim_due_deliveries(at(6), 10, LEASE).await.unwrap();
    assert!(!owner_jobs.is_empty());
    s.record_attempts(
        owner_jobs
            .iter()
            .map(|j| record(j.delivery.id, at(7), Some(500), AttemptOutcome::Failed))
            .collect(),
    )
    .await
    .unwrap();
    let raised = events_of_type(s, t, "delivery.failed").await.len();
    let from_owner = owner_jobs
        .iter()
        .filter(|j| j.event.event_type != "delivery.failed")
        .count();
    assert_eq!(
        raised,
        1 + from_owner.min(1),
        "only the non-delivery.failed ones raise (one per webhook a minute)"
    );

    // Through the API, with its reason; not delivered to the webhook it is about.
    s.update_webhook(
        owner.id,
        WebhookChange {
            disabled: Some(true),
            ..Default::default()
        },
        at(8),
    )
    .await
    .unwrap();
    let disabled = events_of_type(s, t, "webhook.disabled").await;
    assert_eq!(disabled.len(), 2);
    assert_eq!(disabled[1].data["webhook"], json!(owner.id.to_string()));
    assert_eq!(
        disabled[1].data["reason"],
        WebhookChange::DISABLED_THROUGH_API
    );
    assert!(!event_ids_for(s, owner.id).await.contains(&disabled[1].id));
}

/// A storm of dead deliveries raises one `delivery.failed` per webhook a minute, not one
/// each: the first raises it (`failures: 1`), the rest within 60 s are held, and the next
/// one raised after counts them; another webhook's failures are counted apart.
pub(super) async fn delivery_failed_is_raised_once_a_minute_per_webhook(s: &dyn Store) {
    let t = tenant(s, "acme").await;
    let failing = s
        .create_webhook(webhook(Some(t), &["payment.*"]))
        .await
        .unwrap();
    for _ in 0..4 {
        emit(s, event(Some(t), "payment.succeeded", None, at(1))).await;
    }
    let jobs = s.claim_due_deliveries(at(2), 10, LEASE).await.unwrap();
    assert_eq!(jobs.len(), 4);
    // Three die within a minute, two of them in one write.
    s.record_attempts(vec![record(
        jobs[0].delivery.id,
        at(3),
        Some(500),
        AttemptOutcome::Failed,
    )])
    .await
    .unwrap();
    s.record_attempts(vec![
        record(
            jobs[1].delivery.id,
            at(30),
            Some(500),
            AttemptOutcome::Failed,
        ),
        record(
            jobs[2].delivery.id,
            at(30),
            Some(500),
            AttemptOutcome::Failed,
        ),
    ])
    .await
    .unwrap();
    let failed = events_of_type(s, t, "delivery.failed").await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].data["failures"], 1);
    assert_eq!(
        failed[0].data["delivery"],
        json!(jobs[0].delivery.id.to_string())
    );
    // A minute after the first: raised again, standing for the two held and itself.
    s.record_attempts(vec![record(
        jobs[3].delivery.id,
        at(63),
        Some(500),
        AttemptOutcome::Failed,
    )])
    .await
    .unwrap();
    let failed = events_of_type(s, t, "delivery.failed").await;
    assert_eq!(failed.len(), 2, "{failed:?}");
    let last = failed
        .iter()
        .find(|e| e.data["delivery"] == json!(jobs[3].delivery.id.to_string()))
        .expect("the fourth raised one");
    assert_eq!(last.data["failures"], 3);
    assert_eq!(last.data["webhook"], json!(failing.id.to_string()));
}
