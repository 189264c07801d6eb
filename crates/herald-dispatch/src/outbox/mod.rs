//! The broker side of the outbox: claim the head delivery of each (route, key) line,
//! publish it through the route's broker, wait for the acknowledgement, and record the
//! attempt in the same delivery log as webhooks.
//!
//! A broker that is down only delays: unavailable brokers are retried with capped
//! exponential backoff and never dead-lettered, so a line stays in order. A message the
//! broker refuses for good is `failed` (dead-lettered) and `:redeliver` tries it again.

mod publish;

pub use publish::message_for;

use crate::brokers::{BrokerKind, Publisher};
use crate::claim::{
    claim_loop, drain, finish_recording, spawn_recorder, ClaimSource, RecordMsg, Records,
};
use herald_core::clock::Clock;
use herald_core::Timestamp;
use herald_store::{BrokerJob, Signals, Store, StoreResult};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// At most this many deliveries claimed at once.
const MAX_CLAIM: usize = 256;
/// At most this many publishes in flight (or waiting to be recorded).
const MAX_IN_FLIGHT: usize = 512;

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

/// Told of each publish as it is judged (`broker` is a [`BrokerKind`]'s name: `nats`, `rabbitmq`,
/// `redis`, `kafka`, `sqs` or `pubsub`;
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
        let (records, recorder) = spawn_recorder(
            this.store.clone(),
            "broker delivery",
            Some(|s: &Signals| &s.broker_deliveries_due),
        );
        let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let grace = this.config.timeout + Duration::from_secs(1);
        let running = Running { this, records };
        claim_loop(&running, &slots, &shutdown).await;

        // Every slot back: every publish finished and its result is queued for the store.
        if !drain(&slots, MAX_IN_FLIGHT, grace).await {
            tracing::warn!("broker dispatcher stopping with publishes in flight; they go again when their leases expire");
        }
        drop(running);
        finish_recording(recorder).await;
    }
}

/// A running broker dispatcher, as the claim loop sees it.
struct Running {
    this: Arc<BrokerDispatcher>,
    records: Records,
}

impl ClaimSource for Running {
    type Job = BrokerJob;
    const WHAT: &'static str = "broker deliveries";
    const ONE: &'static str = "broker delivery";
    const MAX_CLAIM: usize = MAX_CLAIM;

    fn store(&self) -> &Arc<dyn Store> {
        &self.this.store
    }

    fn clock(&self) -> &Arc<dyn Clock> {
        &self.this.clock
    }

    /// A publish may take the whole timeout; the lease outlives it by a margin, so a
    /// delivery is never claimed twice while its first publish can still land.
    fn lease(&self) -> Duration {
        self.this.config.timeout * 3 + Duration::from_secs(10)
    }

    async fn claim(
        &self,
        now: Timestamp,
        limit: u32,
        lease: Duration,
    ) -> StoreResult<Vec<BrokerJob>> {
        self.this
            .store
            .claim_due_broker_deliveries(now, limit, lease)
            .await
    }

    fn due_signal(signals: &Signals) -> &Notify {
        &signals.broker_deliveries_due
    }

    async fn next_due(&self) -> StoreResult<Option<Timestamp>> {
        self.this.store.next_broker_delivery_due().await
    }

    /// Each publish runs in its own task, so a slow or dead broker holds up only its
    /// own lines.
    fn start(&self, job: BrokerJob, slot: OwnedSemaphorePermit) {
        let this = self.this.clone();
        let records = self.records.clone();
        tokio::spawn(async move {
            let record = this.publish(job).await;
            let _ = records.send(RecordMsg {
                record,
                _slot: slot,
            });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_store::OutboxStore;
    use tokio::sync::mpsc;

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

        let (store, _dir) = crate::webhooks::tests::test_store();
        store.set_routes(vec![OutboxRoute {
            name: "payments".into(),
            events: vec![EventPattern::parse("payment.*").unwrap()],
            key: "/data/payment_id".into(),
        }]);
        let store: Arc<dyn Store> = Arc::new(store);
        let clock: Arc<dyn Clock> = Arc::new(herald_core::SystemClock);
        let id = crate::webhooks::tests::publish(&*store, clock.now()).await;

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
