//! `GET /stats`: what the dashboard's charts and webhook health show, computed from
//! the store over a window: attempts per bucket by outcome, attempt latency
//! percentiles, the backlog over time, per-webhook health and current state counts.

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::AppState;
use axum::extract::{Query, State};
use axum::Json;
use herald_core::auth::Role;
use herald_core::ids::{TenantId, WebhookId};
use herald_core::Timestamp;
use herald_store::{Activity, ActivityFilter, DeliveryStatus, Destination};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// The longest window one request may ask for.
const MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_WINDOW: Duration = Duration::from_secs(3600);
/// Charts get at most this many points; buckets grow past a minute to keep to it.
const MAX_BUCKETS: i64 = 360;
/// Rows read from the store per request, so a busy window stays cheap.
const ROW_LIMIT: u32 = 100_000;

#[derive(Deserialize)]
pub struct StatsQuery {
    since: Option<String>,
    until: Option<String>,
    tenant: Option<TenantId>,
}

fn time_param(field: &str, v: Option<&str>) -> ApiResult<Option<Timestamp>> {
    v.map(|t| {
        Timestamp::parse_rfc3339(t)
            .ok_or_else(|| ApiError::invalid(format!("`{field}` must be an RFC 3339 time.")))
    })
    .transpose()
}

/// The `q`-quantile (0..=1) of sorted values, nearest rank.
fn percentile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

#[derive(Default)]
struct Bucket {
    succeeded: u64,
    failed: u64,
    latencies: Vec<u64>,
}

#[derive(Default)]
struct Health {
    attempts: u64,
    succeeded: u64,
    last_attempt_at: Option<Timestamp>,
    last_error: Option<(Timestamp, String)>,
}

/// Turns the raw activity into the JSON the dashboard draws. Pure, for tests.
pub fn summarize(activity: &Activity, since: Timestamp, until: Timestamp) -> Value {
    let span_ms = (until.0 - since.0).max(1);
    let bucket_ms = {
        let minute = 60_000;
        let per = (span_ms + MAX_BUCKETS - 1) / MAX_BUCKETS;
        ((per + minute - 1) / minute).max(1) * minute
    };
    let n = ((span_ms + bucket_ms - 1) / bucket_ms) as usize;
    let mut buckets: Vec<Bucket> = (0..n).map(|_| Bucket::default()).collect();
    let mut health: BTreeMap<WebhookId, Health> = BTreeMap::new();
    let mut route_health: BTreeMap<&str, Health> = BTreeMap::new();
    let mut all_latencies = Vec::with_capacity(activity.attempts.len());
    let (mut total_ok, mut total_failed) = (0u64, 0u64);
    for a in &activity.attempts {
        if a.at < since || a.at >= until {
            continue;
        }
        let i = (((a.at.0 - since.0) / bucket_ms) as usize).min(n - 1);
        let b = &mut buckets[i];
        let h = match &a.destination {
            Destination::Webhook(w) => health.entry(*w).or_default(),
            Destination::Route(r) => route_health.entry(r.as_str()).or_default(),
        };
        h.attempts += 1;
        h.last_attempt_at = Some(h.last_attempt_at.map_or(a.at, |t| t.max(a.at)));
        if a.succeeded() {
            b.succeeded += 1;
            h.succeeded += 1;
            total_ok += 1;
        } else {
            b.failed += 1;
            total_failed += 1;
            let err = a.error.clone().unwrap_or_else(|| match a.status_code {
                Some(c) => format!("HTTP {c}"),
                None => "failed".into(),
            });
            if h.last_error.as_ref().is_none_or(|(t, _)| a.at >= *t) {
                h.last_error = Some((a.at, err));
            }
        }
        b.latencies.push(a.latency_ms);
        all_latencies.push(a.latency_ms);
    }

    // Backlog at the end of each bucket: +1 when a delivery is created, -1 when it
    // leaves pending (its last change, for deliveries no longer pending).
    let mut changes: Vec<(i64, i64)> = Vec::with_capacity(activity.deliveries.len() * 2);
    for d in &activity.deliveries {
        changes.push((d.created_at.0, 1));
        if d.status != DeliveryStatus::Pending {
            changes.push((d.updated_at.0.max(d.created_at.0), -1));
        }
    }
    changes.sort_unstable();
    let mut backlog = Vec::with_capacity(n);
    let (mut level, mut next) = (0i64, 0usize);
    for i in 0..n {
        let end = (since.0 + (i as i64 + 1) * bucket_ms).min(until.0);
        while next < changes.len() && changes[next].0 <= end {
            level += changes[next].1;
            next += 1;
        }
        backlog.push(json!({
            "t": Timestamp(since.0 + i as i64 * bucket_ms).to_rfc3339(),
            "pending": level.max(0),
        }));
    }

    let series: Vec<Value> = buckets
        .iter_mut()
        .enumerate()
        .map(|(i, b)| {
            b.latencies.sort_unstable();
            json!({
                "t": Timestamp(since.0 + i as i64 * bucket_ms).to_rfc3339(),
                "succeeded": b.succeeded,
                "failed": b.failed,
                "p50_ms": percentile(&b.latencies, 0.50),
                "p90_ms": percentile(&b.latencies, 0.90),
                "p99_ms": percentile(&b.latencies, 0.99),
            })
        })
        .collect();
    all_latencies.sort_unstable();
    let health_json = |id: Value, h: &Health| {
        json!({
            "id": id,
            "attempts": h.attempts,
            "succeeded": h.succeeded,
            "success_rate": if h.attempts == 0 { Value::Null } else { json!(h.succeeded as f64 / h.attempts as f64) },
            "last_attempt_at": h.last_attempt_at.map(|t| t.to_rfc3339()),
            "last_error": h.last_error.as_ref().map(|(_, e)| e),
            "last_error_at": h.last_error.as_ref().map(|(t, _)| t.to_rfc3339()),
        })
    };
    let webhooks: Vec<Value> = health
        .iter()
        .map(|(id, h)| health_json(json!(id), h))
        .collect();
    let routes: Vec<Value> = route_health
        .iter()
        .map(|(name, h)| health_json(json!(name), h))
        .collect();
    json!({
        "since": since.to_rfc3339(),
        "until": until.to_rfc3339(),
        "bucket_seconds": bucket_ms / 1000,
        "attempts": series,
        "backlog": backlog,
        "totals": {
            "attempts": total_ok + total_failed,
            "succeeded": total_ok,
            "failed": total_failed,
            "p50_ms": percentile(&all_latencies, 0.50),
            "p90_ms": percentile(&all_latencies, 0.90),
            "p99_ms": percentile(&all_latencies, 0.99),
        },
        "webhooks": webhooks,
        "routes": routes,
    })
}

