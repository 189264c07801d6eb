//! The system under test: the real `herald serve` binary, spoken to over HTTP, with the
//! receiver of `receiver.rs` behind every webhook. Each step is sent, its answer checked
//! against the reference model; at the end of a sequence every receiver is made healthy,
//! what the user disabled is enabled again, the operations are finished, and once nothing
//! is pending the whole delivery log and everything the receiver saw are checked.

use super::receiver::{Answer, Behaviour, Received, Receiver};
use super::reference::*;
use herald_client::WebhookVerifier;
use proptest_state_machine::StateMachineTest;
use reqwest::Method;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::Herald;

pub const ADMIN: &str = "model-test-admin";
/// The webhook timeout in [`CONFIG`].
const WEBHOOK_TIMEOUT: Duration = Duration::from_millis(300);
/// A send that was already under way when a webhook was disabled or deleted may still
/// arrive this long after the answer.
const IN_FLIGHT_GRACE: Duration = Duration::from_millis(1000);
/// How far a signature may lag a rotation: a delivery claimed just before it is signed
/// with the secrets of its claim.
const SECRET_TOLERANCE: Duration = Duration::from_millis(1000);
/// The config's `rotation_grace`.
const DEFAULT_GRACE: Duration = Duration::from_secs(3600);
/// How long an auto-disable (410) may take to show after the receiver answered.
const SETTLE_BOUND: Duration = Duration::from_secs(3);

pub const CONFIG: &str = r#"
[[operation_types]]
name = "transcode"
trigger = "POST /videos"
lease = "30s"
max_attempts = 2

[webhooks]
allow_private_destinations = true
timeout = "300ms"
schedule = ["0s", "150ms", "300ms"]
rotation_grace = "1h"

# A broker route whose broker is down: its deliveries wait in the outbox and are retried.
[[routes]]
events = ["audit.*"]
broker = "redis"
topic = "herald-model-audit"

[brokers]
timeout = "500ms"
max_backoff = "5s"

[brokers.redis]
url = "redis://127.0.0.1:1"
"#;

pub fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

pub fn receiver() -> &'static Receiver {
    static RECEIVER: OnceLock<Receiver> = OnceLock::new();
    RECEIVER.get_or_init(|| rt().block_on(Receiver::start()))
}

#[derive(Clone, Debug)]
pub enum Backend {
    Sqlite,
    Postgres { admin_url: String },
}

/// What the current database holds, for the run-wide list checks.
#[derive(Clone, Copy, Debug, Default)]
pub struct Totals {
    pub events: usize,
    pub deliveries: usize,
    pub webhooks: usize,
}

/// One backend's server and database, kept from sequence to sequence while they pass
/// (each sequence has its own tenant, and leaves no operation queued). After a failure
/// the next sequence (a shrinking step, say) gets a new database and server, so one
/// broken state cannot fail every sequence after it.
pub struct Lane {
    pub backend: Backend,
    herald: Option<Herald>,
    pub base: String,
    dir: tempfile::TempDir,
    database: String,
    pg_databases: Vec<String>,
    pub worker_key: String,
    case_open: bool,
    /// Set once a sequence failed: every further run of it (shrinking) gets its own
    /// database, so no run inherits another's state.
    pub shrinking: bool,
    pub totals: Totals,
}

thread_local! {
    pub static LANE: RefCell<Option<Lane>> = const { RefCell::new(None) };
}

fn with_lane<T>(f: impl FnOnce(&mut Lane) -> T) -> T {
    LANE.with(|l| f(l.borrow_mut().as_mut().expect("no lane on this thread")))
}

