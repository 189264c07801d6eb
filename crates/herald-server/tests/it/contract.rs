//! The contract documents: the Markdown contract carries the settings in force, the
//! OpenAPI document covers every route in the route table plus config triggers, both
//! documents are served, and (with HERALD_TEST_SPEC_VALIDATORS=1) real validators
//! accept them: openapi-spec-validator and @asyncapi/parser.

use herald_server::{contract, Config};
use herald_testkit::spawn_app;
use reqwest::StatusCode;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const CONFIG: &str = r#"
[[operation_types]]
name = "transcode"
trigger = "POST /videos"
lease = "45s"
max_attempts = 4
deadline = "2h"
retention = "7d"
retry_after = "3s"

[[operation_types]]
name = "payment"
trigger = "POST /payments"

[[operation_types]]
name = "reindex"

[[event_types]]
name = "payment.refunded"
schema = { type = "object", required = ["payment_id"], properties = { payment_id = { type = "string" } } }

[webhooks]
allow_private_destinations = true
timeout = "7s"
schedule = ["0s", "7s", "3m"]
rotation_grace = "12h"

[[routes]]
events = ["payment.*"]
broker = "nats"
topic = "payments.events"
key = "/data/payment_id"

[[routes]]
events = ["payment.*"]
broker = "sqs"
topic = "payments.fifo"
key = "/data/payment_id"

[[routes]]
events = ["payment.*"]
broker = "sqs"
topic = "payments"

[[routes]]
events = ["payment.*"]
broker = "pubsub"
topic = "payments-events"
key = "/data/payment_id"

# Loopback only: the served-documents test starts the app, which connects to its brokers.
[brokers.sqs]
region = "eu-west-1"
endpoint = "http://127.0.0.1:4566"
access_key_id = "test"
secret_access_key = "test"

[brokers.pubsub]
project = "my-project"
emulator_host = "127.0.0.1:8085"
"#;

fn config() -> Config {
    Config::parse(CONFIG).unwrap()
}

#[test]
fn markdown_contract_is_filled_from_the_settings_in_force() {
    let md = contract::markdown(&config());
    for section in [
        "### 1. Trigger",
        "### 2. Status contract",
        "### 3. Delivery guarantees",
        "### 4. Failure handling",
        "### 5. Security",
        "### 6. Observability",
    ] {
        // One page per operation type (3) and per declared event type (1).
        assert_eq!(md.matches(section).count(), 4, "{section}\n{md}");
    }
    for needle in [
        "## Operation `transcode`",
        "## Operation `payment`",
        "## Operation `reindex`",
        "## Event `payment.refunded`",
        "`POST /videos`",
        "`POST /payments`",
        "HTTP/1.1 202 Accepted",
        "Location: /operations/op_01HX",
        "Retry-After: 3",
        "up to 4 attempts",
        "not done 2h after creation",
        "stays readable for 7d",
        "**Lease:** 45s per claim",
        "0s, 7s, 3m",
        "a window of about 3m 7s",
        "2xx within 7s",
        "for 12h the old and new secrets both sign",
        "- **Filters:** a webhook may set a `filter`",
        "`{\"/data/tier\": {\"$in\": [\"gold\", \"vip\"]}}`",
        "`rate_limit` (deliveries per second, evenly)",
        "**Custom headers:** a webhook may add up to 20 `headers`",
        "transcode.succeeded",
        "`sequence`",
        "HMAC-SHA256(secret, X-Timestamp + \".\" + raw_body)",
        "webhook-signature: v1,BASE64",
        "\"payment_id\"",
        "**allowed** by this configuration",
        "**Broker route `nats:payments.events`:** published on nats `payments.events`, keyed by the event's `/data/payment_id`",
        "**in order per key**",
    ] {
        assert!(md.contains(needle), "missing {needle:?} in\n{md}");
    }
    // The AsyncAPI document has the route as a channel on a NATS server, carrying payment events.
    let doc = contract::asyncapi(&config(), "http://127.0.0.1:8288");
    let channel = &doc["channels"]["route_nats_payments_events"];
    assert_eq!(channel["address"], "payments.events.{key}", "{doc}");
    assert!(
        channel["messages"].get("payment_refunded").is_some(),
        "{channel}"
    );
    assert_eq!(doc["servers"]["nats"]["protocol"], "nats");
    // SQS and Pub/Sub routes say what their consumers get.
    for needle in [
        "**Broker route `sqs:payments.fifo`:** published on sqs `payments.fifo`",
        "`MessageGroupId` is the key and `MessageDeduplicationId` the event id",
        "**Broker route `sqs:payments`:** published on sqs `payments`",
        "a standard queue: at-least-once and **unordered**",
        "**Broker route `pubsub:payments-events`:**",
        "`ordering_key` is the key",
        "`herald-event-id`, `herald-event-type` and `traceparent`",
    ] {
        assert!(md.contains(needle), "missing {needle:?} in\n{md}");
    }
    assert_eq!(doc["servers"]["sqs"]["protocol"], "sqs");
    assert_eq!(doc["servers"]["sqs"]["host"], "127.0.0.1:4566");
    assert_eq!(doc["servers"]["pubsub"]["protocol"], "googlepubsub");
    assert_eq!(doc["servers"]["pubsub"]["host"], "127.0.0.1:8085");
    let fifo = &doc["channels"]["route_sqs_payments_fifo"];
    assert!(
        fifo["description"]
            .as_str()
            .unwrap()
            .contains("MessageDeduplicationId"),
        "{fifo}"
    );
    let ops = &doc["operations"]["publish_route_pubsub_payments-events"]["description"];
    assert!(ops.as_str().unwrap().contains("ordering_key"), "{ops}");
    // The type without a trigger says how it is created instead.
    assert!(md.contains("POST /operations { \"type\": \"reindex\""));
    // Defaults are printed when the config sets nothing.
    let default = contract::markdown(&Config::default());
    assert!(
        default.contains("0s, 5s, 5m, 30m, 2h, 5h, 10h, 14h, 20h, 24h"),
        "{default}"
    );
    assert!(default.contains("refused (SSRF protection)"));
}

