//! The webhook engine's tests: a dispatcher against a SQLite store, a manual clock and
//! the kit's receivers.

use super::*;
use herald_core::ids::{EventId, TenantId};
use herald_core::pattern::EventPattern;
use herald_core::signing::{verify_herald, SignatureFormat};
use herald_core::ManualClock;
use herald_core::Timestamp;
use herald_store::{DeliveryFilter, DeliveryStatus, NewEvent, Webhook};
use herald_testkit::eventually;
use herald_testkit::receiver::{Behavior, Receiver};
use std::sync::Mutex;

const T0: Timestamp = Timestamp(1_775_834_400_000);

#[test]
fn config_is_validated() {
    let store: Arc<dyn Store> = Arc::new(test_store().0);
    let clock: Arc<dyn Clock> = Arc::new(herald_core::ManualClock::new(T0));
    let bad = DispatcherConfig {
        max_in_flight: 0,
        ..Default::default()
    };
    assert!(matches!(
        Dispatcher::new(store.clone(), clock.clone(), bad),
        Err(DispatchError::Config(_))
    ));
    assert!(Dispatcher::new(store, clock, DispatcherConfig::default()).is_ok());
}

/// A receiver that answers with `statuses` in turn (the last one repeats), and its
/// `/hooks` URL.
async fn receiver(statuses: &[u16]) -> (String, Receiver) {
    let (last, first) = statuses.split_last().unwrap();
    let receiver = Receiver::start().await;
    receiver.script(first.iter().map(|&s| Behavior::Status(s)));
    receiver.set_fallback(Behavior::Status(*last));
    (receiver.url("/hooks"), receiver)
}

fn webhook(url: &str, now: Timestamp, max_concurrency: Option<u32>) -> Webhook {
    Webhook {
        id: WebhookId::generate(),
        tenant: None,
        url: url.into(),
        events: vec![EventPattern::parse("payment.*").unwrap()],
        format: SignatureFormat::Herald,
        secret: "hsec_test".into(),
        secret_version: 1,
        previous_secret: None,
        schedule: None,
        max_concurrency,
        ordering: Default::default(),
        options: Default::default(),
        disabled: false,
        disabled_reason: None,
        description: None,
        created_at: now,
        updated_at: now,
    }
}

pub(crate) async fn publish(store: &dyn Store, now: Timestamp) -> EventId {
    let id = EventId::generate();
    let event = NewEvent {
        id,
        tenant: None,
        event_type: "payment.succeeded".into(),
        key: None,
        data: serde_json::json!({ "payment_id": "pay_42" }),
        created_at: now,
        request_hash: id.to_string(),
    };
    store.insert_event(event, None).await.unwrap();
    id
}

async fn deliveries(store: &dyn Store, webhook: WebhookId) -> Vec<herald_store::Delivery> {
    let filter = DeliveryFilter {
        webhook: Some(webhook),
        limit: 100,
        ..Default::default()
    };
    store.list_deliveries(filter).await.unwrap()
}

/// Records the deferrals the dispatcher reports.
#[derive(Default)]
struct Deferrals(Mutex<Vec<Deferral>>);

impl AttemptObserver for Deferrals {
    fn attempt_judged(&self, _: &SendResult, _: &AttemptOutcome) {}
    fn deferred(&self, reason: Deferral) {
        self.0.lock().unwrap().push(reason);
    }
}

struct Running {
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
    deferrals: Arc<Deferrals>,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

fn start(config: DispatcherConfig) -> Running {
    let (store, dir) = test_store();
    let store: Arc<dyn Store> = Arc::new(store);
    let clock = Arc::new(ManualClock::starting_now());
    let config = DispatcherConfig {
        allow_private_destinations: true,
        ..config
    };
    let deferrals = Arc::new(Deferrals::default());
    let dispatcher = Dispatcher::new(store.clone(), clock.clone(), config)
        .unwrap()
        .with_observer(deferrals.clone());
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(dispatcher.run(shutdown.clone()));
    Running {
        store,
        clock,
        deferrals,
        shutdown,
        handle,
        _dir: dir,
    }
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.handle)
            .await
            .unwrap()
            .unwrap();
    }
}