impl Lane {
    pub fn new(backend: Backend) -> Lane {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("herald.toml"), CONFIG).unwrap();
        let mut lane = Lane {
            backend,
            herald: None,
            base: String::new(),
            dir,
            database: String::new(),
            pg_databases: Vec::new(),
            worker_key: String::new(),
            case_open: false,
            shrinking: false,
            totals: Totals::default(),
        };
        lane.fresh();
        lane.ballast();
        lane
    }

    /// Events of a tenant no sequence uses, so that the run-wide list check (page size
    /// 1000, the largest) pages past a full page from the first check on.
    fn ballast(&mut self) {
        use futures::StreamExt;
        const BALLAST: usize = 1005;
        let http = reqwest::Client::new();
        let base = self.base.clone();
        let answers: Vec<u16> = rt().block_on(async {
            let r = http
                .post(format!("{base}/tenants"))
                .bearer_auth(ADMIN)
                .json(&json!({ "name": "ballast" }))
                .send()
                .await
                .unwrap();
            let tenant: Value = r.json().await.unwrap();
            let tenant = tenant["id"].as_str().unwrap().to_owned();
            futures::stream::iter(0..BALLAST)
                .map(|i| {
                    let request = http.post(format!("{base}/events")).bearer_auth(ADMIN).json(
                        &json!({ "type": "ballast.filled", "tenant": tenant, "data": { "i": i } }),
                    );
                    async move {
                        request
                            .send()
                            .await
                            .map(|r| r.status().as_u16())
                            .unwrap_or(0)
                    }
                })
                .buffer_unordered(16)
                .collect()
                .await
        });
        assert!(
            answers.iter().all(|s| *s == 202),
            "ballast events: {:?}",
            answers.iter().filter(|s| **s != 202).collect::<Vec<_>>()
        );
        self.totals.events += BALLAST;
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("herald.toml")
    }

    /// A new, empty database and a server on it.
    fn fresh(&mut self) {
        if let Some(h) = self.herald.take() {
            h.kill9();
        }
        self.database = match &self.backend {
            Backend::Sqlite => {
                let file = self
                    .dir
                    .path()
                    .join(format!("herald-{}.db", ulid::Ulid::new()));
                format!("sqlite://{}", file.display())
            }
            Backend::Postgres { admin_url } => {
                let name = format!(
                    "herald_model_{}",
                    ulid::Ulid::new().to_string().to_lowercase()
                );
                let url = rt()
                    .block_on(herald_store::postgres::create_database(admin_url, &name))
                    .unwrap();
                self.pg_databases.push(name);
                url
            }
        };
        self.start();
        let http = reqwest::Client::new();
        let r = rt()
            .block_on(
                http.post(format!("{}/keys", self.base))
                    .bearer_auth(ADMIN)
                    .json(&json!({ "role": "worker" }))
                    .send(),
            )
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "creating the worker key");
        let v: Value = rt().block_on(r.json()).unwrap();
        self.worker_key = v["key"].as_str().unwrap().to_owned();
        self.totals = Totals::default();
    }

    fn start(&mut self) {
        let herald = Herald::start_on(&[], &self.database, &self.config_path(), ADMIN, "error");
        self.base = herald.base.clone();
        self.herald = Some(herald);
    }

    /// `kill -9`, then a new process on the same database.
    /// Kills the node and starts another; gives its address and the instant the killed
    /// process was gone (every request it sent was received before then).
    fn restart(&mut self) -> (String, Instant) {
        if let Some(h) = self.herald.take() {
            h.kill9();
        }
        let dead = Instant::now();
        self.start();
        (self.base.clone(), dead)
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        if let Some(h) = self.herald.take() {
            h.kill9();
        }
        if let Backend::Postgres { admin_url } = &self.backend {
            for name in self.pg_databases.drain(..) {
                let _ = rt().block_on(herald_store::postgres::drop_database(admin_url, &name));
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Admin,
    Tenant,
    Worker,
}

struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
    text: String,
}

impl Resp {
    fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or_default()
    }
}

/// One secret of a webhook and when it may sign.
#[derive(Clone, Debug)]
struct Secret {
    version: u32,
    value: String,
    /// The request that made it was sent then (it cannot sign anything earlier)...
    sent: Instant,
    /// ...and answered then (everything sent well after must carry it).
    answered: Instant,
    /// It stops signing then (a rotation's grace ended, or a later rotation dropped it).
    until: Option<Instant>,
}

