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

impl Sut {
    fn fail(&self, message: String) -> ! {
        let trail = self.trail.join("\n  ");
        panic!("{message}\nsteps so far (times since the start of the sequence):\n  {trail}")
    }

    fn t(&self, at: Instant) -> String {
        format!(
            "+{}ms",
            at.saturating_duration_since(self.started).as_millis()
        )
    }

    fn note(&mut self, text: String) {
        let line = format!("{} {text}", self.t(Instant::now()));
        self.trail.push(line);
    }

    fn key(&self, who: Who) -> &str {
        match who {
            Who::Admin => ADMIN,
            Who::Tenant => &self.tenant_key,
            Who::Worker => &self.worker_key,
        }
    }

    /// One request. A 5xx fails the sequence, except a 503 with `Retry-After` (a
    /// deliberate overload answer), which is retried after the wait it asks for.
    fn call(
        &self,
        method: Method,
        path: &str,
        who: Who,
        body: Option<&Value>,
        headers: &[(&str, String)],
    ) -> Resp {
        for attempt in 0.. {
            let mut request = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .bearer_auth(self.key(who));
            for (k, v) in headers {
                request = request.header(*k, v);
            }
            if let Some(b) = body {
                request = request.json(b);
            }
            let (status, headers, text) = match rt().block_on(async {
                let r = request.send().await?;
                let status = r.status().as_u16();
                let headers = r.headers().clone();
                Ok::<_, reqwest::Error>((status, headers, r.text().await?))
            }) {
                Ok(r) => r,
                Err(e) => fail!(self, "{method} {path}: the request failed: {e}"),
            };
            if status >= 500 {
                let retry_after = headers
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                match retry_after {
                    Some(secs) if status == 503 && attempt < 5 => {
                        std::thread::sleep(
                            Duration::from_secs(secs.min(2)).max(Duration::from_millis(100)),
                        );
                        continue;
                    }
                    _ => fail!(self, "{method} {path} answered {status}: {text}"),
                }
            }
            let body = serde_json::from_str(&text).unwrap_or(Value::Null);
            return Resp {
                status,
                headers,
                body,
                text,
            };
        }
        unreachable!()
    }

    fn get(&self, path: &str, who: Who) -> Resp {
        self.call(Method::GET, path, who, None, &[])
    }

    fn post(&self, path: &str, who: Who, body: &Value) -> Resp {
        self.call(Method::POST, path, who, Some(body), &[])
    }

    fn expect(&self, what: &str, r: &Resp, status: u16) {
        if r.status != status {
            fail!(
                self,
                "{what}: expected {status}, got {}: {}",
                r.status,
                r.text
            );
        }
    }

    fn expect_one_of(&self, what: &str, r: &Resp, statuses: &[u16]) {
        if !statuses.contains(&r.status) {
            fail!(
                self,
                "{what}: expected one of {statuses:?}, got {}: {}",
                r.status,
                r.text
            );
        }
    }

