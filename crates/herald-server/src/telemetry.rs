//! Metrics and request tracing. [`Metrics`] owns a Prometheus registry (one per
//! server, no global state) fed by the HTTP layer [`track_request`] and by the
//! dispatcher (as its [`AttemptObserver`]); store-backed gauges are refreshed in the
//! background by [`refresh_state_gauges`] every `[metrics] refresh`, so a scrape only
//! encodes what is in memory and costs the store nothing.

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::AppState;
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use herald_core::Clock;
use herald_dispatch::{AttemptObserver, Deferral, PublishObserver, SendResult};
use herald_store::{AttemptOutcome, StateCounts, Store};
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

const OPERATION_STATES: &[&str] = &["queued", "running", "succeeded", "failed", "cancelled"];
const DELIVERY_STATES: &[&str] = &["pending", "succeeded", "failed"];

/// Every metric Herald exports. Cloning the handles is cheap; recording takes a
/// label lookup and an atomic add.
pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    attempts: IntCounterVec,
    deliveries: IntCounterVec,
    attempt_duration: Histogram,
    backlog: IntGauge,
    deliveries_by_status: IntGaugeVec,
    operations: IntGaugeVec,
    /// `herald_state_gauges_updated_timestamp_seconds`: when the gauges above were last
    /// read from the store (0 until the first read), so staleness can be alerted on.
    state_updated: Gauge,
    /// `herald_broker_publish_total{broker, outcome}`; publishers increment it.
    pub broker_publish: IntCounterVec,
    /// `herald_retention_purged_total{kind}`: rows removed by retention.
    retention_purged: IntCounterVec,
    /// `herald_delivery_deferrals_total{reason}`: claimed deliveries put back unattempted.
    deferrals: IntCounterVec,
}