/// `.route("PATH", …)` paths in the route table, read from its source so a route
/// added there without an OpenAPI entry fails this test.
fn routes_in_route_table() -> Vec<String> {
    let src = include_str!("../../src/routes/mod.rs");
    src.split(".route(")
        .skip(1)
        .filter_map(|rest| {
            let rest = rest.trim_start();
            let rest = rest.strip_prefix('"')?;
            Some(rest[..rest.find('"')?].to_owned())
        })
        .collect()
}

/// `Some("name") =>` custom methods handled by a resource's `custom_method`.
fn custom_methods(src: &str) -> Vec<String> {
    src.split("Some(\"")
        .skip(1)
        .filter_map(|rest| {
            let name = &rest[..rest.find('"')?];
            (name != "all").then(|| name.to_owned())
        })
        .collect()
}

#[test]
fn openapi_covers_every_route_custom_method_and_trigger() {
    let doc = contract::openapi(&config(), "http://127.0.0.1:8288");
    let paths = doc["paths"].as_object().unwrap();
    let routes = routes_in_route_table();
    assert!(routes.len() >= 20, "{routes:?}");
    for route in &routes {
        assert!(
            paths.contains_key(route),
            "route {route} missing from OpenAPI"
        );
    }
    for (base, src) in [
        (
            "/operations/{id}",
            include_str!("../../src/routes/operations.rs"),
        ),
        (
            "/webhooks/{id}",
            include_str!("../../src/routes/webhooks.rs"),
        ),
        (
            "/deliveries/{id}",
            include_str!("../../src/routes/deliveries.rs"),
        ),
        (
            "/consumers/{name}",
            include_str!("../../src/routes/consumers.rs"),
        ),
    ] {
        let methods = custom_methods(src);
        assert!(!methods.is_empty());
        for m in methods {
            let path = format!("{base}:{m}");
            assert!(paths.contains_key(&path), "{path} missing from OpenAPI");
        }
    }
    for trigger in ["/videos", "/payments"] {
        let answer = &paths[trigger]["post"]["responses"]["202"];
        assert_eq!(
            answer["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Operation"
        );
        assert!(answer["headers"]["Location"].is_object());
    }
    assert_eq!(doc["openapi"], "3.1.0");
    let problem = &doc["components"]["responses"]["Problem404"]["content"];
    assert!(problem["application/problem+json"].is_object());
    let webhooks = doc["webhooks"].as_object().unwrap();
    for e in [
        "transcode.succeeded",
        "payment.cancelled",
        "payment.refunded",
    ] {
        assert!(webhooks.contains_key(e), "{e}");
    }
    assert_eq!(
        webhooks["payment.refunded"]["post"]["requestBody"]["content"]["application/json"]
            ["schema"]["properties"]["data"]["required"][0],
        "payment_id"
    );
}

#[test]
fn asyncapi_has_a_channel_and_a_send_operation_per_event_type() {
    let doc = contract::asyncapi(&config(), "http://127.0.0.1:8288");
    assert_eq!(doc["asyncapi"], "3.0.0");
    let channels = doc["channels"].as_object().unwrap();
    // One per event type (three final events of each of three operation types, one
    // declared type), and one per broker route (NATS, two SQS, Pub/Sub).
    assert_eq!(channels.len(), 3 * 3 + 1 + 4);
    assert!(channels.contains_key("reindex.failed"));
    let op = &doc["operations"]["send_payment_refunded"];
    assert_eq!(op["action"], "send");
    assert!(op["description"].as_str().unwrap().contains("0s, 7s, 3m"));
}

#[tokio::test]
async fn documents_are_served_without_a_key_and_match_the_generators() {
    let app = spawn_app(CONFIG).await;
    for (path, expected) in [
        ("/openapi.json", contract::openapi(&config(), &app.base)),
        ("/asyncapi.json", contract::asyncapi(&config(), &app.base)),
    ] {
        let resp = app
            .http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body, expected, "{path}");
    }
    app.shutdown.cancel();
}

