//! The webhook and event steps of [`Sut::apply_step`]: webhooks created, patched, disabled,
//! enabled, deleted and rotated, receivers changed, events published and republished,
//! deliveries redelivered and replayed.

use super::*;

impl Sut {
    /// The webhook and event steps of [`Self::apply_step`].
    pub(super) fn apply_delivery_step(&mut self, prev: &Model, step: &Step) {
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
            _ => unreachable!("not a webhook or event step: {step:?}"),
        }
    }
}
