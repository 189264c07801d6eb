use super::*;
use herald_core::retry::RetrySchedule;

#[test]
fn parses_the_design_example() {
    let c = Config::parse(
        r#"
[[operation_types]]
name = "transcode"
trigger = "POST /videos"
lease = "30s"
max_attempts = 3
retention = "30d"

[webhooks]
allow_private_destinations = false
timeout = "10s"
schedule = ["0s", "5s", "5m", "30m", "2h", "5h", "10h", "14h", "20h", "24h"]
"#,
    )
    .unwrap();
    let t = c.operation_type("transcode").unwrap();
    let trigger = t.trigger.as_ref().unwrap();
    assert_eq!((trigger.method(), trigger.path()), ("POST", "/videos"));
    assert_eq!(t.retention, Duration::from_secs(30 * 86400));
    assert_eq!(c.webhooks.schedule, RetrySchedule::default());
    assert_eq!(c.max_body_bytes, 1024 * 1024);
    assert_eq!(c.retention.events, Some(Duration::from_secs(30 * 86400)));
    assert_eq!(
        c.limits.requests_per_second, 0,
        "rate limits are off by default"
    );
    let off = Config::parse("[retention]\nevents = \"off\"").unwrap();
    assert_eq!(off.retention.events, None);
}

#[test]
fn parses_routes_and_broker_defaults() {
    let c = Config::parse(
        r#"
[[routes]]
events = ["payment.*"]
broker = "nats"
topic = "payments.events"
key = "/data/payment_id"

[brokers.redis]
maxlen = 1000
"#,
    )
    .unwrap();
    let r = &c.routes[0];
    assert_eq!(r.name, "nats:payments.events");
    assert_eq!(r.key, "/data/payment_id");
    assert_eq!(c.brokers.nats.url, "nats://127.0.0.1:4222");
    assert_eq!(
        c.brokers.rabbitmq.url,
        "amqp://guest:guest@127.0.0.1:5672/%2f"
    );
    assert_eq!(c.brokers.redis.url, "redis://127.0.0.1:6379");
    assert_eq!(c.brokers.redis.maxlen, Some(1000));
    assert_eq!(c.brokers.kafka.bootstrap, "127.0.0.1:9092");
    assert_eq!(c.brokers_in_use(), vec![BrokerKind::Nats]);
    assert_eq!(c.brokers.url(BrokerKind::Kafka), "127.0.0.1:9092");
}

/// A key left out of a section takes the default the README documents.
#[test]
fn a_key_left_out_takes_its_default() {
    let c = Config::parse(
        "[webhooks]\ntimeout = \"5s\"\n[store]\nread_queue = 8\n[limits]\nburst = 3\n\
         [retention]\nbatch = 7\n[metrics]\nrequire_key = true\n[brokers]\ntimeout = \"1s\"\n\
         [brokers.redis]\nmaxlen = 5\n[brokers.kafka]\npartitions = 6\n",
    )
    .unwrap();
    let d = Config::default();
    let w = &c.webhooks;
    assert_eq!(w.timeout, Duration::from_secs(5));
    assert_eq!(w.schedule, RetrySchedule::default());
    assert_eq!(w.rotation_grace, Duration::from_secs(86400));
    assert_eq!(
        (w.max_in_flight, w.per_webhook_concurrency, w.max_per_tenant),
        (256, 16, 100)
    );
    assert!(!w.allow_private_destinations);
    assert_eq!(
        (c.store.write_queue, c.store.read_queue),
        (d.store.write_queue, 8)
    );
    assert_eq!(d.store.read_queue, 4096);
    assert_eq!(
        (
            c.limits.requests_per_second,
            c.limits.burst,
            c.limits.failed_auth_per_minute
        ),
        (0, Some(3), 60)
    );
    assert_eq!(c.retention.events, Some(Duration::from_secs(30 * 86400)));
    assert_eq!(
        (c.retention.batch, c.retention.interval),
        (7, Duration::from_secs(60))
    );
    assert_eq!(c.metrics.refresh, Duration::from_secs(10));
    assert_eq!(c.brokers.timeout, Duration::from_secs(1));
    assert_eq!(c.brokers.max_backoff, Duration::from_secs(30));
    assert_eq!(d.brokers.timeout, Duration::from_secs(10));
    assert_eq!(c.brokers.redis.url, "redis://127.0.0.1:6379");
    assert_eq!(c.brokers.redis.maxlen, Some(5));
    let k = &c.brokers.kafka;
    assert_eq!(
        (k.bootstrap.as_str(), k.partitions, k.replication_factor),
        ("127.0.0.1:9092", 6, 1)
    );
    assert_eq!(c.max_body_bytes, 1024 * 1024);
    assert_eq!(c.request_timeout, Duration::from_secs(30));
}

