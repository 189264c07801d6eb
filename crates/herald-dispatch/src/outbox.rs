//! The broker side of the outbox: claim the head delivery of each (route, key) line,
//! publish it through the route's broker, wait for the acknowledgement, and record the
//! attempt in the same delivery log as webhooks.
//!
//! A broker that is down only delays: unavailable brokers are retried with capped
//! exponential backoff and never dead-lettered, so a line stays in order. A message the
//! broker refuses for good is `failed` (dead-lettered) and `:redeliver` tries it again.

use crate::brokers::{BrokerKind, BrokerMessage, PublishError, Publisher};
use herald_core::clock::{sleep_until, Clock};
use herald_core::ids::AttemptId;
use herald_store::{Attempt, AttemptOutcome, AttemptRecord, BrokerJob, Store};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// At most this many deliveries claimed at once.
const MAX_CLAIM: usize = 256;
/// At most this many publishes in flight (or waiting to be recorded).
const MAX_IN_FLIGHT: usize = 512;
/// The longest the loop sleeps on the real clock, so expired leases are picked up.
const MAX_IDLE: Duration = Duration::from_secs(1);

/// A broker route: where events matching it are published.
#[derive(Debug, Clone)]
pub struct BrokerRoute {
    pub name: String,
    pub broker: BrokerKind,
    pub topic: String,
}

#[derive(Debug, Clone)]
pub struct OutboxConfig {
    /// How long one publish may take, acknowledgement included.
    pub timeout: Duration,
    /// The first retry's wait; each further one doubles, up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// Publishes broker deliveries. Build with [`BrokerDispatcher::new`], then [`BrokerDispatcher::run`].
pub struct BrokerDispatcher {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: OutboxConfig,
    routes: HashMap<String, BrokerRoute>,
    publishers: HashMap<BrokerKind, Arc<dyn Publisher>>,
    /// Told of every publish outcome (metrics).
    observer: Option<Arc<dyn PublishObserver>>,
}

/// Told of each publish as it is judged (`broker` is `nats`, `rabbitmq`, `redis` or `kafka`;
/// `outcome` is `published`, `refused` or `unavailable`). Must be cheap and not block.
pub trait PublishObserver: Send + Sync + 'static {
    fn publish_judged(&self, broker: &str, outcome: &str);
}

