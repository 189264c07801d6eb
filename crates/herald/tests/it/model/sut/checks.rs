//! Per-webhook checks once nothing is pending: its deliveries, the requests the receiver
//! saw, every signature.

use super::*;

impl Sut {
    /// Everything about one webhook once nothing is pending; returns its deliveries.
    pub(super) fn check_hook(&self, h: usize) -> usize {
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
    pub(super) fn check_requests(
        &self,
        h: usize,
        did: &str,
        d: &Value,
        e: usize,
        recs: &[&Received],
    ) {
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

    pub(super) fn check_signature(&self, h: usize, r: &Received) {
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
