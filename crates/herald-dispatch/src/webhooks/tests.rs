//! The webhook engine's tests: a dispatcher against a SQLite store, a manual clock and
//! loopback receivers.

use super::*;
use crate::webhooks::send::tests::read_request;
use herald_core::ids::EventId;
use herald_core::pattern::EventPattern;
use herald_core::signing::{verify_herald, SignatureFormat};
use herald_core::ManualClock;
use herald_core::Timestamp;
use herald_store::{DeliveryFilter, DeliveryStatus, NewEvent, Webhook};
use std::sync::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

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

/// A loopback receiver that answers with `statuses` in turn (the last one repeats)
/// and reports each request it read.
async fn receiver(statuses: Vec<u16>) -> (String, mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((mut sock, _)) = listener.accept().await {
            let status = statuses[n.min(statuses.len() - 1)];
            n += 1;
            let tx = tx.clone();
            tokio::spawn(async move {
                let request = read_request(&mut sock).await;
                let _ = tx.send(request);
                let resp = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (format!("http://{addr}/hooks"), rx)
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

/// Polls `check` (real time, 10 ms steps) until it holds; fails after 5 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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
    let (url, mut requests) = receiver(vec![500, 200]).await;
    let wh = r
        .store
        .create_webhook(webhook(&url, r.clock.now(), None))
        .await
        .unwrap();
    let t0 = r.clock.now();
    publish(&*r.store, t0).await;

    let first = tokio::time::timeout(Duration::from_secs(5), requests.recv())
        .await
        .unwrap()
        .unwrap();
    let (head, body) = first.split_once("\r\n\r\n").unwrap();
    let sig = head
        .lines()
        .find_map(|l| l.strip_prefix("x-signature: "))
        .unwrap();
    let ts = head
        .lines()
        .find_map(|l| l.strip_prefix("x-timestamp: "))
        .unwrap();
    assert_eq!(ts, t0.to_rfc3339_seconds());
    assert!(verify_herald("hsec_test", ts, body.as_bytes(), sig));
    assert!(head.contains("x-delivery-attempt: 1\r\n"), "{head}");

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
    assert!(
        requests.try_recv().is_err(),
        "no retry before the clock moves"
    );

    r.clock.advance(Duration::from_secs(6));
    let second = tokio::time::timeout(Duration::from_secs(5), requests.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(second.contains("x-delivery-attempt: 2\r\n"));
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
    let (url, _requests) = receiver(vec![410]).await;
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
    let (dead_url, mut dead_requests) = receiver(vec![500]).await;
    let (good_url, _good) = receiver(vec![200]).await;
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
    let mut seen = 0;
    while dead_requests.try_recv().is_ok() {
        seen += 1;
    }
    assert_eq!(seen, 2);
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut sock, _)) = listener.accept().await {
            read_request(&mut sock).await;
            let _ = seen_tx.send(());
            held.push(sock); // never answered
        }
    });
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
    tokio::time::timeout(Duration::from_secs(5), seen.recv())
        .await
        .expect("the first delivery was sent")
        .unwrap();
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
    assert!(seen.try_recv().is_err(), "the waiting two were never sent");
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

pub(crate) fn test_store() -> (herald_store::sqlite::SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = herald_store::sqlite::SqliteStore::open(&dir.path().join("herald.db")).unwrap();
    (store, dir)
}
