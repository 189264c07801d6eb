//! Herald's HTTP API. [`AppState`] holds what every handler needs (store, config,
//! clock, key cache); [`router`] maps the wire contract of DESIGN.md onto handlers,
//! one module per resource under `routes/` (the operator dashboard and its `/stats`
//! among them); [`telemetry`] holds metrics and the request-id layer; [`start`] runs
//! the API with its background loops (`herald_dispatch::Engine`: lease reaper,
//! retention, webhook dispatcher, broker dispatcher) until shutdown.

// The OpenAPI document is one large `json!` literal.
#![recursion_limit = "512"]

pub mod auth;
pub mod body;
pub mod config;
pub mod contract;
pub mod embedded;
pub mod error;
mod routes;
mod slots;
pub mod telemetry;
pub mod timeout;

use axum::Router;
use herald_core::Clock;
use herald_store::Store;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// Compiled JSON Schemas of registered event types, by name.
pub type Schemas = Arc<RwLock<HashMap<String, Arc<jsonschema::Validator>>>>;

/// Shared by every request: one pointer, so the clone every handler's `State` extractor
/// makes is one reference count, not one per field (measured: cloning and dropping the
/// fields one by one was 2.5 % of Herald's CPU under load).
#[derive(Clone)]
pub struct AppState(Arc<AppShared>);

impl std::ops::Deref for AppState {
    type Target = AppShared;

    fn deref(&self) -> &AppShared {
        &self.0
    }
}

/// What [`AppState`] points to.
pub struct AppShared {
    pub store: Arc<dyn Store>,
    pub config: Arc<Config>,
    pub clock: Arc<dyn Clock>,
    /// The admin key from config or env, accepted beside stored keys.
    pub admin_key: Option<Arc<str>>,
    pub keys: Arc<auth::KeyCache>,
    /// Per-key rate limits, `None` when `[limits]` leaves them off.
    pub rate_limits: Option<Arc<auth::RateLimits>>,
    /// Wrong keys per client address (on unless `limits.failed_auth_per_minute = 0`).
    pub failed_auth: Option<Arc<auth::FailedAuthLimits>>,
    pub in_flight: body::InFlight,
    /// Compiled JSON Schemas of registered event types.
    pub schemas: Schemas,
    /// Tenants known to exist (they are never deleted), to spare a read per event.
    pub known_tenants: Arc<RwLock<std::collections::HashSet<herald_core::ids::TenantId>>>,
    pub shutdown: CancellationToken,
    /// Prometheus registry and handles, fed by the HTTP layer and the dispatcher.
    pub metrics: Arc<telemetry::Metrics>,
    /// One permit per feed long poll waiting (`feed.max_long_polls`), half at most per tenant.
    pub long_polls: Arc<slots::TenantSlots>,
    /// One permit per replay running (16 a node, 4 per tenant at most).
    pub replays: Arc<slots::TenantSlots>,
    /// This node's webhook circuit breakers, as its dispatcher keeps them (for /stats).
    pub circuits: herald_dispatch::Circuits,
}

impl AppState {
    pub async fn new(
        store: Arc<dyn Store>,
        config: Config,
        clock: Arc<dyn Clock>,
        admin_key: Option<String>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        // Webhook secrets are sealed at rest when a key is configured, whatever the backend.
        let store: Arc<dyn Store> = match &config.secret_key {
            Some(key) => Arc::new(herald_store::encrypted::EncryptedSecrets::new(
                store,
                key.clone(),
            )),
            None => store,
        };
        // Before any request: every event stored from now on fans out to these routes.
        store.set_routes(outbox_routes(&config));
        let state = Self(Arc::new(AppShared {
            store,
            admin_key: admin_key
                .or_else(|| config.admin_key.as_ref().map(|k| k.0.clone()))
                .map(Arc::from),
            rate_limits: auth::RateLimits::from_config(&config.limits).map(Arc::new),
            long_polls: Arc::new(routes::feed::long_polls(config.feed.max_long_polls)),
            replays: Arc::new(routes::webhooks::replay_slots()),
            failed_auth: auth::FailedAuthLimits::from_config(&config.limits).map(Arc::new),
            config: Arc::new(config),
            clock,
            keys: Default::default(),
            in_flight: Default::default(),
            schemas: Default::default(),
            known_tenants: Default::default(),
            shutdown,
            metrics: Arc::new(telemetry::Metrics::new()?),
            circuits: Default::default(),
        }));
        routes::event_types::load(&state).await?;
        Ok(state)
    }
}

/// The routes of `config` as the store fans events out to them.
fn outbox_routes(config: &Config) -> Vec<herald_store::OutboxRoute> {
    config
        .routes
        .iter()
        .map(|r| herald_store::OutboxRoute {
            name: r.name.clone(),
            events: r.events.clone(),
            key: r.key.clone(),
        })
        .collect()
}

