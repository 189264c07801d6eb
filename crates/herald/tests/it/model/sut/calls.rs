//! Calls to Herald and what every answer must be: requests, paged lists, settling 410s,
//! syncing the model's events, operation resources and leases.

use super::*;

impl Sut {
    pub(super) fn fail(&self, message: String) -> ! {
        let trail = self.trail.join("\n  ");
        panic!("{message}\nsteps so far (times since the start of the sequence):\n  {trail}")
    }

    pub(super) fn t(&self, at: Instant) -> String {
        format!(
            "+{}ms",
            at.saturating_duration_since(self.started).as_millis()
        )
    }

    pub(super) fn note(&mut self, text: String) {
        let line = format!("{} {text}", self.t(Instant::now()));
        self.trail.push(line);
    }

    pub(super) fn key(&self, who: Who) -> &str {
        match who {
            Who::Admin => ADMIN,
            Who::Tenant => &self.tenant_key,
            Who::Worker => &self.worker_key,
        }
    }

    /// One request. A 5xx fails the sequence, except a 503 with `Retry-After` (a
    /// deliberate overload answer), which is retried after the wait it asks for.
    pub(super) fn call(
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

    pub(super) fn get(&self, path: &str, who: Who) -> Resp {
        self.call(Method::GET, path, who, None, &[])
    }

    pub(super) fn post(&self, path: &str, who: Who, body: &Value) -> Resp {
        self.call(Method::POST, path, who, Some(body), &[])
    }

    pub(super) fn expect(&self, what: &str, r: &Resp, status: u16) {
        if r.status != status {
            fail!(
                self,
                "{what}: expected {status}, got {}: {}",
                r.status,
                r.text
            );
        }
    }

    pub(super) fn expect_one_of(&self, what: &str, r: &Resp, statuses: &[u16]) {
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
    pub(super) fn list_all(&self, path: &str, field: &str, who: Who) -> Vec<Value> {
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

    pub(super) fn hook_of(&self, slot: usize) -> usize {
        self.slots[slot].expect("the model has a webhook in this slot")
    }

    /// 410 answers this webhook's receiver gave that are not accounted for yet.
    pub(super) fn unaccounted_gones(&self, h: usize) -> Vec<Instant> {
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
    pub(super) fn settle(&mut self, h: usize) {
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

    pub(super) fn settle_all(&mut self) {
        for h in 0..self.hooks.len() {
            self.settle(h);
        }
    }

    /// Gives the model's new events (published, or raised by an operation's end) their
    /// webhooks, from the model's fan-out and what Herald auto-disabled.
    pub(super) fn sync_events(&mut self) {
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

    pub(super) fn op_resource_ok(&self, what: &str, v: &Value, op: usize) {
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

    pub(super) fn token(&self, op: usize, token: Token) -> String {
        let tokens = &self.ops[op].tokens;
        match token {
            Token::Latest => tokens.last().unwrap().clone(),
            Token::Older(i) => tokens[i].clone(),
        }
    }

    /// The answer a worker call with `token` must get, `Valid` meaning 200.
    pub(super) fn expect_lease(
        &self,
        what: &str,
        r: &Resp,
        prev: &Model,
        op: usize,
        token: Token,
    ) -> bool {
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
}