/// Every value the file writes as text arrives as its type, parsed once at load.
#[test]
fn values_arrive_typed() {
    let c = Config::parse(
        r#"
secret_key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
public_url = "https://hooks.example.com:8443/"

[[operation_types]]
name = "transcode"
trigger = "POST   /videos "
deadline = "2h"

[[event_types]]
name = "payment.succeeded"
schema = { type = "object", required = ["payment_id"] }

[webhooks]
schedule = ["0s", "1500ms", "5m"]

[[routes]]
name = "payments"
events = ["payment.*", "refund.created"]
broker = "kafka"
topic = "payments"

[brokers.kafka]
bootstrap = "k1:9092, k2:9092"
"#,
    )
    .unwrap();
    assert!(c.secret_key.is_some());
    assert_eq!(
        c.public_url.as_ref().map(|u| u.as_str()),
        Some("https://hooks.example.com:8443")
    );
    let t = &c.operation_types[0];
    assert_eq!(t.trigger.as_ref().unwrap().to_string(), "POST /videos");
    assert_eq!(t.deadline, Some(Duration::from_secs(7200)));
    assert_eq!(
        c.event_types[0].schema,
        serde_json::json!({ "type": "object", "required": ["payment_id"] })
    );
    assert_eq!(
        c.webhooks.schedule.waits(),
        [
            Duration::ZERO,
            Duration::from_millis(1500),
            Duration::from_secs(300)
        ]
    );
    let r = &c.routes[0];
    assert_eq!(r.broker, BrokerKind::Kafka);
    assert_eq!(r.name, "payments");
    assert_eq!(r.key, "/key", "the default key");
    assert!(herald_core::pattern::any_matches(
        &r.events,
        "refund.created"
    ));
    assert!(!herald_core::pattern::any_matches(
        &r.events,
        "refund.failed"
    ));
    assert_eq!(c.brokers_in_use(), vec![BrokerKind::Kafka]);
}

/// An invalid value is refused at load, under its key's path, and never echoes a secret.
#[test]
fn an_invalid_value_is_refused_under_its_key_path() {
    let route = "[[routes]]\nevents = [\"a\"]\nbroker = \"nats\"\ntopic = \"t\"\n";
    for (text, expected) in [
        (
            "[webhooks]\nschedule = [\"0s\", \"5s\", \"soon\"]".to_owned(),
            "webhooks.schedule[2]: `soon` is not a duration",
        ),
        (
            "[webhooks]\nschedule = []".to_owned(),
            "webhooks.schedule: a retry schedule needs between 1 and 50 entries",
        ),
        (
            format!("{route}[[routes]]\nevents = [\"a\"]\nbroker = \"kafak\"\ntopic = \"t\""),
            "routes[1].broker: unknown broker `kafak`; use nats, rabbitmq, redis, kafka, sqs or pubsub",
        ),
        (
            format!("{route}[[routes]]\nevents = [\"a.b\", \"pay*\"]\nbroker = \"nats\"\ntopic = \"t\""),
            "routes[1].events[1]: `pay*` is not an event type pattern",
        ),
        (
            format!("{route}[[routes]]\nevents = [\"a\"]\nbroker = \"kafka\"\ntopic = \"a b\""),
            "routes[1]: topic `a b` is not a valid kafka topic",
        ),
        (
            "[[operation_types]]\nname = \"a\"\n[[operation_types]]\nname = \"b\"\ntrigger = \"GET /x\"".to_owned(),
            "operation_types[1].trigger: trigger method must be POST, not GET",
        ),
        (
            "[[operation_types]]\nname = \"a\"\nlease = \"soon\"".to_owned(),
            "operation_types[0].lease: `soon` is not a duration",
        ),
        (
            "[[event_types]]\nname = \"a\"\nschema = { type = 5 }".to_owned(),
            "event_types[0].schema: its schema is not valid JSON Schema",
        ),
        (
            "[brokers.kafka]\nbootstrap = \"k1:9092,k2\"".to_owned(),
            "brokers.kafka.bootstrap: `k2` is not host:port",
        ),
        (
            "[retention]\nevents = \"soon\"".to_owned(),
            "retention.events: `soon` is not a duration",
        ),
        (
            "[metrics]\nrefresh = \"soon\"".to_owned(),
            "metrics.refresh: `soon` is not a duration",
        ),
        (
            "secret_key = \"c2hvcnQ=\"".to_owned(),
            "secret_key: the secret key must be 32 bytes",
        ),
    ] {
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("config file <text>: {expected}")),
            "{text}\n{err}"
        );
        assert!(err.contains("(line "), "the line is named: {err}");
        assert!(!err.contains("c2hvcnQ="), "the key is never echoed: {err}");
    }
    let syntax = Config::parse("[webhooks\n").unwrap_err().to_string();
    assert!(syntax.contains("TOML parse error"), "{syntax}");
}