impl BrokerDispatcher {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        config: OutboxConfig,
        routes: Vec<BrokerRoute>,
        publishers: Vec<Arc<dyn Publisher>>,
    ) -> Self {
        Self {
            store,
            clock,
            config,
            routes: routes.into_iter().map(|r| (r.name.clone(), r)).collect(),
            publishers: publishers.into_iter().map(|p| (p.kind(), p)).collect(),
            observer: None,
        }
    }

    /// Connects to every broker a route uses, logging (not failing on) those unreachable:
    /// their messages wait in the outbox until the broker is up.
    pub async fn check_brokers(&self) {
        for (kind, publisher) in &self.publishers {
            if !self.routes.values().any(|r| r.broker == *kind) {
                continue;
            }
            match tokio::time::timeout(self.config.timeout, publisher.connect()).await {
                Ok(Ok(())) => tracing::info!(broker = %kind, "connected to broker"),
                Ok(Err(e)) => {
                    tracing::warn!(broker = %kind, error = %e, "broker unreachable at start; its messages wait in the outbox and are retried")
                }
                Err(_) => {
                    tracing::warn!(broker = %kind, "broker did not answer at start; its messages wait in the outbox and are retried")
                }
            }
        }
    }

    /// Reports every publish outcome to `observer` (metrics).
    pub fn with_observer(mut self, observer: Arc<dyn PublishObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Runs until `shutdown`; publishes in flight then get the timeout (plus a second) to
    /// finish and be recorded before it returns. Every publish is bounded by the timeout,
    /// so each ends as a recorded attempt (published, or a retry due after its backoff)
    /// and after a graceful stop no line waits for a lease to expire.
    pub async fn run(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        {
            let this = this.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = this.check_brokers() => {}
                }
            });
        }
        let (records_tx, records_rx) = mpsc::unbounded_channel();
        let recorder = tokio::spawn(record_loop(this.store.clone(), records_rx));
        let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        this.claim_loop(&slots, &records_tx, &shutdown).await;

        // Every slot back: every publish finished and its result is queued for the store.
        let grace = this.config.timeout + Duration::from_secs(1);
        if tokio::time::timeout(grace, slots.acquire_many(MAX_IN_FLIGHT as u32))
            .await
            .is_err()
        {
            tracing::warn!("broker dispatcher stopping with publishes in flight; they go again when their leases expire");
        }
        drop(records_tx);
        let _ = tokio::time::timeout(Duration::from_secs(5), recorder).await;
    }

    /// Claims heads of lines while slots are free; each publish runs in its own task, so a
    /// slow or dead broker holds up only its own lines.
    async fn claim_loop(
        self: &Arc<Self>,
        slots: &Arc<Semaphore>,
        records: &mpsc::UnboundedSender<(AttemptRecord, OwnedSemaphorePermit)>,
        shutdown: &CancellationToken,
    ) {
        // A publish may take the whole timeout; the lease outlives it by a margin, so a
        // delivery is never claimed twice while its first publish can still land.
        let lease = self.config.timeout * 3 + Duration::from_secs(10);
        loop {
            let first = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            };
            // Listen before looking, so a delivery that becomes due meanwhile is not missed.
            let notified = self.store.signals().deliveries_due.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let limit = (1 + slots.available_permits()).min(MAX_CLAIM) as u32;
            let now = self.clock.now();
            let jobs = match self
                .store
                .claim_due_broker_deliveries(now, limit, lease)
                .await
            {
                Ok(jobs) => jobs,
                Err(e) => {
                    tracing::warn!(error = %e, "claiming broker deliveries failed; retrying in 1s");
                    drop(first);
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    continue;
                }
            };
            if !jobs.is_empty() {
                let mut first = Some(first);
                for job in jobs {
                    let slot = match first.take() {
                        Some(p) => p,
                        // Only this loop takes slots, so those counted above are still free.
                        None => match slots.clone().acquire_owned().await {
                            Ok(p) => p,
                            Err(_) => return,
                        },
                    };
                    let this = self.clone();
                    let records = records.clone();
                    tokio::spawn(async move {
                        let record = this.publish(job).await;
                        let _ = records.send((record, slot));
                    });
                }
                continue;
            }
            drop(first);
            let next = match self.store.next_broker_delivery_due().await {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the next due broker delivery failed");
                    Some(self.clock.now().plus(MAX_IDLE))
                }
            };
            let cap = self
                .clock
                .moved()
                .is_none()
                .then(|| self.clock.now().plus(MAX_IDLE));
            let deadline = match (next, cap) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let clock = self.clock.clone();
            let sleep = async move {
                match deadline {
                    Some(t) => sleep_until(&*clock, t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = &mut notified => {}
                _ = sleep => {}
            }
        }
    }

    /// Publishes one delivery and says what becomes of it.
    async fn publish(&self, job: BrokerJob) -> AttemptRecord {
        let at = self.clock.now();
        let started = Instant::now();
        let result = match self.routes.get(&job.route) {
            None => Err(PublishError::Unavailable(format!(
                "route `{}` is not in the config; the delivery waits until it is",
                job.route
            ))),
            Some(route) => match self.publishers.get(&route.broker) {
                None => Err(PublishError::Unavailable(format!(
                    "broker {} is not configured",
                    route.broker
                ))),
                Some(publisher) => {
                    let message = message_for(&job, route);
                    match tokio::time::timeout(self.config.timeout, publisher.publish(&message))
                        .await
                    {
                        Ok(r) => r,
                        Err(_) => Err(PublishError::Unavailable(format!(
                            "{} did not acknowledge within {}",
                            route.broker,
                            humantime::format_duration(self.config.timeout)
                        ))),
                    }
                }
            },
        };
        let latency_ms = started.elapsed().as_millis() as u64;
        let done = self.clock.now();
        if let (Some(observer), Some(route)) = (&self.observer, self.routes.get(&job.route)) {
            let outcome = match &result {
                Ok(()) => "published",
                Err(PublishError::Refused(_)) => "refused",
                Err(PublishError::Unavailable(_)) => "unavailable",
            };
            observer.publish_judged(route.broker.as_str(), outcome);
        }
        let (outcome, error) = match result {
            Ok(()) => (AttemptOutcome::Succeeded, None),
            Err(PublishError::Refused(e)) => {
                tracing::warn!(delivery = %job.delivery.id, route = %job.route, error = %e, "broker refused the message; dead-lettered");
                (AttemptOutcome::Failed, Some(e))
            }
            Err(PublishError::Unavailable(e)) => {
                let wait = backoff(
                    &self.config,
                    job.delivery.window_attempts,
                    rand::random::<f64>(),
                );
                tracing::debug!(delivery = %job.delivery.id, route = %job.route, error = %e, "publish failed; will retry");
                (AttemptOutcome::RetryAt(done.plus(wait)), Some(e))
            }
        };
        AttemptRecord {
            delivery_id: job.delivery.id,
            attempt: Some(Attempt {
                id: AttemptId::generate(),
                delivery_id: job.delivery.id,
                at,
                status_code: None,
                latency_ms,
                error,
                response_excerpt: None,
            }),
            outcome,
            disable_webhook: None,
        }
    }
}

