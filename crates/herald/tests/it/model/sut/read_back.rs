//! Rotations' answers, and reading everything back from Herald against the model.

use super::*;

impl Sut {
    /// Stores a rotation's answer: the new secret, and when the ones before stop signing.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn rotated(
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

    pub(super) fn read_back(&mut self) {
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
}
