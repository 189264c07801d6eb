//! The scenarios of issue 5, each against a fresh Herald: `ingest`, `deliver`, `lro`, `backlog`.

use crate::load::{client, closed_loop, payload_1k, LoadResult};
use crate::raw::{self, EventBodies, Generator, Requests};
use crate::receiver::{event_key, Receiver};
use crate::stats::{load_average, memory_of, Percentiles};
use crate::target::{Target, BENCH_OP_TYPE, BENCH_TRIGGER};
use anyhow::{bail, Context};
use hyper::StatusCode;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Talks to Herald's API with the admin key.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: Arc<str>,
    auth: Arc<str>,
}

impl Api {
    pub fn new(target: &Target, concurrency: usize) -> Self {
        Self {
            http: client(concurrency),
            base: target.url.as_str().into(),
            auth: format!("Bearer {}", target.admin_key).into(),
        }
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// `method path` with the admin key (and `body` as JSON): the JSON answer, or an error
    /// naming the request, the status and the body when it is not a success.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .header("authorization", &*self.auth);
        if let Some(body) = body {
            request = request.json(body);
        }
        let r = request.send().await?;
        let status = r.status();
        let bytes = r.bytes().await?;
        if !status.is_success() {
            bail!(
                "{method} {path}: {status} {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        Ok(serde_json::from_slice(&bytes)?)
    }

    /// The sum of every series of the counter `name` on `/metrics`.
    pub async fn counter(&self, name: &str) -> anyhow::Result<f64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    pub async fn tenant(&self, name: &str) -> anyhow::Result<String> {
        let t = self.post("/tenants", &json!({ "name": name })).await?;
        Ok(t["id"].as_str().context("tenant id")?.to_owned())
    }

    /// Publishes one 1 KiB event; returns its id once Herald has acknowledged it.
    pub async fn publish(&self, tenant: &str, n: u64) -> anyhow::Result<String> {
        let body = json!({ "type": "order.paid", "tenant": tenant, "data": payload_1k(n) });
        let r = self.post("/events", &body).await?;
        Ok(r["id"].as_str().context("event id")?.to_owned())
    }

    pub async fn webhooks(
        &self,
        tenant: &str,
        receiver: &Receiver,
        count: u32,
    ) -> anyhow::Result<()> {
        for k in 0..count {
            self.post(
                "/webhooks",
                &json!({ "url": receiver.url(k), "events": ["order.*"], "tenant": tenant }),
            )
            .await?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Ingest {
    pub concurrency: usize,
    pub generator: Generator,
    pub load: LoadResult,
    pub load_average: String,
}

pub async fn ingest(
    target: &Target,
    concurrency: usize,
    duration: Duration,
    generator: Generator,
) -> anyhow::Result<Ingest> {
    let api = Api::new(target, concurrency);
    let tenant: Arc<str> = api.tenant("bench-ingest").await?.into();
    if generator == Generator::Hyper {
        let requests = Requests::new(&target.url, Some(&target.admin_key))?;
        let bodies = Arc::new(EventBodies::new(Some(&tenant)));
        let publish = {
            let requests = requests.clone();
            move |n| requests.post("/events", bodies.body(n))
        };
        let publish = Arc::new(publish);
        // Warm up connections and caches.
        raw::closed_loop(
            &requests,
            concurrency,
            2_000,
            Duration::from_secs(5),
            StatusCode::ACCEPTED,
            {
                let publish = publish.clone();
                move |n| publish(n)
            },
        )
        .await;
        let load = raw::closed_loop(
            &requests,
            concurrency,
            5_000_000,
            duration,
            StatusCode::ACCEPTED,
            move |n| publish(n),
        )
        .await;
        return Ok(Ingest {
            concurrency,
            generator,
            load,
            load_average: load_average(),
        });
    }
    // Warm up connections and caches.
    closed_loop(concurrency, 2_000, Duration::from_secs(5), {
        let (api, tenant) = (api.clone(), tenant.clone());
        move |n| {
            let (api, tenant) = (api.clone(), tenant.clone());
            async move { api.publish(&tenant, n).await.map(drop) }
        }
    })
    .await;
    let load = closed_loop(concurrency, 5_000_000, duration, move |n| {
        let (api, tenant) = (api.clone(), tenant.clone());
        async move { api.publish(&tenant, n).await.map(drop) }
    })
    .await;
    Ok(Ingest {
        concurrency,
        generator,
        load,
        load_average: load_average(),
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct Deliver {
    pub webhooks: u32,
    pub events: u64,
    pub deliveries: u64,
    pub publish_per_second: f64,
    /// From the first publish to the last delivery received.
    pub seconds: f64,
    pub deliveries_per_second: f64,
    pub load_average: String,
    /// At a fixed publish rate, one webhook.
    pub latency_rate: u64,
    pub latency_achieved_rate: f64,
    pub latency_delivered: u64,
    pub latency_sent: u64,
    pub end_to_end: Percentiles,
    pub latency_load_average: String,
    /// Deliveries Herald put back unattempted during the latency phase
    /// (`herald_delivery_deferrals_total`, all reasons).
    pub latency_deferrals: u64,
    /// The slowest deliveries of the latency phase: (seconds into the phase when the event
    /// was acknowledged, end-to-end ms), slowest first, to tell a stall from a spread tail.
    pub latency_slowest: Vec<(f64, f64)>,
}

/// Waits until `receiver` has `want` distinct deliveries or `limit` passes.
async fn wait_for(receiver: &Receiver, want: u64, limit: Duration) -> bool {
    let start = Instant::now();
    while receiver.unique.load(std::sync::atomic::Ordering::Relaxed) < want {
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

pub async fn deliver(
    target: &Target,
    concurrency: usize,
    webhooks: u32,
    events: u64,
    rate: u64,
    duration: Duration,
    generator: Generator,
) -> anyhow::Result<Deliver> {
    let api = Api::new(target, concurrency);
    let receiver = Receiver::start()?;

    // Throughput: publish as fast as Herald takes them, fanned out to `webhooks` hooks.
    let tenant: Arc<str> = api.tenant("bench-deliver").await?.into();
    api.webhooks(&tenant, &receiver, webhooks).await?;
    let start = Instant::now();
    let published = match generator {
        Generator::Hyper => {
            let requests = Requests::new(&target.url, Some(&target.admin_key))?;
            let bodies = EventBodies::new(Some(&tenant));
            raw::closed_loop(
                &requests,
                concurrency,
                events,
                Duration::from_secs(300),
                StatusCode::ACCEPTED,
                {
                    let requests = requests.clone();
                    move |n| requests.post("/events", bodies.body(n))
                },
            )
            .await
        }
        Generator::Reqwest => {
            closed_loop(concurrency, events, Duration::from_secs(300), {
                let (api, tenant) = (api.clone(), tenant.clone());
                move |n| {
                    let (api, tenant) = (api.clone(), tenant.clone());
                    async move { api.publish(&tenant, n).await.map(drop) }
                }
            })
            .await
        }
    };
    let want = published.ok * webhooks as u64;
    if !wait_for(&receiver, want, Duration::from_secs(300)).await {
        eprintln!(
            "deliver: only {} of {want} deliveries arrived in 300s",
            receiver.unique.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
    let last = receiver
        .recorded
        .lock()
        .expect("receiver lock")
        .arrivals
        .iter()
        .map(|a| a.at)
        .max()
        .unwrap_or(start);
    let seconds = last.duration_since(start).as_secs_f64();
    let delivered = receiver.unique.load(std::sync::atomic::Ordering::Relaxed);
    let throughput_load = load_average();

    // Latency: a steady `rate` of events to one webhook of another tenant.
    let tenant2: Arc<str> = api.tenant("bench-latency").await?.into();
    let hook_base = webhooks; // its own path, so its arrivals are told apart
    api.post(
        "/webhooks",
        &json!({ "url": receiver.url(hook_base), "events": ["order.*"], "tenant": &*tenant2 }),
    )
    .await?;
    let deferrals_before = api.counter("herald_delivery_deferrals_total").await?;
    let acks: Arc<Mutex<HashMap<u128, Instant>>> = Default::default();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let per_tick = (rate / 100).max(1);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(512));
    let started = Instant::now();
    let mut sent = 0u64;
    let mut tasks = Vec::new();
    while started.elapsed() < duration {
        tick.tick().await;
        for _ in 0..per_tick {
            let permit = in_flight.clone().acquire_owned().await?;
            let (api, tenant2, acks) = (api.clone(), tenant2.clone(), acks.clone());
            sent += 1;
            let n = sent;
            tasks.push(tokio::spawn(async move {
                if let Ok(id) = api.publish(&tenant2, n).await {
                    let at = Instant::now();
                    acks.lock().expect("acks lock").insert(event_key(&id), at);
                }
                drop(permit);
            }));
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    let achieved = sent as f64 / started.elapsed().as_secs_f64();
    let acked = acks.lock().expect("acks lock").len() as u64;
    wait_for(&receiver, delivered + acked, Duration::from_secs(60)).await;
    let deferrals = api.counter("herald_delivery_deferrals_total").await? - deferrals_before;
    let mut latencies = Vec::new();
    let mut timed = Vec::new();
    {
        let acks = acks.lock().expect("acks lock");
        let recorded = receiver.recorded.lock().expect("receiver lock");
        for a in recorded.arrivals.iter().filter(|a| a.hook == hook_base) {
            if let Some(acked_at) = acks.get(&a.event) {
                // A delivery can land before the client has read the 202: count it as 0.
                let latency = a.at.saturating_duration_since(*acked_at);
                latencies.push(latency);
                timed.push((
                    acked_at.saturating_duration_since(started).as_secs_f64(),
                    latency.as_secs_f64() * 1000.0,
                ));
            }
        }
    }
    timed.sort_by(|a, b| b.1.total_cmp(&a.1));
    timed.truncate(10);
    Ok(Deliver {
        webhooks,
        events: published.ok,
        deliveries: delivered,
        publish_per_second: published.per_second,
        seconds,
        deliveries_per_second: delivered as f64 / seconds,
        load_average: throughput_load,
        latency_rate: rate,
        latency_achieved_rate: achieved,
        latency_delivered: latencies.len() as u64,
        latency_sent: sent,
        end_to_end: Percentiles::of(latencies),
        latency_load_average: load_average(),
        latency_deferrals: deferrals.max(0.0) as u64,
        latency_slowest: timed,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct Lro {
    pub operations: u64,
    pub seconds: f64,
    pub operations_per_second: f64,
    pub load_average: String,
    pub get: LoadResult,
    pub get_load_average: String,
}

/// Triggers `count` operations while `workers` claim and complete them; then polls.
pub async fn lro(
    target: &Target,
    concurrency: usize,
    workers: usize,
    count: u64,
    duration: Duration,
    generator: Generator,
) -> anyhow::Result<Lro> {
    let api = Api::new(target, concurrency + workers);
    let completed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    let mut worker_tasks = Vec::new();
    for _ in 0..workers {
        let (api, completed) = (api.clone(), completed.clone());
        worker_tasks.push(tokio::spawn(async move {
            while completed.load(std::sync::atomic::Ordering::Relaxed) < count
                && start.elapsed() < Duration::from_secs(300)
            {
                let claimed = match api
                    .post(
                        "/operations:claim",
                        &json!({ "types": [BENCH_OP_TYPE], "lease": "60s", "max": 50, "wait": "1s" }),
                    )
                    .await
                {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("claim failed: {e:#}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let ops = claimed["operations"].as_array().cloned().unwrap_or_default();
                let finishing = ops.into_iter().map(|op| {
                    let api = api.clone();
                    async move {
                        let id = op["name"].as_str().unwrap_or_default().trim_start_matches("operations/").to_owned();
                        let body = json!({ "lease_token": op["lease_token"], "response": { "ok": true } });
                        api.post(&format!("/operations/{id}:complete"), &body).await
                    }
                });
                for r in futures::future::join_all(finishing).await {
                    match r {
                        Ok(_) => {
                            completed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(e) => eprintln!("complete failed: {e:#}"),
                    }
                }
            }
        }));
    }
    let ids: Arc<Mutex<Vec<String>>> = Default::default();
    closed_loop(concurrency, count, Duration::from_secs(300), {
        let (api, ids) = (api.clone(), ids.clone());
        move |n| {
            let (api, ids) = (api.clone(), ids.clone());
            async move {
                let op = api.post(BENCH_TRIGGER, &json!({ "video": n })).await?;
                let id = op["name"]
                    .as_str()
                    .context("name")?
                    .trim_start_matches("operations/")
                    .to_owned();
                ids.lock().expect("ids lock").push(id);
                Ok(())
            }
        }
    })
    .await;
    for w in worker_tasks {
        let _ = w.await;
    }
    let done = completed.load(std::sync::atomic::Ordering::Relaxed);
    let seconds = start.elapsed().as_secs_f64();
    let lro_load = load_average();
    let ids: Arc<Vec<String>> = Arc::new(ids.lock().expect("ids lock").clone());
    anyhow::ensure!(!ids.is_empty(), "no operation was created");
    // Poll: every operation reads back done.
    let probe = api.get(&format!("/operations/{}", ids[0])).await?;
    anyhow::ensure!(probe["done"] == json!(true), "operation not done: {probe}");
    let pick = |n: u64, len: usize| (n.wrapping_mul(2_654_435_761) % len as u64) as usize;
    let get = match generator {
        Generator::Hyper => {
            let requests = Requests::new(&target.url, Some(&target.admin_key))?;
            let paths: Vec<hyper::Uri> = ids
                .iter()
                .map(|id| format!("/operations/{id}").parse())
                .collect::<Result<_, _>>()?;
            raw::closed_loop(
                &requests,
                concurrency,
                10_000_000,
                duration,
                StatusCode::OK,
                {
                    let requests = requests.clone();
                    move |n| requests.get(paths[pick(n, paths.len())].clone())
                },
            )
            .await
        }
        Generator::Reqwest => {
            closed_loop(concurrency, 10_000_000, duration, {
                let (api, ids) = (api.clone(), ids.clone());
                move |n| {
                    let (api, ids) = (api.clone(), ids.clone());
                    async move {
                        let id = &ids[pick(n, ids.len())];
                        api.get(&format!("/operations/{id}")).await.map(drop)
                    }
                }
            })
            .await
        }
    };
    Ok(Lro {
        operations: done,
        seconds,
        operations_per_second: done as f64 / seconds,
        load_average: lro_load,
        get,
        get_load_average: load_average(),
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct Backlog {
    pub events: u64,
    pub webhooks: u32,
    pub deliveries: u64,
    pub publish_seconds: f64,
    /// From the receiver coming back to the first delivery it accepts (retry waits, breaker cooldown).
    pub first_delivery_after_seconds: f64,
    /// From the first accepted delivery to the last.
    pub drain_seconds: f64,
    pub drain_per_second: f64,
    /// From the arrival of the first 1% to the last: the drain itself, without the
    /// breaker's probe wait that holds the rest back for a few seconds.
    pub bulk_drain_seconds: f64,
    pub bulk_drain_per_second: f64,
    pub delivered: u64,
    pub peak_rss_mib: Option<f64>,
    /// Every request the receiver answered, 503s and repeats included.
    pub receiver_requests: u64,
    pub load_average: String,
}

pub async fn backlog(
    target: &Target,
    concurrency: usize,
    webhooks: u32,
    events: u64,
) -> anyhow::Result<Backlog> {
    let api = Api::new(target, concurrency);
    let receiver = Receiver::start()?;
    receiver
        .down
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let tenant: Arc<str> = api.tenant("bench-backlog").await?.into();
    api.webhooks(&tenant, &receiver, webhooks).await?;
    let published = closed_loop(concurrency, events, Duration::from_secs(1800), {
        let (api, tenant) = (api.clone(), tenant.clone());
        move |n| {
            let (api, tenant) = (api.clone(), tenant.clone());
            async move { api.publish(&tenant, n).await.map(drop) }
        }
    })
    .await;
    let want = published.ok * webhooks as u64;
    let up = Instant::now();
    receiver
        .down
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let complete = wait_for(&receiver, want, Duration::from_secs(1800)).await;
    if !complete {
        eprintln!("backlog: not drained within 1800s");
    }
    let (first, bulk_start, bulk_count, last) = {
        let r = receiver.recorded.lock().expect("receiver lock");
        let mut times: Vec<Instant> = r.arrivals.iter().map(|a| a.at).collect();
        times.sort_unstable();
        let first = times.first().copied().unwrap_or(up);
        let last = times.last().copied().unwrap_or(up);
        let skip = times.len() / 100;
        let bulk_start = times.get(skip).copied().unwrap_or(first);
        (first, bulk_start, (times.len() - skip) as u64, last)
    };
    let bulk = last.duration_since(bulk_start).as_secs_f64();
    let drain = last.duration_since(first).as_secs_f64();
    let delivered = receiver.unique.load(std::sync::atomic::Ordering::Relaxed);
    Ok(Backlog {
        events: published.ok,
        webhooks,
        deliveries: want,
        publish_seconds: published.seconds,
        first_delivery_after_seconds: first.saturating_duration_since(up).as_secs_f64(),
        drain_seconds: drain,
        drain_per_second: delivered as f64 / drain.max(1e-9),
        bulk_drain_seconds: bulk,
        bulk_drain_per_second: bulk_count as f64 / bulk.max(1e-9),
        delivered,
        peak_rss_mib: target.pid().and_then(memory_of).map(|(hwm, _)| hwm),
        receiver_requests: receiver.requests.load(std::sync::atomic::Ordering::Relaxed),
        load_average: load_average(),
    })
}
