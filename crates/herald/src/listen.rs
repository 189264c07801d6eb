//! `herald listen`: follows a tenant's feed through a server-side consumer and forwards
//! each event to a local URL, signed as a real delivery is, for local development (no
//! inbound connection to the laptop needed). The consumer's cursor lives in Herald, so
//! a restart resumes after the last event acknowledged.

use anyhow::{bail, Context};
use herald_client::feed::Start;
use herald_client::{Client, ClientError};
use herald_core::event::Event;
use herald_core::ids::{DeliveryId, EventId, TenantId};
use herald_core::signing::{generate_secret, signature_headers, SignatureFormat};
use herald_core::{Clock, SystemClock, Timestamp};
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The long poll of each read (Herald caps it at 60 s).
const POLL: Duration = Duration::from_secs(20);
/// Backoff while the local endpoint does not answer at all, or Herald cannot be reached.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(10);

#[derive(clap::Args)]
pub struct ListenArgs {
    /// The Herald to follow (any node).
    #[arg(long, env = "HERALD_URL", default_value = "http://127.0.0.1:8288")]
    url: String,
    /// A tenant key (or an admin key with `--tenant`).
    #[arg(long, env = "HERALD_KEY", hide_env_values = true)]
    key: Option<String>,
    /// With an admin key: the tenant whose events to follow.
    #[arg(long)]
    tenant: Option<String>,
    /// Where each event is POSTed, e.g. http://localhost:3000/hooks.
    #[arg(long)]
    forward_to: String,
    /// Event-type patterns (`a.b`, `a.*`, `*`), for a consumer created now; repeatable.
    #[arg(long = "types", value_delimiter = ',')]
    types: Vec<String>,
    /// How requests are signed: `herald` or `standard-webhooks`.
    #[arg(long, default_value = "herald", value_parser = ["herald", "standard-webhooks"])]
    format: String,
    /// The signing secret; one is generated (and printed) when none is given.
    #[arg(long, env = "HERALD_WEBHOOK_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// The server-side consumer that keeps the cursor (default `listen-<hostname>`).
    #[arg(long)]
    consumer: Option<String>,
    /// Where a consumer created now starts: `latest` (new events only) or `earliest`.
    #[arg(long, default_value = "latest", value_parser = ["latest", "earliest"])]
    start: String,
    /// How long the local endpoint may take to answer.
    #[arg(long, default_value = "10s")]
    timeout: String,
}

/// `listen-<hostname>`, kept to the characters a consumer name takes.
fn default_consumer() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(90)
        .collect();
    if host.is_empty() {
        "listen-local".into()
    } else {
        format!("listen-{host}")
    }
}

/// The event back from its resource (`GET /events/{id}`), so the body sent is the exact
/// bytes a delivery sends ([`Event::body_bytes`]).
fn event_of(resource: &Value) -> anyhow::Result<Event> {
    let text = |field: &str| {
        resource[field]
            .as_str()
            .with_context(|| format!("an event without `{field}`: {resource}"))
    };
    Ok(Event {
        id: EventId::parse(text("id")?)?,
        tenant: match resource["tenant"].as_str() {
            Some(t) => Some(TenantId::parse(t)?),
            None => None,
        },
        event_type: text("type")?.to_owned(),
        key: resource["key"].as_str().map(str::to_owned),
        sequence: resource["sequence"].as_i64(),
        data: resource["data"].clone(),
        created_at: Timestamp::parse_rfc3339(text("created_at")?)
            .context("an event with a bad `created_at`")?,
    })
}

/// What the local endpoint made of one event.
enum Forwarded {
    /// It answered (any status counts as handled).
    Answered,
    /// Stopped (Ctrl-C) while the endpoint was not answering: not handled.
    Stopped,
}

struct Forwarder {
    http: reqwest::Client,
    url: String,
    format: SignatureFormat,
    secret: String,
}

impl Forwarder {
    /// POSTs `event` signed as a delivery's first attempt. A connection refused or a
    /// timeout is tried again (the local app may be restarting) until it answers or
    /// `stop` is cancelled; any HTTP answer, 5xx included, is the end of it.
    async fn forward(&self, event: &Event, stop: &CancellationToken) -> anyhow::Result<Forwarded> {
        let body = event.body_bytes();
        let delivery = DeliveryId::generate().to_string();
        let mut backoff = RETRY_FIRST;
        loop {
            let started = Instant::now();
            let mut req = self.http.post(&self.url).body(body.clone());
            let headers = signature_headers(
                self.format,
                &[self.secret.as_str()],
                &event.id.to_string(),
                &event.event_type,
                SystemClock.now(),
                &body,
            );
            req = req.header("Content-Type", "application/json");
            for (name, value) in headers {
                req = req.header(name, value);
            }
            req = req
                .header("X-Delivery-Id", &delivery)
                .header("X-Delivery-Attempt", "1");
            match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    // Read the answer whole, so the latency covers it.
                    let _ = resp.bytes().await;
                    print_line(event, &status.to_string(), started.elapsed());
                    return Ok(Forwarded::Answered);
                }
                Err(e) => {
                    print_line(
                        event,
                        &format!("error: {}", short_error(&e)),
                        started.elapsed(),
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.cancelled() => return Ok(Forwarded::Stopped),
                    }
                    backoff = (backoff * 2).min(RETRY_MAX);
                }
            }
        }
    }
}

