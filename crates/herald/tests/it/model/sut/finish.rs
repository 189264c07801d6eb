//! The end of a sequence: receivers healthy, operations drained, quiet, events and
//! operations checked.

use super::*;

impl Sut {
    /// The end of a sequence: see the module comment.
    pub(super) fn finish(&mut self) {
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
    pub(super) fn drain_operations(&mut self) {
        // A lease that just ran out is requeued by the reaper a moment later (later still on
        // a loaded machine): a claim may take only some of the queued operations, in order;
        // the rest are claimed in a later round, for a bounded while.
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
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
            // In order, each one queued: a subsequence of `want`.
            let mut rest = want.iter().zip(&expected);
            let mut took = Vec::with_capacity(names.len());
            for name in &names {
                match rest.find(|(w, _)| w.as_str() == *name) {
                    Some((_, i)) => took.push(*i),
                    None => fail!(
                        self,
                        "draining: the claim took {names:?}; the queued operations are {want:?}"
                    ),
                }
            }
            if took.len() < expected.len() {
                std::thread::sleep(Duration::from_millis(100));
            }
            for (o, i) in claimed.iter().zip(took) {
                self.ops[i]
                    .tokens
                    .push(o["lease_token"].as_str().unwrap_or_default().to_owned());
                self.model.claimed(i);
            }
        }
        fail!(self, "draining the operations did not end")
    }

    pub(super) fn wait_until_quiet(&mut self) {
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

    pub(super) fn check_events(&mut self) {
        // Herald's own events (a webhook disabled, a delivery dead) are not the model's: it
        // checks the events it published.
        let listed: Vec<Value> = self
            .list_all("/events?page_size=3", "events", Who::Tenant)
            .into_iter()
            .filter(|e| {
                !matches!(
                    e["type"].as_str(),
                    Some("webhook.disabled" | "delivery.failed")
                )
            })
            .collect();
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

    pub(super) fn check_operations(&self) {
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
}