    /// Every item of a paged list, following `next_page_token`.
    fn list_all(&self, path: &str, field: &str, who: Who) -> Vec<Value> {
        let mut out = Vec::new();
        let mut token = String::new();
        let sep = if path.contains('?') { '&' } else { '?' };
        for _ in 0..10_000 {
            let url = if token.is_empty() {
                path.to_owned()
            } else {
                format!("{path}{sep}page_token={token}")
            };
            let r = self.get(&url, who);
            self.expect(&format!("GET {url}"), &r, 200);
            let items = r.body[field].as_array().cloned().unwrap_or_default();
            out.extend(items);
            token = r.body["next_page_token"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if token.is_empty() {
                return out;
            }
        }
        fail!(self, "GET {path}: the pages never end")
    }

    fn hook_of(&self, slot: usize) -> usize {
        self.slots[slot].expect("the model has a webhook in this slot")
    }

    /// 410 answers this webhook's receiver gave that are not accounted for yet.
    fn unaccounted_gones(&self, h: usize) -> Vec<Instant> {
        let hook = &self.hooks[h];
        receiver()
            .received(std::slice::from_ref(&hook.key))
            .iter()
            .filter(|r| r.answer == Answer::Gone)
            .filter_map(|r| r.answered_at)
            .filter(|t| hook.gone_checked_until.is_none_or(|c| *t > c))
            .collect()
    }

    /// Waits until every 410 the receiver gave this webhook shows in Herald: after one
    /// answered once the last enable had been answered, the webhook must become disabled
    /// (a later PATCH or rotation must not undo it). One answered while an enable was on
    /// its way, or just before a kill, may go either way: Herald's view is taken.
    fn settle(&mut self, h: usize) {
        if self.hooks[h].deleted_at.is_some() {
            return;
        }
        let gones = self.unaccounted_gones(h);
        let Some(newest) = gones.iter().max().copied() else {
            return;
        };
        // A 410 answered just before a kill may never have been recorded: the kill lost
        // the attempt's result, and the delivery is sent again.
        let definite: Vec<Instant> = gones
            .iter()
            .copied()
            .filter(|t| *t > self.hooks[h].last_enable_answered)
            .filter(|t| {
                !self
                    .kills
                    .iter()
                    .any(|k| *k >= *t && *k <= *t + IN_FLIGHT_GRACE)
            })
            .collect();
        let id = self.hooks[h].id.clone();
        let started = Instant::now();
        let disabled = loop {
            let r = self.get(&format!("/webhooks/{id}"), Who::Admin);
            self.expect(&format!("GET /webhooks/{id}"), &r, 200);
            let disabled = r.body["disabled"] == json!(true);
            if !definite.is_empty() {
                if disabled {
                    break true;
                }
                if started.elapsed() > SETTLE_BOUND {
                    let first = *definite.iter().min().unwrap();
                    fail!(
                        self,
                        "webhook {id} answered 410 Gone at {} but {:?} later Herald still shows it enabled: the auto-disable was lost ({})",
                        self.t(first),
                        started.elapsed(),
                        r.text
                    );
                }
            } else if Instant::now() >= newest + Duration::from_millis(500) {
                break disabled;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let hook = &mut self.hooks[h];
        hook.gone_checked_until = Some(newest);
        if disabled && !hook.user_disabled {
            hook.gone = true;
            let from = definite.iter().min().copied().unwrap_or(newest);
            hook.open_quiet(from, "auto-disabled by a 410");
        }
    }

    fn settle_all(&mut self) {
        for h in 0..self.hooks.len() {
            self.settle(h);
        }
    }

    /// Gives the model's new events (published, or raised by an operation's end) their
    /// webhooks, from the model's fan-out and what Herald auto-disabled.
    fn sync_events(&mut self) {
        let now = Instant::now();
        while self.events.len() < self.model.events.len() {
            let e = &self.model.events[self.events.len()];
            let mut sure = Vec::new();
            let mut maybe = Vec::new();
            for slot in &e.fanout {
                let h = self.hook_of(*slot);
                if self.hooks[h].gone {
                    continue;
                }
                if self.unaccounted_gones(h).iter().any(|t| *t <= now) {
                    maybe.push(h);
                } else {
                    sure.push(h);
                }
            }
            let data = match e.op {
                None => json!({ "n": self.events.len() }),
                Some(_) => Value::Null,
            };
            self.events.push(EventRun {
                id: None,
                body: Value::Null,
                data,
                sure,
                maybe,
            });
        }
    }

    fn op_resource_ok(&self, what: &str, v: &Value, op: usize) {
        let o = &self.model.ops[op];
        let id = &self.ops[op].id;
        let bad =
            |why: &str| -> ! { fail!(self, "{what}: {why}; expected {:?}, got {v}", o.state) };
        if v["name"] != json!(format!("operations/{id}")) {
            bad("wrong name");
        }
        if v["metadata"]["type"] != json!("transcode") {
            bad("metadata.type is not the operation's type");
        }
        if v["done"] != json!(o.state.is_done()) {
            bad("wrong `done`");
        }
        match &o.state {
            OpState::Succeeded => {
                if v["response"] != op_response(o.input) || !v["error"].is_null() {
                    bad("not the response the worker completed it with");
                }
            }
            OpState::Failed(code) => {
                if v["error"]["code"] != json!(code) || !v["response"].is_null() {
                    bad("wrong error");
                }
            }
            _ => {
                if !v["response"].is_null() || !v["error"].is_null() {
                    bad("response or error while not done");
                }
            }
        }
    }

    fn token(&self, op: usize, token: Token) -> String {
        let tokens = &self.ops[op].tokens;
        match token {
            Token::Latest => tokens.last().unwrap().clone(),
            Token::Older(i) => tokens[i].clone(),
        }
    }

    /// The answer a worker call with `token` must get, `Valid` meaning 200.
    fn expect_lease(&self, what: &str, r: &Resp, prev: &Model, op: usize, token: Token) -> bool {
        let o = &prev.ops[op];
        match prev.lease_check(op, token) {
            LeaseCheck::Valid => {
                // A deleted operation's work is not cancelled: its worker carries on.
                self.expect(what, r, 200);
                true
            }
            LeaseCheck::Stale => {
                self.expect(what, r, 409);
                if r.code() != "LEASE_STALE" {
                    fail!(
                        self,
                        "{what}: a stale lease token must get LEASE_STALE: {}",
                        r.text
                    );
                }
                false
            }
            LeaseCheck::Done => {
                if o.deleted {
                    // Deleted and done: it may already be purged.
                    self.expect_one_of(what, r, &[404, 409]);
                } else {
                    self.expect(what, r, 409);
                }
                false
            }
        }
    }

    fn apply_step(&mut self, prev: &Model, step: &Step) {
        match step {
            Step::CreateHook {
                slot,
                patterns,
                schedule,
                format,
            } => {
                let key = ulid::Ulid::new().to_string().to_lowercase();
                receiver().set(&key, Behaviour::Healthy);
                let mut body = json!({
                    "url": receiver().url(&key),
                    "events": PATTERNS[*patterns],
                    "tenant": self.tenant,
                    "max_concurrency": 1,
                    "description": "model test",
                });
                if *format == Format::Standard {
                    body["format"] = json!("standard-webhooks");
                }
                if let Some(s) = SCHEDULES[*schedule] {
                    body["schedule"] = json!(s);
                }
                let sent = Instant::now();
                let r = self.post("/webhooks", Who::Admin, &body);
                let answered = Instant::now();
                self.expect("POST /webhooks", &r, 201);
                let secret = r.body["signing_secret"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let prefix = if *format == Format::Standard {
                    "whsec_"
                } else {
                    "hsec_"
                };
                if !secret.starts_with(prefix)
                    || r.body["signing_secret_version"] != json!(1)
                    || r.body["disabled"] != json!(false)
                    || r.body["events"] != json!(PATTERNS[*patterns])
                {
                    fail!(self, "POST /webhooks answered {}", r.text);
                }
                let id = r.body["id"].as_str().unwrap().to_owned();
                self.note(format!("webhook {id} in slot {slot}"));
                self.hooks.push(HookRun {
                    id,
                    key,
                    format: *format,
                    secrets: vec![Secret {
                        version: 1,
                        value: secret,
                        sent,
                        answered,
                        until: None,
                    }],
                    user_disabled: false,
                    gone: false,
                    gone_checked_until: None,
                    last_enable_answered: answered,
                    quiet: Vec::new(),
                    deleted_at: None,
                });
                self.slots[*slot] = Some(self.hooks.len() - 1);
            }
            Step::PatchHook { slot, change } => {
                let h = self.hook_of(*slot);
                let id = self.hooks[h].id.clone();
                let body = match change {
                    PatchChange::Events(p) => json!({ "events": PATTERNS[*p] }),
                    PatchChange::Schedule(s) => json!({ "schedule": SCHEDULES[*s] }),
                    PatchChange::Description => json!({ "description": "patched" }),
                };
                let r = self.call(
                    Method::PATCH,
                    &format!("/webhooks/{id}"),
                    Who::Admin,
                    Some(&body),
                    &[],
                );
                let what = format!("PATCH /webhooks/{id}");
                if prev.hook(*slot).unwrap().deleted {
                    self.expect(&what, &r, 404);
                    return;
                }
                self.expect(&what, &r, 200);
                let hook = self.model.hook(*slot).unwrap();
                if r.body["events"] != json!(PATTERNS[hook.patterns]) {
                    fail!(self, "{what} answered {}", r.text);
                }
                if self.unaccounted_gones(h).is_empty() {
                    let disabled = self.hooks[h].user_disabled || self.hooks[h].gone;
                    if r.body["disabled"] != json!(disabled) {
                        fail!(self, "{what}: `disabled` should be {disabled}: {}", r.text);
                    }
                }
            }
            Step::PatchBurst { slot } => {
                let h = self.hook_of(*slot);
                let path = format!("/webhooks/{}", self.hooks[h].id);
                let deleted = prev.hook(*slot).unwrap().deleted;
                for i in 0..6 {
                    let body = json!({ "description": format!("edit {i}") });
                    let r = self.call(Method::PATCH, &path, Who::Admin, Some(&body), &[]);
                    self.expect(
                        &format!("PATCH {path}"),
                        &r,
                        if deleted { 404 } else { 200 },
                    );
                }
            }
            Step::DisableHook { slot } | Step::EnableHook { slot } => {
                let h = self.hook_of(*slot);
                self.settle(h);
                let disable = matches!(step, Step::DisableHook { .. });
                let id = self.hooks[h].id.clone();
                let path = format!(
                    "/webhooks/{id}:{}",
                    if disable { "disable" } else { "enable" }
                );
                let sent = Instant::now();
                let r = self.post(&path, Who::Admin, &json!({}));
                let answered = Instant::now();
                if prev.hook(*slot).unwrap().deleted {
                    self.expect(&path, &r, 404);
                    return;
                }
                self.expect(&path, &r, 200);
                if r.body["disabled"] != json!(disable) {
                    fail!(self, "{path} answered {}", r.text);
                }
                let hook = &mut self.hooks[h];
                hook.user_disabled = disable;
                if disable {
                    hook.open_quiet(answered, "disabled through the API");
                } else {
                    hook.gone = false;
                    hook.last_enable_answered = answered;
                    hook.close_quiet(sent);
                }
            }
            Step::DeleteHook { slot } => {
                let h = self.hook_of(*slot);
                let id = self.hooks[h].id.clone();
                let r = self.call(
                    Method::DELETE,
                    &format!("/webhooks/{id}"),
                    Who::Admin,
                    None,
                    &[],
                );
                let answered = Instant::now();
                let what = format!("DELETE /webhooks/{id}");
                if prev.hook(*slot).unwrap().deleted {
                    self.expect(&what, &r, 404);
                    return;
                }
                self.expect(&what, &r, 204);
                let hook = &mut self.hooks[h];
                hook.deleted_at = Some(answered);
                hook.close_quiet(answered);
                hook.quiet.push((answered, None, "deleted"));
                let r = self.get(&format!("/webhooks/{id}"), Who::Admin);
                self.expect(&format!("GET /webhooks/{id} after its delete"), &r, 404);
            }
            Step::RotateSecret { slot, grace } => {
                let h = self.hook_of(*slot);
                let id = self.hooks[h].id.clone();
                let (body, grace) = match grace {
                    Grace::Zero => (json!({ "grace": "0s" }), Duration::ZERO),
                    Grace::OneSecond => (json!({ "grace": "1s" }), Duration::from_secs(1)),
                    Grace::Default => (json!({}), DEFAULT_GRACE),
                };
                let path = format!("/webhooks/{id}:rotateSecret");
                let sent = Instant::now();
                let r = self.post(&path, Who::Admin, &body);
                let answered = Instant::now();
                if prev.hook(*slot).unwrap().deleted {
                    self.expect(&path, &r, 404);
                    return;
                }
                self.expect(&path, &r, 200);
                let version = self.model.hook(*slot).unwrap().secret_version;
                self.rotated(h, &path, &r.body, version, sent, answered, grace);
            }
            Step::RotateTwice { slot } => {
                let h = self.hook_of(*slot);
                let id = self.hooks[h].id.clone();
                let path = format!("/webhooks/{id}:rotateSecret");
                let url = format!("{}{path}", self.base);
                let sent = Instant::now();
                let one = || {
                    let request = self
                        .http
                        .post(url.clone())
                        .bearer_auth(ADMIN)
                        .json(&json!({}));
                    async move {
                        let r = request.send().await?;
                        let status = r.status().as_u16();
                        Ok::<_, reqwest::Error>((status, r.text().await?))
                    }
                };
                let (a, b) = rt().block_on(async { futures::join!(one(), one()) });
                let answered = Instant::now();
                let (a, b) = match (a, b) {
                    (Ok(a), Ok(b)) => (a, b),
                    (Err(e), _) | (_, Err(e)) => fail!(self, "{path}: a request failed: {e}"),
                };
                if prev.hook(*slot).unwrap().deleted {
                    if a.0 != 404 || b.0 != 404 {
                        fail!(self, "{path} on a deleted webhook: {a:?} {b:?}");
                    }
                    return;
                }
                if a.0 != 200 || b.0 != 200 {
                    fail!(
                        self,
                        "two {path} at once: expected 200 twice, got {a:?} and {b:?}"
                    );
                }
                let mut answers: Vec<Value> = [a.1, b.1]
                    .iter()
                    .map(|t| serde_json::from_str(t).unwrap_or(Value::Null))
                    .collect();
                answers.sort_by_key(|v| v["signing_secret_version"].as_u64());
                let version = self.model.hook(*slot).unwrap().secret_version;
                let versions: Vec<Value> = answers
                    .iter()
                    .map(|v| v["signing_secret_version"].clone())
                    .collect();
                if versions != vec![json!(version - 1), json!(version)]
                    || answers[0]["signing_secret"] == answers[1]["signing_secret"]
                {
                    fail!(
                        self,
                        "two {path} at once must make two versions ({} and {version}) with two secrets; they answered {} and {} (a lost update)",
                        version - 1,
                        answers[0],
                        answers[1]
                    );
                }
                for (i, v) in answers.iter().enumerate() {
                    self.rotated(
                        h,
                        &path,
                        v,
                        version - 1 + i as u32,
                        sent,
                        answered,
                        DEFAULT_GRACE,
                    );
                }
                let r = self.get(&format!("/webhooks/{id}"), Who::Admin);
                if r.body["signing_secret_version"] != json!(version) {
                    fail!(
                        self,
                        "after two rotations GET /webhooks/{id} shows {}",
                        r.text
                    );
                }
            }
            Step::SetBehaviour { slot, behaviour } => {
                let h = self.hook_of(*slot);
                receiver().set(&self.hooks[h].key, *behaviour);
            }
            Step::Publish { event_type, key } => {
                self.settle_all();
                let index = self.events.len();
                assert_eq!(
                    index + 1,
                    self.model.events.len(),
                    "events out of step with the model"
                );
                let e = &self.model.events[index];
                let id = herald_core::ids::EventId::generate().to_string();
                let mut body = json!({
                    "id": id,
                    "type": EVENT_TYPES[*event_type],
                    "tenant": self.tenant,
                    "data": { "n": index },
                });
                if let Some(k) = key {
                    body["key"] = json!(KEYS[*k]);
                }
                let r = self.post("/events", Who::Admin, &body);
                self.expect("POST /events", &r, 202);
                let want_sequence = e.sequence.map(|s| json!(s)).unwrap_or(Value::Null);
                if r.body["id"] != json!(id) || r.body["sequence"] != want_sequence {
                    fail!(
                        self,
                        "POST /events answered {} (expected sequence {want_sequence})",
                        r.text
                    );
                }
                self.sync_events();
                let run = &mut self.events[index];
                run.id = Some(id.clone());
                run.body = body;
                let (sure, maybe) = (run.sure.len(), run.maybe.len());
                self.note(format!("event {id} to {sure} webhooks (+{maybe} maybe)"));
            }
            Step::Republish { event, same } => {
                let original = &self.events[*event];
                let mut body = original.body.clone();
                if !same {
                    body["data"]["changed"] = json!(true);
                }
                let r = self.post("/events", Who::Admin, &body);
                if *same {
                    self.expect("POST /events again with the same id and body", &r, 202);
                    let e = &self.model.events[*event];
                    let want_sequence = e.sequence.map(|s| json!(s)).unwrap_or(Value::Null);
                    if r.body["id"] != body["id"] || r.body["sequence"] != want_sequence {
                        fail!(
                            self,
                            "a retried POST /events must answer the first result: {}",
                            r.text
                        );
                    }
                } else {
                    self.expect("POST /events with a used id and another body", &r, 422);
                    if r.code() != "IDEMPOTENCY_KEY_REUSED" {
                        fail!(self, "expected IDEMPOTENCY_KEY_REUSED: {}", r.text);
                    }
                }
            }
            Step::Redeliver { slot, pick } => {
                let h = self.hook_of(*slot);
                let id = self.hooks[h].id.clone();
                let list = self.get(
                    &format!("/deliveries?webhook={id}&page_size=100"),
                    Who::Admin,
                );
                self.expect("GET /deliveries", &list, 200);
                let deliveries = list.body["deliveries"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                if deliveries.is_empty() {
                    self.note("nothing to redeliver yet".into());
                    return;
                }
                let d = deliveries[pick % deliveries.len()]["id"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                let path = format!("/deliveries/{d}:redeliver");
                let sent = Instant::now();
                let r = self.post(&path, Who::Tenant, &json!({}));
                self.redelivered.push((d.clone(), sent));
                self.note(format!("redeliver {d}"));
                if prev.hook(*slot).unwrap().deleted {
                    // Nothing can be sent to a deleted webhook; whether the log says so with a
                    // 404 or takes the request, nothing may arrive (checked at the end).
                    self.expect_one_of(&path, &r, &[202, 404]);
                    return;
                }
                self.expect(&path, &r, 202);
                if r.body["status"] != json!("pending") || r.body["webhook_id"] != json!(id) {
                    fail!(self, "{path} answered {}", r.text);
                }
            }
            Step::Replay { slot, status } => {
                let h = self.hook_of(*slot);
                let id = self.hooks[h].id.clone();
                let body = match status {
                    ReplayStatus::All => json!({}),
                    ReplayStatus::Failed => json!({ "status": "failed" }),
                    ReplayStatus::Succeeded => json!({ "status": "succeeded" }),
                };
                let path = format!("/webhooks/{id}:replay");
                let sent = Instant::now();
                let r = self.post(&path, Who::Tenant, &body);
                self.replayed.push((h, sent));
                if prev.hook(*slot).unwrap().deleted {
                    self.expect(&path, &r, 404);
                    return;
                }
                self.expect(&path, &r, 202);
                let owed = self
                    .events
                    .iter()
                    .filter(|e| e.sure.contains(&h) || e.maybe.contains(&h))
                    .count() as u64;
                match r.body["replayed"].as_u64() {
                    Some(n) if n <= owed => self.note(format!("replayed {n}")),
                    _ => fail!(self, "{path}: `replayed` must count this webhook's deliveries (at most {owed}): {}", r.text),
                }
            }
            Step::CreateOp {
                trigger,
                idempotency_key,
                input,
            } => {
                let (path, who, body) = if *trigger {
                    ("/videos", Who::Tenant, json!({ "n": input }))
                } else {
                    (
                        "/operations",
                        Who::Admin,
                        json!({ "type": "transcode", "tenant": self.tenant, "input": { "n": input } }),
                    )
                };
                let headers: Vec<(&str, String)> = idempotency_key
                    .iter()
                    .map(|k| ("Idempotency-Key", format!("{}-{k}", self.tenant)))
                    .collect();
                let r = self.call(Method::POST, path, who, Some(&body), &headers);
                let what = format!("POST {path}");
                let earlier =
                    idempotency_key.and_then(|k| prev.idempotency.get(&(*trigger, k)).copied());
                if let Some((earlier_input, _)) = earlier.filter(|(i, _)| i != input) {
                    self.expect(&format!("{what} with a used Idempotency-Key (input {earlier_input} then {input})"), &r, 422);
                    if r.code() != "IDEMPOTENCY_KEY_REUSED" {
                        fail!(self, "expected IDEMPOTENCY_KEY_REUSED: {}", r.text);
                    }
                    return;
                }
                self.expect(&what, &r, 202);
                let name = r.body["name"].as_str().unwrap_or_default().to_owned();
                let id = name.trim_start_matches("operations/").to_owned();
                let location = r
                    .headers
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                let done = earlier.is_some_and(|(_, op)| self.model.ops[op].state.is_done());
                if location != format!("/operations/{id}")
                    || r.headers.get("retry-after").is_none() != done
                {
                    fail!(
                        self,
                        "{what}: `Location`, and `Retry-After` while not done, are required: {:?}",
                        r.headers
                    );
                }
                match earlier {
                    Some((_, op)) => {
                        if id != self.ops[op].id {
                            fail!(self, "{what} with the same Idempotency-Key and body made another operation: {id}, first {}", self.ops[op].id);
                        }
                        self.op_resource_ok(&what, &r.body, op);
                    }
                    None => {
                        self.ops.push(OpRun {
                            id: id.clone(),
                            tokens: Vec::new(),
                        });
                        self.op_resource_ok(&what, &r.body, self.ops.len() - 1);
                        self.note(format!("operation {id}"));
                        // Claims go oldest first by creation time (milliseconds): keep them apart.
                        std::thread::sleep(Duration::from_millis(3));
                    }
                }
            }
            Step::CancelOp { op } => {
                self.settle_all();
                let id = self.ops[*op].id.clone();
                let path = format!("/operations/{id}:cancel");
                let r = self.post(&path, Who::Tenant, &json!({}));
                if prev.ops[*op].deleted {
                    self.expect(&path, &r, 404);
                    return;
                }
                self.expect(&path, &r, 200);
                self.op_resource_ok(&path, &r.body, *op);
                self.sync_events();
            }
            Step::DeleteOp { op } => {
                let id = self.ops[*op].id.clone();
                let path = format!("/operations/{id}");
                let r = self.call(Method::DELETE, &path, Who::Tenant, None, &[]);
                let what = format!("DELETE {path}");
                if prev.ops[*op].deleted {
                    self.expect(&what, &r, 404);
                    return;
                }
                self.expect(&what, &r, 204);
                let r = self.get(&path, Who::Tenant);
                self.expect(&format!("GET {path} after its delete"), &r, 404);
            }
            Step::Claim { max } | Step::ClaimAndLoseLease { max } => {
                let lose = matches!(step, Step::ClaimAndLoseLease { .. });
                if lose {
                    self.settle_all();
                }
                let lease = if lose { "1s" } else { "30s" };
                let body = json!({ "types": ["transcode"], "lease": lease, "max": max });
                let r = self.post("/operations:claim", Who::Worker, &body);
                let answered = Instant::now();
                self.expect("POST /operations:claim", &r, 200);
                let claimed = r.body["operations"].as_array().cloned().unwrap_or_default();
                let expected = prev.claimable(*max);
                let names: Vec<String> = claimed
                    .iter()
                    .map(|o| o["name"].as_str().unwrap_or_default().to_owned())
                    .collect();
                let want: Vec<String> = expected
                    .iter()
                    .map(|i| format!("operations/{}", self.ops[*i].id))
                    .collect();
                if names != want {
                    fail!(self, "POST /operations:claim (max {max}) must take the oldest queued operations {want:?}; it took {names:?}");
                }
                let mut tokens = BTreeSet::new();
                for (o, i) in claimed.iter().zip(&expected) {
                    let token = o["lease_token"].as_str().unwrap_or_default().to_owned();
                    let attempt = prev.ops[*i].attempt + 1;
                    if token.is_empty()
                        || !tokens.insert(token.clone())
                        || self.ops[*i].tokens.contains(&token)
                        || o["attempt"] != json!(attempt)
                        || o["input"] != json!({ "n": prev.ops[*i].input })
                    {
                        fail!(
                            self,
                            "claim: expected attempt {attempt} with a new lease token: {o}"
                        );
                    }
                    self.ops[*i].tokens.push(token);
                }
                self.note(format!("claimed {} with a {lease} lease", expected.len()));
                if lose && !expected.is_empty() {
                    // The worker dies: wait for the leases to run out and the reaper to act.
                    let deadline = answered + Duration::from_millis(1600);
                    std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
                    for i in expected {
                        let o = &self.model.ops[i];
                        if o.deleted || !o.state.is_done() {
                            continue;
                        }
                        let path = format!("/operations/{}", self.ops[i].id);
                        let started = Instant::now();
                        loop {
                            let r = self.get(&path, Who::Tenant);
                            self.expect(&path, &r, 200);
                            if r.body["done"] == json!(true)
                                || started.elapsed() > Duration::from_secs(3)
                            {
                                self.op_resource_ok(
                                    &format!("GET {path} after its last lease expired"),
                                    &r.body,
                                    i,
                                );
                                break;
                            }
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                }
                self.sync_events();
            }
            Step::Heartbeat { op, token } => {
                let path = format!("/operations/{}:heartbeat", self.ops[*op].id);
                let body = json!({ "lease_token": self.token(*op, *token), "metadata": { "progress_percent": 50 } });
                let r = self.post(&path, Who::Worker, &body);
                if self.expect_lease(&path, &r, prev, *op, *token) {
                    let cancel = prev.ops[*op].cancel_requested;
                    if r.body["cancel_requested"] != json!(cancel)
                        || !r.body["lease_expires_at"].is_string()
                    {
                        fail!(
                            self,
                            "{path}: expected cancel_requested {cancel}: {}",
                            r.text
                        );
                    }
                }
            }
            Step::Complete { op, token } => {
                self.settle_all();
                let path = format!("/operations/{}:complete", self.ops[*op].id);
                let body = json!({ "lease_token": self.token(*op, *token), "response": op_response(prev.ops[*op].input) });
                let r = self.post(&path, Who::Worker, &body);
                if self.expect_lease(&path, &r, prev, *op, *token) {
                    self.op_resource_ok(&path, &r.body, *op);
                }
                self.sync_events();
            }
            Step::Fail {
                op,
                token,
                retryable,
            } => {
                self.settle_all();
                let path = format!("/operations/{}:fail", self.ops[*op].id);
                let body = json!({
                    "lease_token": self.token(*op, *token),
                    "error": { "code": FAIL_CODE, "message": "the model test failed it" },
                    "retryable": retryable,
                });
                let r = self.post(&path, Who::Worker, &body);
                if self.expect_lease(&path, &r, prev, *op, *token) {
                    self.op_resource_ok(&path, &r.body, *op);
                }
                self.sync_events();
            }
            Step::ReadBack => self.read_back(),
            Step::Pause { ms } => std::thread::sleep(Duration::from_millis(*ms)),
            Step::Kill => {
                let (base, dead) = with_lane(|l| l.restart());
                self.base = base;
                self.kills.push(dead);
            }
        }
    }

    /// Stores a rotation's answer: the new secret, and when the ones before stop signing.
    #[allow(clippy::too_many_arguments)]
    fn rotated(
        &mut self,
        h: usize,
        what: &str,
        v: &Value,
        version: u32,
        sent: Instant,
        answered: Instant,
        grace: Duration,
    ) {
        let secret = v["signing_secret"].as_str().unwrap_or_default().to_owned();
        let hook = &self.hooks[h];
        let expires = &v["previous_secret_expires_at"];
        if v["signing_secret_version"] != json!(version)
            || secret.is_empty()
            || hook.secrets.iter().any(|s| s.value == secret)
            || (grace.is_zero() != expires.is_null())
        {
            fail!(
                self,
                "{what}: expected a new secret, version {version}: {v}"
            );
        }
        let hook = &mut self.hooks[h];
        for s in hook.secrets.iter_mut() {
            let end = if s.version + 1 == version {
                answered + grace
            } else {
                answered
            };
            s.until = Some(s.until.map_or(end, |u| u.min(end)));
        }
        hook.secrets.push(Secret {
            version,
            value: secret,
            sent,
            answered,
            until: None,
        });
    }

    fn read_back(&mut self) {
        let r = self.get("/stats", Who::Admin);
        self.expect("GET /stats", &r, 200);
        let r = self.get("/stats", Who::Tenant);
        self.expect("GET /stats (tenant)", &r, 200);
        let r = self.get("/metrics", Who::Admin);
        self.expect("GET /metrics", &r, 200);
        self.settle_all();
        let listed = self.list_all(
            &format!("/webhooks?tenant={}&page_size=2", self.tenant),
            "webhooks",
            Who::Admin,
        );
        let live: BTreeMap<String, usize> = (0..HOOK_SLOTS)
            .filter(|s| self.model.live_hook(*s).is_some())
            .map(|s| (self.hooks[self.hook_of(s)].id.clone(), s))
            .collect();
        let listed_ids: BTreeSet<String> = listed
            .iter()
            .map(|w| w["id"].as_str().unwrap_or_default().to_owned())
            .collect();
        if listed_ids != live.keys().cloned().collect() {
            fail!(
                self,
                "GET /webhooks lists {listed_ids:?}; the live webhooks are {:?}",
                live.keys()
            );
        }
        for w in &listed {
            let slot = live[w["id"].as_str().unwrap()];
            let h = self.hook_of(slot);
            let m = self.model.hook(slot).unwrap();
            let disabled = self.hooks[h].user_disabled || self.hooks[h].gone;
            let certain = self.unaccounted_gones(h).is_empty();
            if w["signing_secret_version"] != json!(m.secret_version)
                || w["events"] != json!(PATTERNS[m.patterns])
                || (certain && w["disabled"] != json!(disabled))
                || !w["signing_secret"].is_null()
            {
                fail!(self, "GET /webhooks: {w}; expected version {}, events {:?}, disabled {disabled}, no secret", m.secret_version, PATTERNS[m.patterns]);
            }
        }
        let listed = self.list_all("/operations?page_size=2", "operations", Who::Tenant);
        let names: Vec<String> = listed
            .iter()
            .map(|o| o["name"].as_str().unwrap_or_default().to_owned())
            .collect();
        let want: Vec<String> = (0..self.ops.len())
            .rev()
            .filter(|i| !self.model.ops[*i].deleted)
            .map(|i| format!("operations/{}", self.ops[i].id))
            .collect();
        if names != want {
            fail!(
                self,
                "GET /operations (newest first) lists {names:?}; expected {want:?}"
            );
        }
        let order: Vec<usize> = (0..self.ops.len())
            .rev()
            .filter(|i| !self.model.ops[*i].deleted)
            .collect();
        for (o, op) in listed.iter().zip(order) {
            self.op_resource_ok("GET /operations", o, op);
        }
        for i in 0..self.ops.len() {
            let path = format!("/operations/{}", self.ops[i].id);
            let r = self.get(&path, Who::Tenant);
            if self.model.ops[i].deleted {
                self.expect(&format!("GET {path} (deleted)"), &r, 404);
                continue;
            }
            self.expect(&path, &r, 200);
            self.op_resource_ok(&path, &r.body, i);
            if r.headers.get("retry-after").is_some() == self.model.ops[i].state.is_done() {
                fail!(
                    self,
                    "GET {path}: `Retry-After` is for operations not done yet: {:?}",
                    r.headers
                );
            }
        }
        let listed = self.list_all("/events?page_size=3", "events", Who::Tenant);
        if listed.len() != self.model.events.len() {
            fail!(
                self,
                "GET /events lists {} events; {} were stored",
                listed.len(),
                self.model.events.len()
            );
        }
        let ids: BTreeSet<&str> = listed.iter().filter_map(|e| e["id"].as_str()).collect();
        for e in &self.events {
            if let Some(id) = &e.id {
                if !ids.contains(id.as_str()) {
                    fail!(
                        self,
                        "GET /events does not list the acknowledged event {id}"
                    );
                }
            }
        }
    }

    /// The end of a sequence: see the module comment.
    fn finish(&mut self) {
        for hook in &self.hooks {
            receiver().set(&hook.key, Behaviour::Healthy);
        }
        self.note("every receiver healthy".into());
        self.settle_all();
        // The user re-enables what they disabled; what a 410 disabled stays disabled.
        for slot in 0..HOOK_SLOTS {
            let Some(m) = self.model.live_hook(slot) else {
                continue;
            };
            if m.user_disabled {
                let h = self.hook_of(slot);
                let path = format!("/webhooks/{}:enable", self.hooks[h].id);
                let sent = Instant::now();
                let r = self.post(&path, Who::Admin, &json!({}));
                let answered = Instant::now();
                self.expect(&path, &r, 200);
                let hook = &mut self.hooks[h];
                hook.user_disabled = false;
                hook.gone = false;
                hook.last_enable_answered = answered;
                hook.close_quiet(sent);
                self.model.hooks[slot].as_mut().unwrap().user_disabled = false;
            }
        }
        self.drain_operations();
        self.wait_until_quiet();
        self.check_events();
        self.check_operations();
        let mut deliveries = 0;
        for h in 0..self.hooks.len() {
            deliveries += self.check_hook(h);
        }
        let broker = self
            .model
            .events
            .iter()
            .filter(|e| e.event_type.starts_with(ROUTED_PREFIX))
            .count();
        let keys: Vec<String> = self.hooks.iter().map(|h| h.key.clone()).collect();
        receiver().forget(&keys);
        let (events, webhooks) = (
            self.model.events.len(),
            self.hooks.iter().filter(|h| h.deleted_at.is_none()).count(),
        );
        with_lane(|l| {
            l.totals.events += events;
            l.totals.deliveries += deliveries + broker;
            l.totals.webhooks += webhooks;
            l.case_open = false;
        });
    }

    /// Ends every operation (failing it with the current lease, claiming the queued ones
    /// first), so the next sequence on this server starts with an empty queue.
    fn drain_operations(&mut self) {
        for _round in 0..5 {
            let mut queued = false;
            for op in 0..self.ops.len() {
                match self.model.ops[op].state {
                    OpState::Running => {
                        let path = format!("/operations/{}:fail", self.ops[op].id);
                        let body = json!({
                            "lease_token": self.ops[op].tokens.last().unwrap(),
                            "error": { "code": FAIL_CODE, "message": "drained" },
                            "retryable": false,
                        });
                        let r = self.post(&path, Who::Worker, &body);
                        self.expect(&format!("{path} (draining)"), &r, 200);
                        self.model.drain(op);
                        self.op_resource_ok(&path, &r.body, op);
                    }
                    OpState::Queued => queued = true,
                    _ => {}
                }
            }
            self.sync_events();
            if !queued {
                return;
            }
            let expected = self.model.claimable(100);
            let r = self.post(
                "/operations:claim",
                Who::Worker,
                &json!({ "types": ["transcode"], "lease": "30s", "max": 100 }),
            );
            self.expect("POST /operations:claim (draining)", &r, 200);
            let claimed = r.body["operations"].as_array().cloned().unwrap_or_default();
            let names: Vec<&str> = claimed.iter().filter_map(|o| o["name"].as_str()).collect();
            let want: Vec<String> = expected
                .iter()
                .map(|i| format!("operations/{}", self.ops[*i].id))
                .collect();
            if names != want {
                fail!(
                    self,
                    "draining: the claim took {names:?}; the queued operations are {want:?}"
                );
            }
            for (o, i) in claimed.iter().zip(expected) {
                self.ops[i]
                    .tokens
                    .push(o["lease_token"].as_str().unwrap_or_default().to_owned());
                self.model.claimed(i);
            }
        }
        fail!(self, "draining the operations did not end")
    }

    fn wait_until_quiet(&mut self) {
        let pg_killed = self.pg && !self.kills.is_empty();
        // On PostgreSQL a killed node's delivery leases (4 x timeout + 30 s) must run out.
        let bound = Duration::from_secs(if pg_killed { 50 } else { 12 });
        let started = Instant::now();
        loop {
            let mut waiting = Vec::new();
            for hook in &self.hooks {
                if hook.deleted_at.is_some() || hook.gone || hook.user_disabled {
                    continue;
                }
                let r = self.get(
                    &format!("/deliveries?webhook={}&status=pending&page_size=5", hook.id),
                    Who::Admin,
                );
                self.expect("GET /deliveries?status=pending", &r, 200);
                for d in r.body["deliveries"].as_array().cloned().unwrap_or_default() {
                    waiting.push(d);
                }
            }
            // Quiet also means no send still in flight: its attempt is recorded a little
            // after the timeout.
            let keys: Vec<String> = self.hooks.iter().map(|h| h.key.clone()).collect();
            let last = receiver()
                .received(&keys)
                .iter()
                .map(|r| r.received_at)
                .max();
            let in_flight =
                last.is_some_and(|t| t.elapsed() < WEBHOOK_TIMEOUT + Duration::from_millis(300));
            if waiting.is_empty() && !in_flight {
                let waited = started.elapsed();
                self.note(format!("nothing pending after {waited:?}"));
                return;
            }
            if started.elapsed() > bound {
                let list: Vec<String> = waiting.iter().map(|d| d.to_string()).collect();
                fail!(
                    self,
                    "{} deliveries of enabled webhooks are still pending {bound:?} after every receiver was made healthy (nothing may stay pending once its receiver is healthy):\n  {}",
                    waiting.len(),
                    list.join("\n  ")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn check_events(&mut self) {
        let listed = self.list_all("/events?page_size=3", "events", Who::Tenant);
        if listed.len() != self.model.events.len() {
            fail!(
                self,
                "GET /events lists {} events; {} were stored: {listed:?}",
                listed.len(),
                self.model.events.len()
            );
        }
        let by_id: HashMap<String, Value> = listed
            .iter()
            .map(|e| (e["id"].as_str().unwrap_or_default().to_owned(), e.clone()))
            .collect();
        for i in 0..self.events.len() {
            let m = self.model.events[i].clone();
            match m.op {
                None => {
                    let id = self.events[i].id.clone().unwrap();
                    let Some(e) = by_id.get(&id) else {
                        fail!(self, "the acknowledged event {id} is not in GET /events");
                    };
                    let key = m.key.map(|k| json!(KEYS[k])).unwrap_or(Value::Null);
                    let sequence = m.sequence.map(|s| json!(s)).unwrap_or(Value::Null);
                    if e["type"] != json!(m.event_type)
                        || e["key"] != key
                        || e["sequence"] != sequence
                        || e["data"] != self.events[i].data
                    {
                        fail!(self, "GET /events shows {e}; expected type {}, key {key}, sequence {sequence}, data {}", m.event_type, self.events[i].data);
                    }
                }
                Some(op) => {
                    let name = json!(format!("operations/{}", self.ops[op].id));
                    let found: Vec<&Value> = listed
                        .iter()
                        .filter(|e| e["data"]["name"] == name && e["type"] == json!(m.event_type))
                        .collect();
                    if found.len() != 1 {
                        fail!(
                            self,
                            "operation {name} ended once, so one {} event; GET /events has {}",
                            m.event_type,
                            found.len()
                        );
                    }
                    self.events[i].id =
                        Some(found[0]["id"].as_str().unwrap_or_default().to_owned());
                    self.events[i].data = found[0]["data"].clone();
                }
            }
        }
    }

    fn check_operations(&self) {
        for i in 0..self.ops.len() {
            let path = format!("/operations/{}", self.ops[i].id);
            let r = self.get(&path, Who::Tenant);
            if self.model.ops[i].deleted {
                self.expect(&format!("GET {path} (deleted)"), &r, 404);
            } else {
                self.expect(&path, &r, 200);
                self.op_resource_ok(&path, &r.body, i);
            }
        }
    }

    /// Everything about one webhook once nothing is pending; returns its deliveries.
    fn check_hook(&self, h: usize) -> usize {
        let hook = &self.hooks[h];
        let id = &hook.id;
        let slot = self.slots.iter().position(|s| *s == Some(h));
        let r = self.get(&format!("/webhooks/{id}"), Who::Admin);
        if hook.deleted_at.is_some() {
            self.expect(&format!("GET /webhooks/{id} (deleted)"), &r, 404);
        } else {
            self.expect(&format!("GET /webhooks/{id}"), &r, 200);
            let m = self.model.hook(slot.unwrap()).unwrap();
            if r.body["disabled"] != json!(hook.gone)
                || (hook.gone && r.body["disabled_reason"] != json!("endpoint answered 410 Gone"))
                || r.body["signing_secret_version"] != json!(m.secret_version)
            {
                fail!(
                    self,
                    "GET /webhooks/{id} at the end: {}; expected disabled {} (by a 410: {}), version {}",
                    r.text,
                    hook.gone,
                    hook.gone,
                    m.secret_version
                );
            }
        }
        // The delivery log, page by page.
        let deliveries = self.list_all(
            &format!("/deliveries?webhook={id}&page_size=2"),
            "deliveries",
            Who::Tenant,
        );
        let events: HashMap<&str, usize> = self
            .events
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.id.as_deref().map(|id| (id, i)))
            .collect();
        let mut seen_events = BTreeSet::new();
        let mut by_id: HashMap<String, (Value, usize)> = HashMap::new();
        for d in &deliveries {
            let event_id = d["event_id"].as_str().unwrap_or_default();
            let Some(&e) = events.get(event_id) else {
                fail!(
                    self,
                    "webhook {id} has a delivery of an event it never matched: {d}"
                );
            };
            if !self.events[e].sure.contains(&h) && !self.events[e].maybe.contains(&h) {
                fail!(self, "webhook {id} has a delivery of event {event_id}, which it did not match (or was disabled or deleted when it was stored): {d}");
            }
            if !seen_events.insert(event_id.to_owned()) {
                fail!(self, "webhook {id} has two deliveries of event {event_id}");
            }
            if d["webhook_id"] != json!(id) {
                fail!(self, "GET /deliveries?webhook={id} listed {d}");
            }
            by_id.insert(
                d["id"].as_str().unwrap_or_default().to_owned(),
                (d.clone(), e),
            );
        }
        for (i, e) in self.events.iter().enumerate() {
            let eid = e.id.as_deref().unwrap_or_default();
            if e.sure.contains(&h) && !seen_events.contains(eid) {
                fail!(self, "event {eid} (#{i}, {}) was acknowledged while webhook {id} matched it, but it has no delivery", self.model.events[i].event_type);
            }
        }
        let received: Vec<Received> = receiver().received(std::slice::from_ref(&hook.key));
        let mut per_delivery: HashMap<String, Vec<&Received>> = HashMap::new();
        for r in &received {
            let d = r.header("x-delivery-id").unwrap_or_default().to_owned();
            per_delivery.entry(d).or_default().push(r);
        }
        for (d, recs) in &per_delivery {
            if !by_id.contains_key(d) {
                fail!(self, "webhook {id} received a request for delivery {d:?}, not one of its deliveries; headers {:?}", recs[0].headers);
            }
        }
        for (did, (d, e)) in &by_id {
            let recs = per_delivery.get(did).cloned().unwrap_or_default();
            // A send that timed out is recorded a little after its timeout; on a loaded
            // machine that can be after the sequence looked quiet. Its attempt must still
            // come: wait a bounded while for it before judging.
            let read = || {
                let r = self.get(&format!("/deliveries/{did}"), Who::Tenant);
                self.expect(&format!("GET /deliveries/{did}"), &r, 200);
                r
            };
            let mut r = read();
            let late = Instant::now();
            while self.kills.is_empty()
                && (recs.len() as u64) > r.body["attempts"].as_u64().unwrap_or(u64::MAX)
                && late.elapsed() < Duration::from_secs(5)
            {
                std::thread::sleep(Duration::from_millis(50));
                r = read();
            }
            let log = r.body["attempt_log"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let attempts = r.body["attempts"].as_u64().unwrap_or(u64::MAX);
            let status = r.body["status"].as_str().unwrap_or_default();
            let context = || {
                format!(
                    "delivery {did} (event #{e}) of webhook {id}: {}\nreceived: {:?}",
                    r.text,
                    recs.iter()
                        .map(|x| (self.t(x.received_at), x.answer))
                        .collect::<Vec<_>>()
                )
            };
            if log.len() as u64 != attempts {
                fail!(self, "`attempts` must count the attempt log: {}", context());
            }
            let caused = self.redelivered.iter().any(|(x, _)| x == did)
                || self.replayed.iter().any(|(x, _)| *x == h);
            match status {
                "pending" => {
                    // Only a webhook a 410 disabled keeps deliveries waiting.
                    if !hook.gone || hook.deleted_at.is_some() {
                        fail!(self, "still pending at the end, though its webhook is not waiting for anything: {}", context());
                    }
                }
                "succeeded" => {
                    let last = log
                        .last()
                        .map(|a| a["status_code"].clone())
                        .unwrap_or(Value::Null);
                    if !last.as_u64().is_some_and(|c| (200..300).contains(&c))
                        || !recs.iter().any(|x| x.answer.is_success())
                    {
                        fail!(
                            self,
                            "succeeded without a 2xx from the receiver: {}",
                            context()
                        );
                    }
                }
                "failed" => {
                    if hook.deleted_at.is_some() {
                        // Ended by the delete (or before it).
                    } else if r.body["last_status_code"] == json!(410) {
                        if recs.last().map(|x| x.answer) != Some(Answer::Gone)
                            && self.kills.is_empty()
                        {
                            fail!(
                                self,
                                "failed with a 410 the receiver never gave last: {}",
                                context()
                            );
                        }
                    } else {
                        let tail = &log[log.len().saturating_sub(SCHEDULE_LEN as usize)..];
                        let all_failed = tail.iter().all(|a| {
                            !a["status_code"]
                                .as_u64()
                                .is_some_and(|c| (200..300).contains(&c))
                        });
                        if log.len() < SCHEDULE_LEN as usize || !all_failed {
                            fail!(
                                self,
                                "failed before its {SCHEDULE_LEN} attempts were used up: {}",
                                context()
                            );
                        }
                        if !caused && self.kills.is_empty() && attempts != SCHEDULE_LEN as u64 {
                            fail!(self, "a delivery never redelivered must fail after exactly {SCHEDULE_LEN} attempts: {}", context());
                        }
                    }
                }
                other => fail!(self, "unknown status {other}: {}", context()),
            }
            // Every attempt reached the receiver; a send cut short by a kill may have too.
            if (recs.len() as u64) < attempts
                || (self.kills.is_empty() && recs.len() as u64 != attempts)
            {
                fail!(
                    self,
                    "{} requests received for {attempts} recorded attempts: {}",
                    recs.len(),
                    context()
                );
            }
            self.check_requests(h, did, d, *e, &recs);
        }
        for r in &received {
            for (from, until, why) in &hook.quiet {
                if r.received_at > *from + IN_FLIGHT_GRACE
                    && until.is_none_or(|u| r.received_at < u)
                {
                    fail!(
                        self,
                        "webhook {id} received {} at {} while {why} (since {}): {:?}",
                        r.header("x-delivery-id").unwrap_or_default(),
                        self.t(r.received_at),
                        self.t(*from),
                        r.headers
                    );
                }
            }
        }
        deliveries.len()
    }

    /// The requests one delivery made: the event as stored, signed right, and never sent
    /// again without a cause.
    fn check_requests(&self, h: usize, did: &str, d: &Value, e: usize, recs: &[&Received]) {
        let hook = &self.hooks[h];
        let event_id = d["event_id"].as_str().unwrap_or_default();
        let m = &self.model.events[e];
        for r in recs {
            let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            let header_id = match hook.format {
                Format::Herald => r.header("x-event-id"),
                Format::Standard => r.header("webhook-id"),
            };
            let key = m.key.map(|k| json!(KEYS[k])).unwrap_or(Value::Null);
            let sequence = m.sequence.map(|s| json!(s)).unwrap_or(Value::Null);
            if header_id != Some(event_id)
                || body["id"] != json!(event_id)
                || body["type"] != json!(m.event_type)
                || body["data"] != self.events[e].data
                || body["key"] != key
                || body["sequence"] != sequence
                || (hook.format == Format::Herald
                    && r.header("x-event-type") != Some(m.event_type.as_str()))
            {
                fail!(self, "webhook {} got a request for delivery {did} that is not its event (#{e}, {}): {:?} {body}", hook.id, m.event_type, r.headers);
            }
            self.check_signature(h, r);
        }
        for pair in recs.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let from = a
                .received_at
                .checked_sub(SECRET_TOLERANCE)
                .unwrap_or(a.received_at);
            let within = |t: &Instant| *t >= from && *t <= b.received_at;
            let cause = !a.answer.is_success()
                || self
                    .kills
                    .iter()
                    .any(|k| *k >= a.received_at && *k <= b.received_at)
                || self.redelivered.iter().any(|(x, t)| x == did && within(t))
                || self.replayed.iter().any(|(x, t)| *x == h && within(t));
            if !cause {
                fail!(
                    self,
                    "delivery {did} of webhook {} was received at {} and answered {:?}, then received again at {} with no failure, kill, redeliver or replay in between",
                    hook.id,
                    self.t(a.received_at),
                    a.answer,
                    self.t(b.received_at)
                );
            }
        }
    }

    fn check_signature(&self, h: usize, r: &Received) {
        let hook = &self.hooks[h];
        let t = r.received_at;
        let allowed: Vec<&Secret> = hook
            .secrets
            .iter()
            .filter(|s| s.sent <= t && s.until.is_none_or(|u| t <= u + SECRET_TOLERANCE))
            .collect();
        let name = match hook.format {
            Format::Herald => "x-signature",
            Format::Standard => "webhook-signature",
        };
        let header = r.header(name).unwrap_or_default().to_owned();
        let verifier = WebhookVerifier::with_secrets(allowed.iter().map(|s| s.value.clone()));
        let describe = || {
            let versions: Vec<String> = hook
                .secrets
                .iter()
                .map(|s| {
                    format!(
                        "v{} from {} until {}",
                        s.version,
                        self.t(s.sent),
                        s.until.map(|u| self.t(u)).unwrap_or("now".into())
                    )
                })
                .collect();
            format!(
                "webhook {} request at {}: {name}: {header}; secrets {}",
                hook.id,
                self.t(t),
                versions.join(", ")
            )
        };
        // Each signature in the header is made with a secret live at the time...
        for candidate in header.split_whitespace() {
            let mut headers = r.headers.clone();
            for (k, v) in headers.iter_mut() {
                if k.eq_ignore_ascii_case(name) {
                    *v = candidate.to_owned();
                }
            }
            if let Err(e) = verifier.verify(&headers, &r.body) {
                fail!(
                    self,
                    "a signature that no live secret makes ({e}): {}",
                    describe()
                );
            }
        }
        if header.is_empty() {
            fail!(self, "no signature: {}", describe());
        }
        // ...and the newest secret is among them: the newest one whose rotation had been
        // answered a while before, or one made after it.
        if let Some(established) = hook
            .secrets
            .iter()
            .filter(|s| s.answered + SECRET_TOLERANCE <= t)
            .map(|s| s.version)
            .max()
        {
            let current: Vec<String> = hook
                .secrets
                .iter()
                .filter(|s| s.version >= established && s.sent <= t)
                .map(|s| s.value.clone())
                .collect();
            if let Err(e) = WebhookVerifier::with_secrets(current).verify(&r.headers, &r.body) {
                fail!(
                    self,
                    "not signed with the current secret (v{established} or newer) ({e}): {}",
                    describe()
                );
            }
        }
    }
}

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
