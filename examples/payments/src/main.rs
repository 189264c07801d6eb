//! The reference text's Mini Drill, run end to end against a real Herald (in-process,
//! port 0, temp database): `POST /payments` is a long-running operation whose
//! authorize + capture is done by a worker built on `herald-client`; the payments
//! backend publishes `payment.succeeded`, `payment.failed` and `payment.refunded`,
//! keyed by payment id; a webhook consumer verifies, dedupes and applies them; and the
//! ordering note is answered in code: [`PaymentLedger`] rebuilds the right final state
//! from `sequence` however the events are shuffled and duplicated.
//!
//! Run: `cargo run -p example-payments`. Exits 0 only if every check held.

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use herald_client::client::{NewEvent, WaitOptions};
use herald_client::{
    Client, DedupeStore, JobOutcome, MemoryDedupe, WebhookVerifier, Worker, WorkerOptions,
};
use herald_server::embedded::EmbeddedHerald;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const CONFIG: &str = r#"
# POST /payments starts a `charge` operation. (Its own final events are
# charge.succeeded|failed|cancelled; the payment.* events below are the domain events
# the payments backend publishes, keyed by payment id so they carry `sequence`.)
[[operation_types]]
name = "charge"
trigger = "POST /payments"
lease = "10s"
max_attempts = 3
retry_after = "1s"

[[event_types]]
name = "payment.succeeded"
schema = { type = "object", required = ["payment_id", "amount", "currency"] }
[[event_types]]
name = "payment.failed"
schema = { type = "object", required = ["payment_id", "reason"] }
[[event_types]]
name = "payment.refunded"
schema = { type = "object", required = ["payment_id", "amount"] }

[webhooks]
allow_private_destinations = true   # the consumer below listens on loopback
schedule = ["0s", "1s", "2s", "5s"]
"#;

/// The state a consumer keeps per payment.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PaymentState {
    status: String,
    sequence: i64,
}

/// The answer to "can the consumer assume `succeeded` arrives before `refunded`?": no.
/// Herald numbers events per (tenant, key) with `sequence`; the ledger keeps, per
/// payment, the highest sequence applied and ignores anything not newer. Duplicates
/// (at-least-once) and late arrivals (no ordering) then change nothing, and the final
/// state is the same in whatever order the events came.
#[derive(Default, Debug, Clone, PartialEq)]
struct PaymentLedger {
    payments: BTreeMap<String, PaymentState>,
}

impl PaymentLedger {
    /// Applies one delivered event body; returns whether it changed the state.
    fn apply(&mut self, event: &Value) -> bool {
        let (Some(key), Some(sequence), Some(kind)) = (
            event["key"].as_str(),
            event["sequence"].as_i64(),
            event["type"].as_str(),
        ) else {
            return false;
        };
        let status = kind.trim_start_matches("payment.").to_owned();
        match self.payments.get(key) {
            Some(current) if current.sequence >= sequence => false,
            _ => {
                self.payments
                    .insert(key.to_owned(), PaymentState { status, sequence });
                true
            }
        }
    }

    fn status(&self, payment_id: &str) -> Option<&str> {
        self.payments.get(payment_id).map(|p| p.status.as_str())
    }
}

/// What the webhook consumer saw.
#[derive(Default)]
struct Consumer {
    ledger: PaymentLedger,
    /// Every verified body, duplicates included, in arrival order.
    delivered: Vec<Value>,
    /// Side effects done once per event id (e.g. a receipt e-mail).
    receipts_sent: usize,
    refused: usize,
    duplicates_ignored: usize,
    first_attempt_failed: HashSet<String>,
}

struct Checks {
    failed: Vec<String>,
}

impl Checks {
    fn check(&mut self, ok: bool, what: &str) {
        println!("  [{}] {what}", if ok { "ok" } else { "FAILED" });
        if !ok {
            self.failed.push(what.to_owned());
        }
    }
}