#[tokio::test]
async fn delivers_retries_on_the_schedule_and_succeeds() {
    let r = start(DispatcherConfig::default());
    let (url, requests) = receiver(&[500, 200]).await;
    let wh = r
        .store
        .create_webhook(webhook(&url, r.clock.now(), None))
        .await
        .unwrap();
    let t0 = r.clock.now();
    publish(&*r.store, t0).await;

    let first = requests.wait_for(1, Duration::from_secs(5)).await.remove(0);
    let sig = first.header("x-signature");
    let ts = first.header("x-timestamp");
    assert_eq!(ts, t0.to_rfc3339_seconds());
    assert!(verify_herald("hsec_test", &ts, &first.body, &sig));
    assert_eq!(
        first.header("x-delivery-attempt"),
        "1",
        "{:?}",
        first.headers
    );

    // The 500 is recorded and the retry is due 5 s (±10 %) later.
    eventually("the retry to be scheduled", || async {
        let d = deliveries(&*r.store, wh.id).await;
        d.len() == 1 && d[0].attempts == 1
    })
    .await;
    let d = &deliveries(&*r.store, wh.id).await[0];
    assert_eq!(d.status, DeliveryStatus::Pending);
    assert_eq!(d.last_status_code, Some(500));
    let next = d.next_attempt_at.unwrap();
    assert!(
        next >= t0.plus(Duration::from_millis(4500))
            && next <= t0.plus(Duration::from_millis(5500)),
        "{next:?}"
    );
    assert_eq!(requests.count(), 1, "no retry before the clock moves");

    r.clock.advance(Duration::from_secs(6));
    let second = requests.wait_for(2, Duration::from_secs(5)).await.remove(1);
    assert_eq!(second.header("x-delivery-attempt"), "2");
    eventually("success", || async {
        deliveries(&*r.store, wh.id).await[0].status == DeliveryStatus::Succeeded
    })
    .await;
    let (_, attempts) = r.store.get_delivery(d.id).await.unwrap();
    assert_eq!(attempts.len(), 2);
    let failed = attempts
        .iter()
        .find(|a| a.status_code == Some(500))
        .unwrap();
    assert_eq!(failed.error.as_deref(), Some("HTTP 500"));
    assert_eq!(failed.response_excerpt.as_deref(), Some("ok"));
    assert_eq!(failed.at, t0);
    r.stop().await;
}

#[tokio::test]
async fn gone_disables_the_webhook() {
    let r = start(DispatcherConfig::default());
    let (url, _requests) = receiver(&[410]).await;
    let wh = r
        .store
        .create_webhook(webhook(&url, r.clock.now(), None))
        .await
        .unwrap();
    publish(&*r.store, r.clock.now()).await;
    eventually("the delivery to fail", || async {
        deliveries(&*r.store, wh.id).await[0].status == DeliveryStatus::Failed
    })
    .await;
    let wh = r.store.get_webhook(wh.id).await.unwrap();
    assert!(wh.disabled);
    assert_eq!(
        wh.disabled_reason.as_deref(),
        Some("endpoint answered 410 Gone")
    );
    r.stop().await;
}