pub async fn stats(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<StatsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    principal.require_reader()?;
    let Query(q) =
        query.map_err(|e| ApiError::invalid(format!("Bad query string: {}", e.body_text())))?;
    let tenant = match principal.role {
        Role::Tenant(t) => Some(t),
        _ => q.tenant,
    };
    let now = state.clock.now();
    let until = time_param("until", q.until.as_deref())?.unwrap_or(now);
    let since = time_param("since", q.since.as_deref())?.unwrap_or(until.minus(DEFAULT_WINDOW));
    if since >= until {
        return Err(ApiError::invalid("`since` must be before `until`."));
    }
    if since.until(until) > MAX_WINDOW {
        return Err(ApiError::invalid("The window may span at most 24 hours."));
    }
    let mut activity = state
        .store
        .activity(ActivityFilter {
            tenant,
            since,
            until,
            limit: ROW_LIMIT,
        })
        .await?;
    // A portal session limited to some event types sees its endpoints only: the series,
    // totals and health are of theirs; the backlog and the counts (tenant-wide) are left out.
    let limited = principal.event_types.clone();
    if let Some(allowed) = &limited {
        let visible = super::portal::visible_webhooks(&state, tenant, allowed).await?;
        activity
            .attempts
            .retain(|a| matches!(&a.destination, Destination::Webhook(w) if visible.contains(w)));
        activity.deliveries.clear();
    }
    // With a tenant (a tenant key's always), the store leaves broker routes out.
    let counts = state.store.state_counts(tenant).await?;
    let mut out = summarize(&activity, since, until);
    // Each webhook's circuit, as this node's dispatcher holds it now.
    if let Some(webhooks) = out["webhooks"].as_array_mut() {
        for w in webhooks {
            let Some(id) = w["id"].as_str().and_then(|id| id.parse::<WebhookId>().ok()) else {
                continue;
            };
            let circuit = state.circuits.state(id, now);
            w["circuit"] = json!(circuit.label());
            w["circuit_open_until"] = match circuit {
                herald_dispatch::CircuitState::Open { until } => json!(until.to_rfc3339()),
                _ => Value::Null,
            };
        }
    }
    let to_map = |pairs: &[(String, u64)]| -> Map<String, Value> {
        pairs.iter().map(|(k, v)| (k.clone(), json!(v))).collect()
    };
    // Who the dashboard is talking as, so it can show the right scope.
    out["scope"] = match principal.role {
        Role::Tenant(t) => json!({ "role": "tenant", "tenant": t }),
        _ => json!({ "role": "admin", "tenant": tenant }),
    };
    out["now"] = if limited.is_some() {
        out["backlog"] = json!([]);
        json!({ "at": now.to_rfc3339(), "operations": {}, "deliveries": {} })
    } else {
        json!({
            "at": now.to_rfc3339(),
            "operations": to_map(&counts.operations),
            "deliveries": to_map(&counts.deliveries),
        })
    };
    Ok(Json(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_store::{AttemptSample, DeliverySpan};

    const T0: Timestamp = Timestamp(1_775_834_400_000);

    fn attempt(webhook: WebhookId, at_ms: i64, code: Option<u16>, latency: u64) -> AttemptSample {
        AttemptSample {
            destination: Destination::Webhook(webhook),
            at: Timestamp(T0.0 + at_ms),
            status_code: code,
            latency_ms: latency,
            error: code.filter(|c| *c >= 300).map(|c| format!("HTTP {c}")),
        }
    }

    #[test]
    fn buckets_percentiles_backlog_and_health() {
        let wh = WebhookId::generate();
        let activity = Activity {
            attempts: vec![
                attempt(wh, 1_000, Some(500), 30),
                attempt(wh, 2_000, Some(200), 10),
                attempt(wh, 61_000, Some(200), 20),
                // Broker publishes: no status code; success is the absence of an error.
                AttemptSample {
                    destination: Destination::Route("ledger".into()),
                    ..attempt(wh, 62_000, None, 5)
                },
                AttemptSample {
                    destination: Destination::Route("ledger".into()),
                    error: Some("broker unreachable".into()),
                    ..attempt(wh, 63_000, None, 5)
                },
            ],
            deliveries: vec![
                // created before the window, done in the second minute
                DeliverySpan {
                    created_at: Timestamp(T0.0 - 5_000),
                    status: DeliveryStatus::Succeeded,
                    updated_at: Timestamp(T0.0 + 61_000),
                },
                // still pending
                DeliverySpan {
                    created_at: Timestamp(T0.0 + 30_000),
                    status: DeliveryStatus::Pending,
                    updated_at: Timestamp(T0.0 + 30_000),
                },
            ],
        };
        let out = summarize(&activity, T0, Timestamp(T0.0 + 180_000));
        assert_eq!(out["bucket_seconds"], 60);
        let a = out["attempts"].as_array().unwrap();
        assert_eq!(a.len(), 3);
        assert_eq!(
            (a[0]["succeeded"].as_u64(), a[0]["failed"].as_u64()),
            (Some(1), Some(1))
        );
        assert_eq!(a[0]["p50_ms"], 10);
        assert_eq!(a[0]["p99_ms"], 30);
        assert_eq!(
            (a[1]["succeeded"].as_u64(), a[1]["failed"].as_u64()),
            (Some(2), Some(1))
        );
        assert_eq!(a[2]["p50_ms"], Value::Null);
        let backlog: Vec<i64> = out["backlog"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["pending"].as_i64().unwrap())
            .collect();
        assert_eq!(backlog, vec![2, 1, 1]);
        let h = &out["webhooks"][0];
        assert_eq!(h["attempts"], 3);
        assert_eq!(h["last_error"], "HTTP 500");
        assert!((h["success_rate"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(out["totals"]["p90_ms"], 30);
        // Broker routes' attempts count in the totals and have health of their own.
        assert_eq!(out["totals"]["attempts"], 5);
        assert_eq!(out["totals"]["succeeded"], 3);
        assert_eq!(out["webhooks"].as_array().unwrap().len(), 1);
        assert_eq!(out["routes"][0]["id"], "ledger");
        assert_eq!(out["routes"][0]["attempts"], 2);
        assert_eq!(out["routes"][0]["succeeded"], 1);
        assert_eq!(out["routes"][0]["last_error"], "broker unreachable");
    }

    #[test]
    fn long_windows_use_wider_buckets() {
        let out = summarize(&Activity::default(), T0, Timestamp(T0.0 + 24 * 3_600_000));
        assert_eq!(out["bucket_seconds"], 240);
        assert_eq!(out["attempts"].as_array().unwrap().len(), 360);
    }
}