fn tools() -> PathBuf {
    std::env::var("HERALD_SPEC_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/var/cache/herald-tools"))
}

fn validators_enabled() -> bool {
    if std::env::var("HERALD_TEST_SPEC_VALIDATORS").as_deref() == Ok("1") {
        return true;
    }
    println!(
        "skipped: set HERALD_TEST_SPEC_VALIDATORS=1 (after scripts/install-spec-validators.sh) to run the real validators"
    );
    false
}

fn write_json(dir: &Path, name: &str, doc: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
    path
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn openapi_validator(file: &Path) -> (bool, String) {
    run(Command::new(tools().join("venv/bin/openapi-spec-validator")).arg(file))
}

fn asyncapi_validator(file: &Path) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/validate-asyncapi.js");
    run(Command::new("node")
        .env("NODE_PATH", tools().join("node/node_modules"))
        .arg(script)
        .arg(file))
}

#[test]
fn openapi_passes_openapi_spec_validator() {
    if !validators_enabled() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (name, config) in [("full", config()), ("default", Config::default())] {
        let doc = contract::openapi(&config, "http://127.0.0.1:8288");
        let (ok, out) = openapi_validator(&write_json(dir.path(), &format!("{name}.json"), &doc));
        assert!(ok, "{name}: {out}");
        println!("{name}: {out}");
    }
    // The validator is real: a document without `info` is refused.
    let mut broken = contract::openapi(&config(), "http://127.0.0.1:8288");
    broken.as_object_mut().unwrap().remove("info");
    let (ok, out) = openapi_validator(&write_json(dir.path(), "broken.json", &broken));
    assert!(!ok, "a broken document passed: {out}");
}

#[test]
fn asyncapi_passes_the_asyncapi_parser() {
    if !validators_enabled() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (name, config) in [("full", config()), ("default", Config::default())] {
        let doc = contract::asyncapi(&config, "http://127.0.0.1:8288");
        let (ok, out) = asyncapi_validator(&write_json(dir.path(), &format!("{name}.json"), &doc));
        assert!(ok, "{name}: {out}");
        println!("{name}: {out}");
    }
    let mut broken = contract::asyncapi(&config(), "http://127.0.0.1:8288");
    broken["operations"]["send_payment_refunded"]["action"] = Value::from("shout");
    let (ok, out) = asyncapi_validator(&write_json(dir.path(), "broken.json", &broken));
    assert!(!ok, "a broken document passed: {out}");
}