#[tokio::test]
async fn an_open_circuit_defers_without_attempting_and_spares_other_webhooks() {
    let config = DispatcherConfig {
        breaker_threshold: 2,
        ..Default::default()
    };
    let r = start(config);
    let (dead_url, dead_requests) = receiver(&[500]).await;
    let (good_url, _good) = receiver(&[200]).await;
    let now = r.clock.now();
    // Concurrency 1: the three deliveries go one after another.
    let dead = r
        .store
        .create_webhook(webhook(&dead_url, now, Some(1)))
        .await
        .unwrap();
    for _ in 0..3 {
        publish(&*r.store, now).await;
    }
    let good = r
        .store
        .create_webhook(webhook(&good_url, now, None))
        .await
        .unwrap();
    publish(&*r.store, now).await;

    eventually("two attempts and a deferral", || async {
        let d = deliveries(&*r.store, dead.id).await;
        d.len() == 4
            && d.iter().filter(|d| d.attempts == 1).count() == 2
            && d.iter().all(|d| {
                d.attempts == 1 || d.next_attempt_at > Some(now.plus(Duration::from_secs(20)))
            })
    })
    .await;
    let d = deliveries(&*r.store, dead.id).await;
    let untouched: Vec<_> = d.iter().filter(|d| d.attempts == 0).collect();
    assert_eq!(untouched.len(), 2, "{d:?}");
    for u in untouched {
        assert_eq!(u.status, DeliveryStatus::Pending);
        let at = u.next_attempt_at.unwrap();
        assert!(
            at >= now.plus(Duration::from_secs(30)) && at <= now.plus(Duration::from_secs(31)),
            "{at:?}"
        );
    }
    assert_eq!(dead_requests.count(), 2);
    // Reported as such (the `herald_delivery_deferrals_total` metric).
    assert_eq!(
        *r.deferrals.0.lock().unwrap(),
        vec![Deferral::CircuitOpen, Deferral::CircuitOpen]
    );
    eventually("the healthy webhook's delivery", || async {
        let d = deliveries(&*r.store, good.id).await;
        d.iter().any(|d| {
            d.destination.webhook() == Some(good.id) && d.status == DeliveryStatus::Succeeded
        })
    })
    .await;
    r.stop().await;
}

/// A graceful stop leaves nothing leased: the delivery being sent (to an endpoint
/// that never answers) ends within the grace as a timed-out attempt with its retry
/// scheduled, and the two waiting for the webhook's one slot hand their leases back
/// at once, claimable again right after the stop with no attempt counted.
#[tokio::test]
async fn a_graceful_stop_leaves_no_claimed_delivery_leased() {
    // Never answered within the dispatcher's 2 s timeout.
    let seen = Receiver::start().await;
    seen.set_fallback(Behavior::Hang(Duration::from_secs(60)));
    let url = seen.url("/hooks");
    let r = start(DispatcherConfig {
        timeout: Duration::from_secs(2),
        ..Default::default()
    });
    let wh = r
        .store
        .create_webhook(webhook(&url, r.clock.now(), Some(1)))
        .await
        .unwrap();
    for _ in 0..3 {
        publish(&*r.store, r.clock.now()).await;
    }
    seen.wait_for(1, Duration::from_secs(5)).await; // the first delivery was sent
    let store = r.store.clone();
    let now = r.clock.now();
    let lease = Duration::from_secs(600);
    assert!(
        store
            .claim_due_deliveries(now, 10, lease)
            .await
            .unwrap()
            .is_empty(),
        "all three are claimed by the running dispatcher"
    );
    r.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), r.handle)
        .await
        .expect("the dispatcher stopped within its grace")
        .unwrap();
    let again = store.claim_due_deliveries(now, 10, lease).await.unwrap();
    assert_eq!(again.len(), 2, "the two waiting were handed back");
    for job in &again {
        assert_eq!(job.webhook.id, wh.id);
        assert_eq!(
            job.delivery.attempts, 0,
            "a handed-back delivery is not an attempt"
        );
    }
    assert_eq!(seen.count(), 1, "the waiting two were never sent");
    let sent: Vec<_> = deliveries(&*store, wh.id)
        .await
        .into_iter()
        .filter(|d| d.attempts > 0)
        .collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].status, DeliveryStatus::Pending);
    assert!(sent[0].next_attempt_at.is_some(), "its retry is scheduled");
    let error = sent[0].last_error.clone().unwrap_or_default();
    assert!(error.contains("timed out"), "{error}");
}