/// The broker dispatcher for the configured routes, with a publisher per broker in use.
fn broker_dispatcher(state: &AppState) -> herald_dispatch::BrokerDispatcher {
    use herald_dispatch::brokers::*;
    let config = &state.config;
    let b = &config.brokers;
    let publishers: Vec<Arc<dyn Publisher>> = config
        .brokers_in_use()
        .into_iter()
        .map(|kind| -> Arc<dyn Publisher> {
            match kind {
                BrokerKind::Nats => Arc::new(NatsPublisher::new(NatsSettings {
                    url: b.nats.url.clone(),
                })),
                BrokerKind::RabbitMq => Arc::new(RabbitMqPublisher::new(RabbitMqSettings {
                    url: b.rabbitmq.url.clone(),
                })),
                BrokerKind::Redis => Arc::new(RedisPublisher::new(RedisSettings {
                    url: b.redis.url.clone(),
                    maxlen: b.redis.maxlen,
                })),
                BrokerKind::Kafka => Arc::new(KafkaPublisher::new(KafkaSettings {
                    bootstrap: b.kafka.bootstrap.clone(),
                    partitions: b.kafka.partitions,
                    replication_factor: b.kafka.replication_factor,
                    publish_timeout: b.timeout,
                })),
                BrokerKind::Sqs => Arc::new(SqsPublisher::new(SqsSettings {
                    region: b.sqs.region.clone(),
                    endpoint: b.sqs.endpoint.as_ref().map(|e| e.0.clone()),
                    credentials: b.sqs.credentials(),
                })),
                BrokerKind::PubSub => Arc::new(PubSubPublisher::new(PubSubSettings {
                    // Checked at load: a Pub/Sub route needs a project.
                    project: b.pubsub.project.clone().unwrap_or_default(),
                    target: b.pubsub.target(),
                    connect_timeout: b.timeout,
                })),
            }
        })
        .collect();
    let routes = config
        .routes
        .iter()
        .map(|r| herald_dispatch::BrokerRoute {
            name: r.name.clone(),
            broker: r.broker,
            topic: r.topic.clone(),
        })
        .collect();
    herald_dispatch::BrokerDispatcher::new(
        state.store.clone(),
        state.clock.clone(),
        herald_dispatch::OutboxConfig {
            timeout: b.timeout,
            max_backoff: b.max_backoff,
            ..Default::default()
        },
        routes,
        publishers,
    )
}

pub fn router(state: AppState) -> Router {
    routes::router(state)
}

/// Serves the API on `listener` and runs the background loops until `shutdown` is
/// cancelled; then stops accepting, lets requests in progress finish, and returns.
pub async fn start(state: AppState, listener: TcpListener) -> anyhow::Result<()> {
    let shutdown = state.shutdown.clone();
    let gauges = tokio::spawn(telemetry::refresh_state_gauges(
        state.metrics.clone(),
        state.store.clone(),
        state.clock.clone(),
        state.config.metrics.refresh,
        shutdown.clone(),
    ));
    let engine = engine(&state)?.spawn(shutdown.clone());
    let app = router(state);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.clone().cancelled_owned())
    .await?;
    shutdown.cancel();
    let _ = gauges.await;
    engine.join().await;
    Ok(())
}

/// Every background loop (webhook dispatcher, broker outbox, lease reaper, retention)
/// as configured, ready to spawn.
fn engine(state: &AppState) -> anyhow::Result<herald_dispatch::Engine> {
    let webhooks = &state.config.webhooks;
    let dispatcher = herald_dispatch::Dispatcher::new(
        state.store.clone(),
        state.clock.clone(),
        herald_dispatch::DispatcherConfig {
            timeout: webhooks.timeout,
            schedule: webhooks.schedule.clone(),
            allow_private_destinations: webhooks.allow_private_destinations,
            max_in_flight: webhooks.max_in_flight,
            per_webhook_concurrency: webhooks.per_webhook_concurrency,
            ..Default::default()
        },
    )?
    .with_observer(state.metrics.clone())
    .with_circuits(state.circuits.clone());
    let retention = &state.config.retention;
    Ok(herald_dispatch::Engine {
        store: state.store.clone(),
        clock: state.clock.clone(),
        webhooks: dispatcher,
        outbox: broker_dispatcher(state).with_observer(state.metrics.clone()),
        retention: herald_dispatch::Retention::new(herald_dispatch::RetentionConfig {
            events: retention.events,
            batch: retention.batch,
            interval: retention.interval,
        })
        .with_observer(state.metrics.clone()),
    })
}