#[test]
fn the_environment_overrides_the_keys() {
    let mut c = Config::parse("admin_key = \"from-file\"").unwrap();
    c.apply_env(|_| Some(String::new())).unwrap();
    assert_eq!(
        c.admin_key,
        Some(Redacted("from-file".into())),
        "empty is unset"
    );
    assert!(c.secret_key.is_none());
    let key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    c.apply_env(|name| match name {
        "HERALD_ADMIN_KEY" => Some("env".into()),
        "HERALD_SECRET_KEY" => Some(key.into()),
        _ => None,
    })
    .unwrap();
    assert_eq!(c.admin_key, Some(Redacted("env".into())));
    assert!(c.secret_key.is_some());
    let err = c
        .apply_env(|name| (name == "HERALD_SECRET_KEY").then(|| "c2hvcnQ=".into()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("secret_key") && !err.contains("c2hvcnQ="),
        "{err}"
    );
}

#[test]
fn rejects_bad_config_with_a_clear_message() {
    for (text, needle) in [
        (
            "[[operation_types]]\nname = \"a\"\ntrigger = \"GET /x\"",
            "must be POST",
        ),
        (
            "[[operation_types]]\nname = \"a\"\ntrigger = \"POST /operations/x\"",
            "Herald's own routes",
        ),
        (
            "[[operation_types]]\nname = \"a\"\nlease = \"soon\"",
            "not a duration",
        ),
        (
            "[[operation_types]]\nname = \"a\"\n[[operation_types]]\nname = \"a\"",
            "declared twice",
        ),
        (
            "[[operation_types]]\nname = \"a\"\ntrigger = \"POST /x\"\n[[operation_types]]\nname = \"b\"\ntrigger = \"POST /x\"",
            "trigger path `/x` is used by two operation types",
        ),
        (
            "[[operation_types]]\nname = \"delivery\"",
            "Herald's own event types",
        ),
        ("public_url = \"hooks.example.com\"", "is not a URL"),
        ("public_url = \"https://h.example.com/?a=1\"", "is not a URL"),
        ("public_url = \"https://h.example.com/herald\"", "is not a URL"),
        ("bogus = 1", "unknown field"),
        ("[retention]\nevents = \"1h\"", "at least 1d"),
        ("[retention]\nevents = \"soon\"", "not a duration"),
        ("[limits]\nburst = 0", "burst"),
        (
            "[[routes]]\nevents = [\"payment.*\"]\nbroker = \"kafkaa\"\ntopic = \"t\"",
            "unknown broker `kafkaa`",
        ),
        (
            "[[routes]]\nevents = [\"payment.*\"]\nbroker = \"nats\"",
            "`topic` is missing",
        ),
        (
            "[[routes]]\nevents = []\nbroker = \"nats\"\ntopic = \"t\"",
            "`events` lists no event type",
        ),
        (
            "[[routes]]\nevents = [\"payment.*\"]\nbroker = \"redis\"\ntopic = \"t\"\nkey = \"data.payment_id\"",
            "not a JSON pointer",
        ),
        (
            "[[routes]]\nevents = [\"payment.*\"]\nbroker = \"redis\"\ntopic = \"t\"\nkey = \"/data/~2\"",
            "not a JSON pointer",
        ),
        (
            "[[routes]]\nevents = [\"pay*\"]\nbroker = \"redis\"\ntopic = \"t\"",
            "not an event type pattern",
        ),
        (
            "[[routes]]\nevents = [\"a\"]\nbroker = \"nats\"\ntopic = \"a.*\"",
            "not a valid nats topic",
        ),
        (
            "[[routes]]\nevents = [\"a\"]\nbroker = \"nats\"\ntopic = \"t\"\n[[routes]]\nevents = [\"b\"]\nbroker = \"nats\"\ntopic = \"t\"",
            "routes[1]: route name `nats:t` is used twice",
        ),
        (
            "[brokers.kafka]\nbootstrap = \"kafka://127.0.0.1:9092\"",
            "`kafka://127.0.0.1:9092` is not host:port",
        ),
        (
            "[brokers.kafka]\nbootstrap = \"127.0.0.1:9092, 127.0.0.2\"",
            "`127.0.0.2` is not host:port",
        ),
        (
            "[[routes]]\nevents = [\"a\"]\nbroker = \"sqs\"\ntopic = \"pay.ments\"",
            "not a valid sqs topic: an SQS queue name has 1 to 80",
        ),
        (
            "[[routes]]\nevents = [\"a\"]\nbroker = \"sqs\"\ntopic = \".fifo\"",
            "not a valid sqs topic",
        ),
        (
            "[[routes]]\nevents = [\"a\"]\nbroker = \"pubsub\"\ntopic = \"goog-x\"\n[brokers.pubsub]\nproject = \"p\"",
            "not a valid pubsub topic: a Pub/Sub topic id",
        ),
        (
            "[[routes]]\nevents = [\"a\"]\nbroker = \"pubsub\"\ntopic = \"payments\"",
            "brokers.pubsub.project is missing",
        ),
        (
            "[brokers.sqs]\naccess_key_id = \"AKIA\"",
            "brokers.sqs.secret_access_key is missing",
        ),
        (
            "[brokers.sqs]\nsecret_access_key = \"s3cr3t\"",
            "brokers.sqs.access_key_id is missing",
        ),
        (
            "[brokers.sqs]\nendpoint = \"127.0.0.1:4566\"",
            "brokers.sqs.endpoint: `127.0.0.1:4566` is not an http(s) URL",
        ),
        (
            "[brokers.sqs]\nregion = \" \"",
            "brokers.sqs.region is empty",
        ),
        (
            "[brokers.pubsub]\nemulator_host = \"http://127.0.0.1:8085\"",
            "brokers.pubsub.emulator_host: `http://127.0.0.1:8085` is not host:port",
        ),
        (
            "[brokers.pubsub]\nendpoint = \"https://pubsub.googleapis.com\"",
            "brokers.pubsub.endpoint: `https://pubsub.googleapis.com` is not a host name",
        ),
        (
            "[brokers.pubsub]\nendpoint = \"europe-west1-pubsub.googleapis.com:443\"",
            "brokers.pubsub.endpoint `europe-west1-pubsub.googleapis.com:443` has a port",
        ),
        (
            "[brokers.pubsub]\nendpoint = \"pubsub.googleapis.com\"\nemulator_host = \"127.0.0.1:8085\"",
            "brokers.pubsub: endpoint and emulator_host",
        ),
    ] {
        let err = Config::parse(text).unwrap_err().to_string();
        assert!(err.contains(needle), "{text}: {err}");
    }
}

#[test]
fn parses_sqs_and_pubsub_routes_and_their_tables() {
    use herald_dispatch::brokers::PubSubTarget;
    let c = Config::parse(
        r#"
[[routes]]
events = ["payment.*"]
broker = "sqs"
topic = "payments.fifo"
[[routes]]
events = ["payment.*"]
broker = "pubsub"
topic = "payments-events"
[brokers.sqs]
region = "eu-west-1"
endpoint = "http://127.0.0.1:4566/"
access_key_id = "AKIA"
secret_access_key = "s3cr3t"
[brokers.pubsub]
project = "my-project"
"#,
    )
    .unwrap();
    assert_eq!(
        c.brokers_in_use(),
        vec![BrokerKind::Sqs, BrokerKind::PubSub]
    );
    assert_eq!(c.routes[0].name, "sqs:payments.fifo");
    assert_eq!(c.brokers.url(BrokerKind::Sqs), "http://127.0.0.1:4566");
    let creds = c.brokers.sqs.credentials().unwrap();
    assert_eq!(creds.access_key_id, "AKIA");
    assert!(
        !format!("{c:?}").contains("s3cr3t"),
        "the secret is never printed"
    );
    assert_eq!(c.brokers.pubsub.target(), PubSubTarget::google());
    assert_eq!(
        c.brokers.url(BrokerKind::PubSub),
        "https://pubsub.googleapis.com"
    );
    // Without a region or endpoint: the chain's region; without keys: the chain's credentials.
    let d = Config::default();
    assert!(d.brokers.sqs.credentials().is_none());
    // PUBSUB_EMULATOR_HOST points Herald at the emulator when the file names none.
    let mut e = c.clone();
    e.apply_env(|name| (name == "PUBSUB_EMULATOR_HOST").then(|| "127.0.0.1:8085".to_owned()))
        .unwrap();
    assert_eq!(
        e.brokers.pubsub.target(),
        PubSubTarget::Emulator {
            host: "127.0.0.1:8085".into()
        }
    );
    let mut bad = c.clone();
    let err = bad
        .apply_env(|name| (name == "PUBSUB_EMULATOR_HOST").then(|| "localhost".to_owned()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "brokers.pubsub.emulator_host (PUBSUB_EMULATOR_HOST): `localhost` is not host:port"
        ),
        "{err}"
    );
}