impl Metrics {
    /// Counts what one retention pass removed.
    pub fn retention_purged(&self, report: &herald_store::PurgeReport) {
        for (kind, n) in [
            ("events", report.events),
            ("deliveries", report.deliveries),
            ("attempts", report.attempts),
        ] {
            self.retention_purged.with_label_values(&[kind]).inc_by(n);
        }
    }

    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "herald_http_requests_total",
                "HTTP requests answered, by route template, method and status.",
            ),
            &["route", "method", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "herald_http_request_duration_seconds",
                "Time to answer an HTTP request (until the response head), by route template and method.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["route", "method"],
        )?;
        let attempts = IntCounterVec::new(
            Opts::new(
                "herald_delivery_attempts_total",
                "Webhook delivery attempts, by outcome: succeeded, retrying (failed, another attempt scheduled), failed (failed, retry window used up).",
            ),
            &["outcome"],
        )?;
        let deliveries = IntCounterVec::new(
            Opts::new(
                "herald_deliveries_total",
                "Webhook deliveries that reached a final state, by outcome: succeeded or failed (dead).",
            ),
            &["outcome"],
        )?;
        let attempt_duration = Histogram::with_opts(
            HistogramOpts::new(
                "herald_delivery_attempt_duration_seconds",
                "Latency of webhook delivery attempts, from connect to the end of the response excerpt.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
        )?;
        let backlog = IntGauge::new(
            "herald_delivery_backlog",
            "Deliveries pending (waiting for an attempt or a retry), as last read from the store.",
        )?;
        let deliveries_by_status = IntGaugeVec::new(
            Opts::new(
                "herald_deliveries",
                "Deliveries in the store by status, as last read from the store.",
            ),
            &["status"],
        )?;
        let operations = IntGaugeVec::new(
            Opts::new(
                "herald_operations",
                "Operations in the store by state (deleted ones excluded), as last read from the store.",
            ),
            &["state"],
        )?;
        let state_updated = Gauge::new(
            "herald_state_gauges_updated_timestamp_seconds",
            "When herald_operations, herald_deliveries and herald_delivery_backlog were last read from the store (Unix time; 0: not yet).",
        )?;
        let broker_publish = IntCounterVec::new(
            Opts::new(
                "herald_broker_publish_total",
                "Messages published to brokers, by broker and outcome (published, failed).",
            ),
            &["broker", "outcome"],
        )?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        registry.register(Box::new(attempts.clone()))?;
        registry.register(Box::new(deliveries.clone()))?;
        registry.register(Box::new(attempt_duration.clone()))?;
        registry.register(Box::new(backlog.clone()))?;
        registry.register(Box::new(deliveries_by_status.clone()))?;
        registry.register(Box::new(operations.clone()))?;
        registry.register(Box::new(state_updated.clone()))?;
        let retention_purged = IntCounterVec::new(
            Opts::new(
                "herald_retention_purged_total",
                "Rows removed by event retention, by kind (events, deliveries, attempts).",
            ),
            &["kind"],
        )?;
        registry.register(Box::new(broker_publish.clone()))?;
        registry.register(Box::new(retention_purged.clone()))?;
        let deferrals = IntCounterVec::new(
            Opts::new(
                "herald_delivery_deferrals_total",
                "Claimed webhook deliveries put back without an attempt, by reason: circuit_open, saturated (the webhook's queue was full), webhook_disabled, stopping (handed back at shutdown), webhook_changed (changed or deleted while the delivery waited for a slot).",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(deferrals.clone()))?;
        for reason in Deferral::ALL {
            deferrals.with_label_values(&[reason.label()]);
        }
        for kind in ["events", "deliveries", "attempts"] {
            retention_purged.with_label_values(&[kind]);
        }
        // Series that exist from the start, so dashboards and alerts see zeros, not gaps.
        for outcome in ["succeeded", "retrying", "failed"] {
            attempts.with_label_values(&[outcome]);
        }
        for outcome in ["succeeded", "failed"] {
            deliveries.with_label_values(&[outcome]);
        }
        // Every broker's publish counters exist (at zero) before any publisher does.
        for broker in herald_dispatch::brokers::BrokerKind::ALL {
            for outcome in ["published", "refused", "unavailable"] {
                broker_publish.with_label_values(&[broker.as_str(), outcome]);
            }
        }
        Ok(Self {
            retention_purged,
            deferrals,
            registry,
            http_requests,
            http_duration,
            attempts,
            deliveries,
            attempt_duration,
            backlog,
            deliveries_by_status,
            operations,
            state_updated,
            broker_publish,
        })
    }

    fn observe_request(&self, route: &str, method: &str, status: &str, seconds: f64) {
        self.http_requests
            .with_label_values(&[route, method, status])
            .inc();
        self.http_duration
            .with_label_values(&[route, method])
            .observe(seconds);
    }

    /// Reads the store-backed gauges once (one grouped count over operations and one over
    /// deliveries). A store that cannot count leaves the gauges as they were, and their
    /// timestamp too, so the staleness shows; the error is logged.
    pub async fn refresh_state(&self, store: &dyn Store, clock: &dyn Clock) {
        match store.state_counts(None).await {
            Ok(counts) => {
                self.set_state_gauges(&counts);
                self.state_updated.set(clock.now().0 as f64 / 1000.0);
            }
            Err(e) => tracing::warn!(error = %e, "metrics: could not read state counts"),
        }
    }

    /// Renders every metric as Prometheus text, from memory only: no store read.
    pub fn render(&self) -> Result<String, String> {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .map_err(|e| e.to_string())?;
        String::from_utf8(out).map_err(|e| e.to_string())
    }
}

impl Metrics {
    fn set_state_gauges(&self, counts: &StateCounts) {
        let count = |pairs: &[(String, u64)], name: &str| {
            pairs
                .iter()
                .find(|(s, _)| s == name)
                .map_or(0, |(_, n)| *n as i64)
        };
        for state in OPERATION_STATES {
            self.operations
                .with_label_values(&[state])
                .set(count(&counts.operations, state));
        }
        for status in DELIVERY_STATES {
            self.deliveries_by_status
                .with_label_values(&[status])
                .set(count(&counts.deliveries, status));
        }
        self.backlog.set(count(&counts.deliveries, "pending"));
    }
}