/// Writes results as they come, batching whatever is queued into one call; a result's
/// slot is freed once it is written, so the claim loop never sees a stale head.
async fn record_loop(
    store: Arc<dyn Store>,
    mut rx: mpsc::UnboundedReceiver<(AttemptRecord, OwnedSemaphorePermit)>,
) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, MAX_CLAIM).await > 0 {
        let records: Vec<AttemptRecord> = batch.iter().map(|(r, _)| r.clone()).collect();
        for tries in 1..=3u64 {
            match store.record_attempts(records.clone()).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, count = records.len(), tries,
                        "recording broker publishes failed; unrecorded ones go again when their leases expire");
                    tokio::time::sleep(Duration::from_millis(200 * tries)).await;
                }
            }
        }
        batch.clear();
    }
}

/// The message for a job: the event JSON, keyed by the delivery's ordering key.
pub fn message_for(job: &BrokerJob, route: &BrokerRoute) -> BrokerMessage {
    BrokerMessage {
        topic: route.topic.clone(),
        key: job.delivery.ordering_key.clone(),
        event_id: job.event.id.to_string(),
        event_type: job.event.event_type.clone(),
        traceparent: crate::sender::traceparent_for(
            job.event.id,
            job.delivery.id,
            job.delivery.attempts + 1,
        ),
        payload: serde_json::to_vec(&job.event.to_body()).unwrap_or_default(),
    }
}

/// The wait before the next try after `failures` earlier ones in this window:
/// `min * 2^failures`, capped, with up to 20 % jitter off (`jitter` in `[0, 1)`).
pub(crate) fn backoff(config: &OutboxConfig, failures: u32, jitter: f64) -> Duration {
    let base = config
        .min_backoff
        .saturating_mul(1u32.checked_shl(failures.min(20)).unwrap_or(u32::MAX))
        .min(config.max_backoff);
    base.mul_f64(1.0 - 0.2 * jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_store::OutboxStore;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let c = OutboxConfig {
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            ..Default::default()
        };
        assert_eq!(backoff(&c, 0, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(&c, 3, 0.0), Duration::from_secs(4));
        assert_eq!(backoff(&c, 50, 0.0), Duration::from_secs(30));
        assert!(backoff(&c, 50, 0.99) >= Duration::from_secs(24));
    }

    /// A graceful stop waits for a publish the broker never acknowledges (here a TCP
    /// endpoint posing as Redis that accepts and never answers) to time out and records
    /// it, so its line's head is due again after its short backoff instead of being
    /// held by a lease (3 × timeout + 10 s) after the stop.
    #[tokio::test]
    async fn a_graceful_stop_records_a_publish_in_flight_and_leaves_no_lease() {
        use herald_core::pattern::EventPattern;
        use herald_store::OutboxRoute;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}", listener.local_addr().unwrap());
        let (seen_tx, mut seen) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                let _ = seen_tx.send(());
                held.push(sock); // never answered
            }
        });

        let (store, _dir) = crate::dispatcher::tests::test_store();
        store.set_routes(vec![OutboxRoute {
            name: "payments".into(),
            events: vec![EventPattern::parse("payment.*").unwrap()],
            key: "/data/payment_id".into(),
        }]);
        let store: Arc<dyn Store> = Arc::new(store);
        let clock: Arc<dyn Clock> = Arc::new(herald_core::SystemClock);
        let id = crate::dispatcher::tests::publish(&*store, clock.now()).await;

        let publisher = crate::brokers::RedisPublisher::new(crate::brokers::RedisSettings {
            url,
            maxlen: None,
        });
        let dispatcher = BrokerDispatcher::new(
            store.clone(),
            clock.clone(),
            OutboxConfig {
                timeout: Duration::from_secs(2),
                ..Default::default()
            },
            vec![BrokerRoute {
                name: "payments".into(),
                broker: BrokerKind::Redis,
                topic: "payments".into(),
            }],
            vec![Arc::new(publisher)],
        );
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(dispatcher.run(shutdown.clone()));
        tokio::time::timeout(Duration::from_secs(5), seen.recv())
            .await
            .expect("the publisher connected")
            .unwrap();
        let lease = Duration::from_secs(600);
        // Give the claim loop a moment past the connect: the publish is in flight.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            store
                .claim_due_broker_deliveries(clock.now(), 10, lease)
                .await
                .unwrap()
                .is_empty(),
            "the running dispatcher holds the delivery"
        );
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), handle)
            .await
            .expect("the dispatcher stopped within its grace")
            .unwrap();
        // The first retry's backoff is at most `min_backoff` (500 ms).
        let soon = clock.now().plus(Duration::from_secs(1));
        let again = store
            .claim_due_broker_deliveries(soon, 10, lease)
            .await
            .unwrap();
        assert_eq!(again.len(), 1, "nothing is left leased");
        assert_eq!(again[0].event.id, id);
        assert_eq!(
            again[0].delivery.attempts, 1,
            "the timed-out publish is recorded"
        );
        let error = again[0].delivery.last_error.clone().unwrap_or_default();
        assert!(error.contains("did not acknowledge within 2s"), "{error}");
    }
}