fn short_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection refused".into()
    } else {
        e.to_string()
    }
}

/// `2026-12-02T10:00:00.123Z  payment.succeeded  evt_01…  -> 200  12 ms`
fn print_line(event: &Event, outcome: &str, latency: Duration) {
    println!(
        "{}  {}  {}  -> {}  {} ms",
        SystemClock.now().to_rfc3339(),
        event.event_type,
        event.id,
        outcome,
        latency.as_millis()
    );
}

pub async fn listen(args: ListenArgs) -> anyhow::Result<()> {
    let Some(key) = args.key.as_deref().filter(|k| !k.is_empty()) else {
        bail!("a tenant key is needed: pass --key or set HERALD_KEY");
    };
    let format = SignatureFormat::parse(&args.format).context("--format")?;
    let timeout = herald_core::duration::parse(&args.timeout)
        .map_err(|e| anyhow::anyhow!("--timeout: {e}"))?;
    // Bounded, so a connection that died (a laptop asleep) is noticed: a long poll's wait
    // plus room for the answer.
    let http = reqwest::Client::builder()
        .timeout(POLL + Duration::from_secs(30))
        .build()
        .context("building the HTTP client")?;
    let client = Client::with_http(http, &args.url, key);
    let name = args.consumer.clone().unwrap_or_else(default_consumer);
    let tenant = args.tenant.as_deref();
    let start = if args.start == "earliest" {
        Start::Earliest
    } else {
        Start::Latest
    };
    let consumer = client
        .ensure_consumer(&name, &args.types, start, tenant)
        .await
        .with_context(|| format!("opening the consumer {name:?} on {}", args.url))?;
    if !args.types.is_empty() && consumer.types != args.types {
        eprintln!(
            "note: consumer {name:?} already exists with types {:?}; those apply (delete it to change them)",
            consumer.types
        );
    }
    let secret = match &args.secret {
        Some(s) => s.clone(),
        None => {
            let s = generate_secret(format);
            println!("> Signing secret ({}): {s}", format.as_str());
            s
        }
    };
    println!(
        "> Forwarding events of consumer {name:?} from {} to {} (Ctrl-C stops after the current event)",
        args.url, args.forward_to
    );
    let forwarder = Forwarder {
        // Redirects are not followed, as in a real delivery.
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .user_agent(concat!("Herald-Listen/", env!("CARGO_PKG_VERSION")))
            .build()?,
        url: args.forward_to.clone(),
        format,
        secret,
    };

    let stop = CancellationToken::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            crate::wait_for_signal().await;
            stop.cancel();
        });
    }
    let mut backoff = RETRY_FIRST;
    let mut acked: Option<String> = None;
    while !stop.is_cancelled() {
        // One event per read: it is acknowledged once the local endpoint has answered,
        // so a stop (or a crash) never loses one and never repeats one acknowledged.
        let read = tokio::select! {
            read = client.consumer_events(&name, POLL, 1, tenant) => read,
            _ = stop.cancelled() => break,
        };
        let page = match read {
            Ok(page) => {
                backoff = RETRY_FIRST;
                page
            }
            Err(e) if retryable(&e) => {
                eprintln!("reading the feed: {e}; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => break,
                }
                backoff = (backoff * 2).min(RETRY_MAX);
                continue;
            }
            Err(e) => return Err(e).context("reading the feed"),
        };
        let Some(resource) = page.events.first() else {
            // Nothing for this consumer's types, but the read moved past what it looked
            // at: acknowledged too, so the next read does not look at it again.
            if acked.as_deref() != Some(page.next_cursor.as_str()) {
                if !ack(&client, &name, &page.next_cursor, tenant, &stop).await? {
                    break;
                }
                acked = Some(page.next_cursor.clone());
            }
            continue;
        };
        let event = event_of(resource)?;
        match forwarder.forward(&event, &stop).await? {
            Forwarded::Answered => {
                if !ack(&client, &name, &page.next_cursor, tenant, &stop).await? {
                    break;
                }
                acked = Some(page.next_cursor.clone());
            }
            Forwarded::Stopped => break,
        }
    }
    println!("> Stopped; the next `herald listen --consumer {name}` resumes after the last event acknowledged.");
    Ok(())
}

/// Herald unreachable, overloaded or timing out: worth trying again.
fn retryable(e: &ClientError) -> bool {
    match e {
        ClientError::Api { status, .. } => matches!(status, 429 | 500..=599),
        ClientError::Decode(_) => false,
        _ => true,
    }
}

/// Acknowledges `cursor`, trying again while Herald cannot be reached or is overloaded (the
/// event is not lost meanwhile: unacknowledged, it comes again). False when stopped first.
async fn ack(
    client: &Client,
    name: &str,
    cursor: &str,
    tenant: Option<&str>,
    stop: &CancellationToken,
) -> anyhow::Result<bool> {
    let mut backoff = RETRY_FIRST;
    loop {
        let done = tokio::select! {
            done = client.ack(name, cursor, tenant) => done,
            _ = stop.cancelled() => return Ok(false),
        };
        match done {
            Ok(_) => return Ok(true),
            Err(e) if retryable(&e) => {
                eprintln!("acknowledging the event: {e}; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return Ok(false),
                }
                backoff = (backoff * 2).min(RETRY_MAX);
            }
            Err(e) => return Err(e).context("acknowledging the event"),
        }
    }
}