impl AttemptObserver for Metrics {
    fn attempt_judged(&self, result: &SendResult, outcome: &AttemptOutcome) {
        let (attempt, delivery) = match outcome {
            AttemptOutcome::Succeeded => ("succeeded", Some("succeeded")),
            AttemptOutcome::RetryAt(_) => ("retrying", None),
            AttemptOutcome::Failed => ("failed", Some("failed")),
            AttemptOutcome::Deferred(_) => return,
        };
        self.attempts.with_label_values(&[attempt]).inc();
        if let Some(d) = delivery {
            self.deliveries.with_label_values(&[d]).inc();
        }
        self.attempt_duration
            .observe(result.latency_ms as f64 / 1000.0);
    }

    fn deferred(&self, reason: Deferral) {
        self.deferrals.with_label_values(&[reason.label()]).inc();
    }
}

impl herald_dispatch::RetentionObserver for Metrics {
    fn purged(&self, report: &herald_store::PurgeReport) {
        self.retention_purged(report);
    }
}

impl PublishObserver for Metrics {
    fn publish_judged(&self, broker: &str, outcome: &str) {
        self.broker_publish
            .with_label_values(&[broker, outcome])
            .inc();
    }
}

/// Re-reads the store-backed gauges at once and then every `every`, until `shutdown`.
/// Scrapes never touch the store: they encode what this loop last read.
pub async fn refresh_state_gauges(
    metrics: Arc<Metrics>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        metrics.refresh_state(store.as_ref(), clock.as_ref()).await;
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// With `[metrics] require_key`: the scraper's `token`, or an admin key (authenticated as
/// any request is, wrong-key limits included); 401 without a key, 403 for other roles.
async fn authorize_scrape(state: &AppState, request: Request) -> ApiResult<()> {
    let (mut parts, _) = request.into_parts();
    if let Some(token) = &state.config.metrics.token {
        let presented = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim);
        if presented.is_some_and(|p| herald_core::auth::static_key_matches(p, &token.0)) {
            return Ok(());
        }
    }
    let principal = Principal::from_request_parts(&mut parts, state).await?;
    principal.require_admin().map_err(|_| {
        ApiError::forbidden("`/metrics` needs an admin key (or the `[metrics] token`).")
    })
}

/// `GET /metrics`: Prometheus text format, encoded from memory (the store-backed gauges
/// are refreshed in the background). No key is needed unless `[metrics] require_key`;
/// it holds no tenant's data (counts only), but keep it off the public network.
pub async fn metrics(State(state): State<AppState>, request: Request) -> Response {
    if state.config.metrics.require_key {
        if let Err(e) = authorize_scrape(&state, request).await {
            return e.into_response();
        }
    }
    match state.metrics.render() {
        Ok(text) => (
            [(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "metrics could not be rendered");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "metrics could not be rendered\n",
            )
                .into_response()
        }
    }
}

/// An incoming `X-Request-Id` worth keeping: short, visible ASCII.
fn acceptable_request_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty() && bytes.len() <= 128 && bytes.iter().all(|b| b.is_ascii_graphic())
}

/// The HTTP layer: gives each request an id (the caller's `X-Request-Id` if sensible,
/// else a new ULID), runs it inside a `request` span carrying that id, echoes the id
/// in the response, logs one line per request and counts it by route template.
pub async fn track_request(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let request_id = match request.headers().get(&REQUEST_ID) {
        Some(v) if acceptable_request_id(v) => v.clone(),
        _ => HeaderValue::from_str(&ulid::Ulid::new().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
    };
    // Route templates, never raw paths: ids in paths would make unbounded label sets.
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = request.method().clone();
    let span = tracing::info_span!(
        "request",
        request_id = request_id.to_str().unwrap_or(""),
        method = method.as_str(),
        route = route.as_ref().map_or("unmatched", MatchedPath::as_str),
    );
    let mut response = next.run(request).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = response.status();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    state.metrics.observe_request(
        route,
        method.as_str(),
        status.as_str(),
        elapsed.as_secs_f64(),
    );
    span.in_scope(|| {
        tracing::info!(
            status = status.as_u16(),
            latency_ms = elapsed.as_millis() as u64,
            "request finished"
        )
    });
    response
        .headers_mut()
        .insert(REQUEST_ID.clone(), request_id);
    response
}