struct HookRun {
    id: String,
    key: String,
    format: Format,
    secrets: Vec<Secret>,
    user_disabled: bool,
    /// Auto-disabled by a 410, as last seen.
    gone: bool,
    /// 410 answers up to here are accounted for.
    gone_checked_until: Option<Instant>,
    last_enable_answered: Instant,
    /// While one of these lasts (from + grace, until), the webhook must receive nothing.
    quiet: Vec<(Instant, Option<Instant>, &'static str)>,
    deleted_at: Option<Instant>,
}

impl HookRun {
    fn quiet_open(&self) -> bool {
        self.quiet.last().is_some_and(|q| q.1.is_none())
    }
    fn open_quiet(&mut self, at: Instant, why: &'static str) {
        if !self.quiet_open() {
            self.quiet.push((at, None, why));
        }
    }
    fn close_quiet(&mut self, at: Instant) {
        if let Some(q) = self.quiet.last_mut().filter(|q| q.1.is_none()) {
            q.1 = Some(at);
        }
    }
}

struct EventRun {
    /// Op events learn theirs at the end, from `GET /events`.
    id: Option<String>,
    body: Value,
    data: Value,
    /// Webhooks (indexes into `Sut::hooks`) that must get it.
    sure: Vec<usize>,
    /// Webhooks that may or may not (a 410 was being recorded when it was stored).
    maybe: Vec<usize>,
}

struct OpRun {
    id: String,
    tokens: Vec<String>,
}

pub struct Sut {
    http: reqwest::Client,
    base: String,
    pg: bool,
    model: Model,
    tenant: String,
    tenant_key: String,
    worker_key: String,
    hooks: Vec<HookRun>,
    slots: Vec<Option<usize>>,
    events: Vec<EventRun>,
    ops: Vec<OpRun>,
    kills: Vec<Instant>,
    redelivered: Vec<(String, Instant)>,
    replayed: Vec<(usize, Instant)>,
    trail: Vec<String>,
    started: Instant,
}

macro_rules! fail {
    ($sut:expr, $($arg:tt)*) => {
        $sut.fail(format!($($arg)*))
    };
}

mod calls;
mod checks;
mod delivery_steps;
mod finish;
mod read_back;
mod steps;

pub fn op_response(input: u8) -> Value {
    json!({ "ok": true, "input": input })
}

pub struct HeraldTest;

impl StateMachineTest for HeraldTest {
    type SystemUnderTest = Sut;
    type Reference = HeraldModel;

    fn init_test(model: &Model) -> Sut {
        let (base, worker_key, pg) = with_lane(|l| {
            if l.case_open {
                // The previous run failed: this one is shrinking it.
                l.shrinking = true;
            }
            if l.shrinking {
                l.fresh();
            }
            l.case_open = true;
            (
                l.base.clone(),
                l.worker_key.clone(),
                matches!(l.backend, Backend::Postgres { .. }),
            )
        });
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap();
        let mut sut = Sut {
            http,
            base,
            pg,
            model: model.clone(),
            tenant: String::new(),
            tenant_key: String::new(),
            worker_key,
            hooks: Vec::new(),
            slots: vec![None; HOOK_SLOTS],
            events: Vec::new(),
            ops: Vec::new(),
            kills: Vec::new(),
            redelivered: Vec::new(),
            replayed: Vec::new(),
            trail: Vec::new(),
            started: Instant::now(),
        };
        let r = sut.post("/tenants", Who::Admin, &json!({ "name": "model" }));
        sut.expect("POST /tenants", &r, 201);
        sut.tenant = r.body["id"].as_str().unwrap().to_owned();
        let r = sut.post(
            &format!("/tenants/{}/keys", sut.tenant),
            Who::Admin,
            &json!({ "role": "tenant" }),
        );
        sut.expect("POST /tenants/{id}/keys", &r, 201);
        sut.tenant_key = r.body["key"].as_str().unwrap().to_owned();
        sut.note(format!("tenant {} on {}", sut.tenant, sut.base));
        sut
    }

    fn apply(mut sut: Sut, model: &Model, step: Step) -> Sut {
        let prev = std::mem::replace(&mut sut.model, model.clone());
        sut.note(format!("{step:?}"));
        sut.apply_step(&prev, &step);
        sut
    }

    fn teardown(mut sut: Sut, _model: Model) {
        sut.finish();
    }
}