/// A webhook receiver: verifies the signature, fails the first attempt of each event
/// (to show retries and dedupe), dedupes by event id, and applies to the ledger.
async fn start_consumer(
    secret: Arc<Mutex<Option<String>>>,
    state: Arc<Mutex<Consumer>>,
    dedupe: Arc<MemoryDedupe>,
) -> anyhow::Result<String> {
    let app = axum::Router::new().route(
        "/hooks/payments",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let secret = secret.clone();
            let state = state.clone();
            let dedupe = dedupe.clone();
            async move {
                let Some(secret) = secret.lock().unwrap().clone() else {
                    return StatusCode::SERVICE_UNAVAILABLE;
                };
                let verified = match WebhookVerifier::new(secret).verify(&headers, &body) {
                    Ok(v) => v,
                    Err(e) => {
                        println!("  consumer: refused a request: {e}");
                        state.lock().unwrap().refused += 1;
                        return StatusCode::UNAUTHORIZED;
                    }
                };
                let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                state.lock().unwrap().delivered.push(event.clone());
                // At-least-once: a redelivery of an event already handled does nothing.
                if !dedupe.first_time(&verified.event_id).await.unwrap_or(false) {
                    println!(
                        "  consumer: {} {} seq {} again -> duplicate, ignored (200)",
                        event["type"], event["key"], event["sequence"]
                    );
                    state.lock().unwrap().duplicates_ignored += 1;
                    return StatusCode::OK;
                }
                let mut s = state.lock().unwrap();
                s.receipts_sent += 1;
                let changed = s.ledger.apply(&event);
                // Simulate a crash after the work but before the acknowledgement, once per
                // event: Herald sees a 503 and delivers the same event again.
                let lose_ack = s.first_attempt_failed.insert(verified.event_id.clone());
                println!(
                    "  consumer: {} {} seq {} -> {}{}",
                    event["type"],
                    event["key"],
                    event["sequence"],
                    if changed {
                        "applied"
                    } else {
                        "older than what we have, ignored"
                    },
                    if lose_ack {
                        "; acknowledgement lost (503), Herald will retry"
                    } else {
                        ""
                    }
                );
                if lose_ack {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hooks/payments", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

/// The worker: authorize, then capture, then tell the world (payment.* events).
async fn charge(job: herald_client::Job, backend: Client, tenant: String) -> JobOutcome {
    let input = job.input().clone();
    let payment_id = format!("pay_{}", job.id().trim_start_matches("op_"));
    let amount = input["amount"].as_i64().unwrap_or(0);
    let currency = input["currency"].as_str().unwrap_or("USD").to_owned();
    job.set_metadata("payment_id", json!(payment_id));
    job.set_metadata("stage", json!("authorizing"));
    job.set_progress(10);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let declined = input["card"].as_str().is_some_and(|c| c.ends_with("0002"));
    let publish = |event_type: &str, data: Value| NewEvent {
        id: None,
        event_type: event_type.into(),
        tenant: Some(tenant.clone()),
        key: Some(payment_id.clone()),
        data,
    };
    if declined {
        let published = backend
            .publish(
                &publish(
                    "payment.failed",
                    json!({ "payment_id": payment_id, "reason": "card_declined" }),
                ),
                None,
            )
            .await;
        if let Err(e) = published {
            return JobOutcome::retry("PUBLISH_FAILED", e.to_string());
        }
        return JobOutcome::fail("CARD_DECLINED", "The issuer declined the authorization.");
    }
    job.set_metadata("stage", json!("capturing"));
    job.set_progress(60);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let published = backend
        .publish(
            &publish(
                "payment.succeeded",
                json!({ "payment_id": payment_id, "amount": amount, "currency": currency }),
            ),
            None,
        )
        .await;
    if let Err(e) = published {
        return JobOutcome::retry("PUBLISH_FAILED", e.to_string());
    }
    job.set_progress(100);
    JobOutcome::Complete(json!({
        "payment_id": payment_id,
        "status": "captured",
        "amount": amount,
        "currency": currency
    }))
}

/// A small deterministic shuffle (xorshift), so every run tries the same orders.
fn shuffled<T: Clone>(items: &[T], seed: u64) -> Vec<T> {
    let mut out = items.to_vec();
    let mut x = seed.max(1);
    for i in (1..out.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.swap(i, (x % (i as u64 + 1)) as usize);
    }
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let herald =
        EmbeddedHerald::start(CONFIG, &dir.path().join("herald.db"), "example-admin").await?;
    println!("Herald is running at {} (temp database)\n", herald.base_url);
    let backend = Client::new(&herald.base_url, &herald.admin_key);
    let mut checks = Checks { failed: vec![] };

    // The merchant is a tenant; the payments backend holds the admin and worker keys.
    let shop = backend.create_tenant("shop").await?;
    let shop_client = Client::new(
        &herald.base_url,
        &backend.create_key("tenant", Some(&shop.id)).await?.key,
    );
    let worker_client = Client::new(
        &herald.base_url,
        &backend.create_key("worker", None).await?.key,
    );

    // The merchant's webhook consumer.
    let secret = Arc::new(Mutex::new(None));
    let consumer = Arc::new(Mutex::new(Consumer::default()));
    let url = start_consumer(
        secret.clone(),
        consumer.clone(),
        Arc::new(MemoryDedupe::new(10_000)),
    )
    .await?;
    let hook = shop_client
        .create_webhook(
            &json!({ "url": url, "events": ["payment.*"], "signing_secret_version": 1 }),
        )
        .await?;
    *secret.lock().unwrap() = hook["signing_secret"].as_str().map(str::to_owned);
    println!(
        "1. The merchant registered {} for payment.* (Herald signature format)\n",
        url
    );

    // The worker, built on herald-client.
    let shutdown = CancellationToken::new();
    let worker = {
        let backend = backend.clone();
        let tenant = shop.id.clone();
        tokio::spawn(
            Worker::new(
                worker_client,
                WorkerOptions {
                    types: vec!["charge".into()],
                    claim_wait: Duration::from_secs(5),
                    heartbeat_every: Duration::from_millis(100),
                    concurrency: 4,
                    ..Default::default()
                },
            )
            .run(
                move |job| charge(job, backend.clone(), tenant.clone()),
                shutdown.clone(),
            ),
        )
    };

    println!("2. POST /payments, three times (the third card will be refunded later):");
    let mut ops = Vec::new();
    for (i, card) in ["4242424242424242", "4000000000000002", "5555555555554444"]
        .iter()
        .enumerate()
    {
        let body = json!({ "amount": 4599 + i as i64, "currency": "USD", "card": card });
        let op = shop_client
            .trigger("/payments", &body, Some(&format!("checkout-{i}")))
            .await?;
        println!(
            "   202 Accepted, Location: /operations/{}\n   {}",
            op.id(),
            serde_json::to_string(&op)?
        );
        ops.push(op);
    }
    // A client retrying the same checkout (same Idempotency-Key, same body) gets the same operation.
    let retry = shop_client
        .trigger(
            "/payments",
            &json!({ "amount": 4599, "currency": "USD", "card": "4242424242424242" }),
            Some("checkout-0"),
        )
        .await?;
    checks.check(
        retry.name == ops[0].name,
        "a retried POST /payments with the same Idempotency-Key is the same operation",
    );

    println!("\n3. GET /operations/{{id}} until done (the client honours Retry-After):");
    let mut finals = Vec::new();
    for op in &ops {
        let done = shop_client
            .wait(
                op.id(),
                &WaitOptions {
                    timeout: Duration::from_secs(30),
                    ..Default::default()
                },
            )
            .await?;
        println!("   {}", serde_json::to_string(&done)?);
        finals.push(done);
    }
    let pay = |i: usize| {
        finals[i].metadata["payment_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    checks.check(
        finals[0]
            .response
            .as_ref()
            .is_some_and(|r| r["status"] == "captured")
            && finals[0].error.is_none(),
        "payment 1: done with a response (captured)",
    );
    checks.check(
        finals[1]
            .error
            .as_ref()
            .is_some_and(|e| e.code == "CARD_DECLINED")
            && finals[1].response.is_none(),
        "payment 2: done with error CARD_DECLINED",
    );
    checks.check(finals[2].response.is_some(), "payment 3: captured");

    println!("\n4. The merchant refunds payment 3; the backend publishes payment.refunded:");
    let refund = backend
        .publish(
            &NewEvent {
                event_type: "payment.refunded".into(),
                tenant: Some(shop.id.clone()),
                key: Some(pay(2)),
                data: json!({ "payment_id": pay(2), "amount": 4601 }),
                ..Default::default()
            },
            None,
        )
        .await?;
    println!(
        "   202 {{ \"id\": \"{}\", \"sequence\": {} }}",
        refund.id,
        refund.sequence.unwrap_or_default()
    );
    checks.check(
        refund.sequence == Some(2),
        "payment.refunded is sequence 2 for its payment (succeeded was 1)",
    );

    println!("\n5. The consumer receives the webhooks (verifies, dedupes, applies; loses one ack per event on purpose):");
    let expected: BTreeMap<String, String> = [
        (pay(0), "succeeded".to_owned()),
        (pay(1), "failed".to_owned()),
        (pay(2), "refunded".to_owned()),
    ]
    .into_iter()
    .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let reached = {
            let c = consumer.lock().unwrap();
            c.duplicates_ignored >= 4
                && expected
                    .iter()
                    .all(|(k, v)| c.ledger.status(k) == Some(v.as_str()))
        };
        if reached || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (ledger, delivered, receipts, refused, duplicates) = {
        let c = consumer.lock().unwrap();
        (
            c.ledger.clone(),
            c.delivered.clone(),
            c.receipts_sent,
            c.refused,
            c.duplicates_ignored,
        )
    };
    for (k, v) in &expected {
        checks.check(
            ledger.status(k) == Some(v.as_str()),
            &format!("consumer state: {k} is {v}"),
        );
    }
    checks.check(
        receipts == 4,
        "one receipt per event (4), despite every event arriving at least twice",
    );
    checks.check(
        delivered.len() >= 8,
        "every event was delivered at least twice (at-least-once, retried after 503)",
    );
    checks.check(
        duplicates >= 4,
        "the redeliveries were recognised by event id and ignored",
    );
    checks.check(refused == 0, "every delivery carried a valid signature");

    println!("\n6. The ordering note, in code: shuffle and duplicate what was delivered, rebuild from `sequence`:");
    let mut doubled = delivered.clone();
    doubled.extend(delivered.iter().cloned());
    let mut all_orders_agree = true;
    let mut naive_wrong = 0;
    for seed in 1..=50u64 {
        let order = shuffled(&doubled, seed * 7919);
        let mut rebuilt = PaymentLedger::default();
        let mut naive: BTreeMap<String, String> = BTreeMap::new();
        for e in &order {
            rebuilt.apply(e);
            // What a consumer without `sequence` would do: last arrival wins.
            naive.insert(
                e["key"].as_str().unwrap_or("").into(),
                e["type"]
                    .as_str()
                    .unwrap_or("")
                    .trim_start_matches("payment.")
                    .into(),
            );
        }
        let got: BTreeMap<String, String> = rebuilt
            .payments
            .iter()
            .map(|(k, v)| (k.clone(), v.status.clone()))
            .collect();
        all_orders_agree &= got == expected;
        if naive != expected {
            naive_wrong += 1;
        }
    }
    println!("   50 shuffled, duplicated orders of {} deliveries; last-arrival-wins got {naive_wrong} of them wrong.", doubled.len());
    checks.check(
        all_orders_agree,
        "every order rebuilds the same final state from `sequence`",
    );

    // The same history is there to reconcile from, in order.
    let history = backend.list_events_for_key(&pay(2)).await?;
    let seqs: Vec<i64> = history
        .iter()
        .filter_map(|e| e["sequence"].as_i64())
        .collect();
    checks.check(
        seqs.contains(&1) && seqs.contains(&2) && seqs.len() == 2,
        "GET /events?key= holds payment 3's history (sequence 1 and 2)",
    );

    shutdown.cancel();
    worker.await??;
    herald.stop().await?;
    if checks.failed.is_empty() {
        println!("\nAll checks held.");
        Ok(())
    } else {
        eprintln!(
            "\n{} check(s) failed: {:?}",
            checks.failed.len(),
            checks.failed
        );
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, seq: i64) -> Value {
        json!({ "type": format!("payment.{kind}"), "key": "pay_1", "sequence": seq, "data": {} })
    }

    #[test]
    fn the_ledger_keeps_the_newest_sequence_whatever_the_order() {
        let mut l = PaymentLedger::default();
        assert!(l.apply(&event("refunded", 2)));
        assert!(!l.apply(&event("succeeded", 1)), "older than what we have");
        assert!(
            !l.apply(&event("refunded", 2)),
            "a duplicate changes nothing"
        );
        assert_eq!(l.status("pay_1"), Some("refunded"));
        assert!(
            !l.apply(&json!({ "type": "payment.succeeded" })),
            "no key: not ordered"
        );
    }

    #[test]
    fn shuffles_are_permutations() {
        let items: Vec<u32> = (0..20).collect();
        let mut s = shuffled(&items, 42);
        assert_ne!(s, items);
        s.sort();
        assert_eq!(s, items);
    }
}
