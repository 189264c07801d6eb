//! One step of a sequence against Herald, checked against the model: the dispatch, the
//! operation steps and the rest (read back, pause, kill); webhook and event steps are in
//! `delivery_steps.rs`.

use super::*;

impl Sut {
    pub(super) fn apply_step(&mut self, prev: &Model, step: &Step) {
        match step {
            Step::CreateHook { .. }
            | Step::PatchHook { .. }
            | Step::PatchBurst { .. }
            | Step::DisableHook { .. }
            | Step::EnableHook { .. }
            | Step::DeleteHook { .. }
            | Step::RotateSecret { .. }
            | Step::RotateTwice { .. }
            | Step::SetBehaviour { .. }
            | Step::Publish { .. }
            | Step::Republish { .. }
            | Step::Redeliver { .. }
            | Step::Replay { .. } => self.apply_delivery_step(prev, step),
            Step::CreateOp { .. }
            | Step::CancelOp { .. }
            | Step::DeleteOp { .. }
            | Step::Claim { .. }
            | Step::ClaimAndLoseLease { .. }
            | Step::Heartbeat { .. }
            | Step::Complete { .. }
            | Step::Fail { .. } => self.apply_op_step(prev, step),
            Step::ReadBack => self.read_back(),
            Step::Pause { ms } => std::thread::sleep(Duration::from_millis(*ms)),
            Step::Kill => {
                let (base, dead) = with_lane(|l| l.restart());
                self.base = base;
                self.kills.push(dead);
            }
        }
    }

    /// The operation steps of [`Self::apply_step`].
    pub(super) fn apply_op_step(&mut self, prev: &Model, step: &Step) {
        match step {
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
            _ => unreachable!("not an operation step: {step:?}"),
        }
    }
}