/// A delivery claimed before its webhook was disabled, waiting behind a slow send for the
/// webhook's one slot, is not sent once the slot frees: it is paused with the webhook's
/// other deliveries (found by the model test: sent 1.2 s after the disable was answered).
#[tokio::test]
async fn a_delivery_queued_behind_a_slow_send_is_not_sent_after_a_disable() {
    let r = start(DispatcherConfig::default());
    let seen = Receiver::start().await;
    seen.script([Behavior::Delayed(200, Duration::from_millis(1500))]);
    seen.set_fallback(Behavior::Status(200));
    let wh = r
        .store
        .create_webhook(webhook(&seen.url("/hooks"), r.clock.now(), Some(1)))
        .await
        .unwrap();
    for _ in 0..2 {
        publish(&*r.store, r.clock.now()).await;
    }
    seen.wait_for(1, Duration::from_secs(5)).await;
    // Both are claimed: one being sent, one waiting for the slot.
    let now = r.clock.now();
    let lease = Duration::from_secs(600);
    assert!(r
        .store
        .claim_due_deliveries(now, 10, lease)
        .await
        .unwrap()
        .is_empty());
    let change = herald_store::WebhookChange {
        disabled: Some(true),
        ..Default::default()
    };
    r.store.update_webhook(wh.id, change, now).await.unwrap();
    eventually("the slow send's result", || async {
        deliveries(&*r.store, wh.id)
            .await
            .iter()
            .any(|d| d.status == DeliveryStatus::Succeeded)
    })
    .await;
    eventually("the waiting one to be put back", || async {
        r.deferrals
            .0
            .lock()
            .unwrap()
            .contains(&Deferral::WebhookDisabled)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(seen.count(), 1, "nothing is sent after the disable");
    let waiting: Vec<_> = deliveries(&*r.store, wh.id)
        .await
        .into_iter()
        .filter(|d| d.status == DeliveryStatus::Pending)
        .collect();
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert_eq!(waiting[0].attempts, 0);
    assert_eq!(waiting[0].next_attempt_at, None, "paused with its webhook");
    r.stop().await;
}

/// A delivery waiting for its webhook's slot while the webhook's URL is changed goes to
/// the new URL, not to the one its claim read.
#[tokio::test]
async fn a_delivery_queued_while_its_url_changes_goes_to_the_new_url() {
    let r = start(DispatcherConfig::default());
    let old = Receiver::start().await;
    old.script([Behavior::Delayed(200, Duration::from_millis(1500))]);
    old.set_fallback(Behavior::Status(200));
    let (new_url, new) = receiver(&[200]).await;
    let wh = r
        .store
        .create_webhook(webhook(&old.url("/hooks"), r.clock.now(), Some(1)))
        .await
        .unwrap();
    for _ in 0..2 {
        publish(&*r.store, r.clock.now()).await;
    }
    old.wait_for(1, Duration::from_secs(5)).await;
    // A later time, as the API stamps a change: the claim's copy is older.
    let change = herald_store::WebhookChange {
        url: Some(new_url),
        ..Default::default()
    };
    r.store
        .update_webhook(wh.id, change, r.clock.now().plus(Duration::from_millis(1)))
        .await
        .unwrap();
    new.wait_for(1, Duration::from_secs(5)).await;
    eventually("both delivered", || async {
        deliveries(&*r.store, wh.id)
            .await
            .iter()
            .all(|d| d.status == DeliveryStatus::Succeeded)
    })
    .await;
    assert_eq!(old.count(), 1, "the waiting one did not go to the old URL");
    assert!(r
        .deferrals
        .0
        .lock()
        .unwrap()
        .contains(&Deferral::WebhookChanged));
    r.stop().await;
}

/// A delivery that waited for its webhook's slot longer than its lease (queued behind
/// slow sends: with the default queue of half the global slots behind a webhook of
/// concurrency 1, the hundredth waits a hundred timeouts) is not sent by the copy that
/// waited: once the lease is over the store hands the delivery to the next claim, which
/// sends it, and the stale copy sending too delivered it twice without any failure.
#[tokio::test]
async fn a_delivery_whose_lease_ran_out_while_it_waited_is_sent_once() {
    let r = start(DispatcherConfig::default());
    let seen = Receiver::start().await;
    seen.script([Behavior::Delayed(200, Duration::from_millis(1500))]);
    seen.set_fallback(Behavior::Status(200));
    let wh = r
        .store
        .create_webhook(webhook(&seen.url("/hooks"), r.clock.now(), Some(1)))
        .await
        .unwrap();
    for _ in 0..4 {
        publish(&*r.store, r.clock.now()).await;
    }
    let first = seen.wait_for(1, Duration::from_secs(5)).await.remove(0);
    let first = first.header("x-delivery-id");
    // All four are claimed: one being sent, three waiting for the slot.
    eventually("all four claimed", || async {
        r.store
            .claim_due_deliveries(r.clock.now(), 10, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    // The waiting ones outwait their lease; the claim loop claims them again.
    r.clock
        .advance(DispatcherConfig::default().timeout * 4 + Duration::from_secs(31));
    eventually("all delivered", || async {
        deliveries(&*r.store, wh.id)
            .await
            .iter()
            .all(|d| d.status == DeliveryStatus::Succeeded)
    })
    .await;
    r.stop().await;
    let mut sends: HashMap<String, usize> = HashMap::new();
    for received in seen.received() {
        *sends.entry(received.header("x-delivery-id")).or_default() += 1;
    }
    assert_eq!(sends.len(), 4, "{sends:?}");
    // The one being sent when its lease ran out may go again: that is at least once.
    sends.remove(&first);
    assert!(sends.values().all(|&n| n == 1), "sent twice: {sends:?}");
}

/// Deliveries waiting behind their webhooks' concurrency may not hold every global slot:
/// each webhook may queue half the slots, so two slow webhooks (a tenant can make them
/// with `max_concurrency: 1`) held them all and no other webhook's delivery was even
/// claimed until a hanging send timed out. Half the slots at most are waiting ones.
#[tokio::test]
async fn webhooks_queued_behind_hanging_sends_leave_slots_for_the_others() {
    let r = start(DispatcherConfig {
        max_in_flight: 8,
        timeout: Duration::from_secs(60),
        ..DispatcherConfig::default()
    });
    let hanging = Receiver::start().await;
    hanging.set_fallback(Behavior::Hang(Duration::from_secs(120)));
    for _ in 0..2 {
        r.store
            .create_webhook(webhook(&hanging.url("/hooks"), r.clock.now(), Some(1)))
            .await
            .unwrap();
    }
    for _ in 0..20 {
        publish(&*r.store, r.clock.now()).await;
    }
    // Both hang; their other deliveries, older than the next one, are claimed first.
    hanging.wait_for(2, Duration::from_secs(5)).await;
    let (url, healthy) = receiver(&[200]).await;
    let mut other = webhook(&url, r.clock.now(), None);
    other.events = vec![EventPattern::parse("invoice.*").unwrap()];
    let other = r.store.create_webhook(other).await.unwrap();
    let id = EventId::generate();
    let event = NewEvent {
        id,
        tenant: None,
        event_type: "invoice.paid".into(),
        key: None,
        data: serde_json::json!({}),
        created_at: r.clock.now(),
        request_hash: id.to_string(),
    };
    r.store.insert_event(event, None).await.unwrap();
    eventually(
        "the other webhook's delivery, while the slow ones hang",
        || async {
            // A delivery deferred for a moment (its slot was still held by a deferral
            // being written) comes due again: the clock moves as real time does.
            r.clock.advance(Duration::from_millis(50));
            deliveries(&*r.store, other.id)
                .await
                .iter()
                .any(|d| d.status == DeliveryStatus::Succeeded)
        },
    )
    .await;
    assert_eq!(healthy.count(), 1);
}

/// An event of `tenant`'s of type `event_type`, stored now.
async fn publish_as(r: &Running, tenant: Option<TenantId>, event_type: &str) {
    let id = EventId::generate();
    let event = NewEvent {
        id,
        tenant,
        event_type: event_type.into(),
        key: None,
        data: serde_json::json!({}),
        created_at: r.clock.now(),
        request_hash: id.to_string(),
    };
    r.store.insert_event(event, None).await.unwrap();
}

/// One tenant's slow endpoints may not hold every global slot with sends in flight
/// either: a tenant with as many webhooks as there are slots, each hanging, took them
/// all, and another tenant's delivery was not even claimed until a send timed out (and
/// then only after the first tenant's older backlog). A tenant holds half the slots, or
/// more only while a quarter of them stay free.
#[tokio::test]
async fn one_tenants_hanging_sends_leave_slots_for_other_tenants() {
    let r = start(DispatcherConfig {
        max_in_flight: 8,
        timeout: Duration::from_secs(60),
        ..DispatcherConfig::default()
    });
    let hanging = Receiver::start().await;
    hanging.set_fallback(Behavior::Hang(Duration::from_secs(120)));
    let slow = TenantId::generate();
    for _ in 0..8 {
        let mut w = webhook(&hanging.url("/hooks"), r.clock.now(), Some(1));
        w.tenant = Some(slow);
        r.store.create_webhook(w).await.unwrap();
    }
    for _ in 0..4 {
        publish_as(&r, Some(slow), "payment.succeeded").await;
    }
    hanging.wait_for(4, Duration::from_secs(5)).await;
    let other = TenantId::generate();
    let (url, healthy) = receiver(&[200]).await;
    let mut w = webhook(&url, r.clock.now(), None);
    w.tenant = Some(other);
    let w = r.store.create_webhook(w).await.unwrap();
    publish_as(&r, Some(other), "payment.succeeded").await;
    eventually(
        "the other tenant's delivery, while the slow ones hang",
        || async {
            // A delivery deferred for a moment (its slot was still held by a deferral
            // being written) comes due again: the clock moves as real time does.
            r.clock.advance(Duration::from_millis(50));
            deliveries(&*r.store, w.id)
                .await
                .iter()
                .any(|d| d.status == DeliveryStatus::Succeeded)
        },
    )
    .await;
    assert_eq!(healthy.count(), 1);
}

/// Two tenants in trouble together may not hold every slot either: with half the slots
/// each, a third tenant's delivery waited until a hanging send timed out. A tenant's share
/// of half the slots shrinks with the tenants holding some; past it, a quarter stays free.
#[tokio::test]
async fn two_tenants_hanging_sends_leave_slots_for_a_third() {
    let r = start(DispatcherConfig {
        max_in_flight: 8,
        timeout: Duration::from_secs(60),
        ..DispatcherConfig::default()
    });
    let hanging = Receiver::start().await;
    hanging.set_fallback(Behavior::Hang(Duration::from_secs(120)));
    for _ in 0..2 {
        let slow = TenantId::generate();
        for _ in 0..4 {
            let mut w = webhook(&hanging.url("/hooks"), r.clock.now(), Some(1));
            w.tenant = Some(slow);
            r.store.create_webhook(w).await.unwrap();
        }
        publish_as(&r, Some(slow), "payment.succeeded").await;
    }
    // Six or seven of the eight are sent (seven when a claim starts them one by one, six
    // when they are handed off by the event's write, which takes their slots at once); the
    // rest would leave no slot free.
    hanging.wait_for(6, Duration::from_secs(5)).await;
    let third = TenantId::generate();
    let (url, healthy) = receiver(&[200]).await;
    let mut w = webhook(&url, r.clock.now(), None);
    w.tenant = Some(third);
    let w = r.store.create_webhook(w).await.unwrap();
    publish_as(&r, Some(third), "payment.succeeded").await;
    eventually(
        "the third tenant's delivery, while the others hang",
        || async {
            // A delivery deferred for a moment (its slot was still held by a deferral
            // being written) comes due again: the clock moves as real time does.
            r.clock.advance(Duration::from_millis(50));
            deliveries(&*r.store, w.id)
                .await
                .iter()
                .any(|d| d.status == DeliveryStatus::Succeeded)
        },
    )
    .await;
    assert_eq!(healthy.count(), 1);
}

pub(crate) fn test_store() -> (herald_store::sqlite::SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = herald_store::sqlite::SqliteStore::open(&dir.path().join("herald.db")).unwrap();
    (store, dir)
}

#[tokio::test]
async fn custom_headers_go_with_every_delivery_beside_the_signed_ones() {
    let r = start(DispatcherConfig::default());
    let (url, requests) = receiver(&[500, 200]).await;
    let mut wh = webhook(&url, r.clock.now(), None);
    wh.options.headers = herald_core::webhook::CustomHeaders::parse([
        ("Authorization", "Bearer tenant-token"),
        ("X-Api-Key", "k1"),
    ])
    .unwrap();
    let wh = r.store.create_webhook(wh).await.unwrap();
    publish(&*r.store, r.clock.now()).await;
    requests.wait_for(1, Duration::from_secs(5)).await;
    eventually("the retry to be scheduled", || async {
        deliveries(&*r.store, wh.id).await[0].attempts == 1
    })
    .await;
    r.clock.advance(Duration::from_secs(6));
    let sent = requests.wait_for(2, Duration::from_secs(5)).await;
    for request in &sent {
        assert_eq!(request.header("authorization"), "Bearer tenant-token");
        assert_eq!(request.header("x-api-key"), "k1");
        assert!(verify_herald(
            "hsec_test",
            &request.header("x-timestamp"),
            &request.body,
            &request.header("x-signature")
        ));
    }
    r.stop().await;
}

/// `rate_limit: 2` with five deliveries due at once: one goes, the other four are deferred
/// (not dropped), each to its own later turn half a second apart, and go when the clock
/// reaches it.
#[tokio::test]
async fn a_rate_limit_defers_the_excess_to_later_turns() {
    let r = start(DispatcherConfig::default());
    let (url, requests) = receiver(&[200]).await;
    let now = r.clock.now();
    let mut wh = webhook(&url, now, None);
    wh.options.rate_limit = Some(2);
    let wh = r.store.create_webhook(wh).await.unwrap();
    for _ in 0..5 {
        publish(&*r.store, now).await;
    }
    let turns = || async {
        let mut turns: Vec<i64> = deliveries(&*r.store, wh.id)
            .await
            .into_iter()
            .filter(|d| d.status == DeliveryStatus::Pending)
            .map(|d| d.next_attempt_at.map_or(-1, |t| t.0 - now.0))
            .collect();
        turns.sort();
        turns
    };
    eventually("one sent and four deferred to their turns", || async {
        turns().await == vec![500, 1000, 1500, 2000] && r.deferrals.0.lock().unwrap().len() == 4
    })
    .await;
    assert_eq!(requests.count(), 1);
    assert!(r
        .deferrals
        .0
        .lock()
        .unwrap()
        .iter()
        .all(|d| *d == Deferral::RateLimited));
    // Each turn in its time: one more goes per half second.
    for sent in 2..=5 {
        r.clock.advance(Duration::from_millis(500));
        requests.wait_for(sent, Duration::from_secs(5)).await;
    }
    eventually("all five delivered", || async {
        deliveries(&*r.store, wh.id)
            .await
            .iter()
            .all(|d| d.status == DeliveryStatus::Succeeded)
    })
    .await;
    assert_eq!(requests.count(), 5, "none dropped, none twice");
    r.stop().await;
}
