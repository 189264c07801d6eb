//! Who is calling: the bearer key becomes a [`Principal`] with a role. Keys are looked
//! up by the id they carry and checked against the stored hash in constant time.

use crate::error::{ApiError, ApiResult};
use crate::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use herald_core::auth::{secret_matches, split_key, static_key_matches, Role};
use herald_core::ids::{KeyId, TenantId};
use herald_store::{StoreError, WorkerScope};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct Principal {
    /// `None` for the admin key given in config or env.
    pub key_id: Option<KeyId>,
    pub role: Role,
    /// What a worker key may claim and finish (from the stored key, cached with it);
    /// unscoped for every other key.
    pub scope: WorkerScope,
    /// A portal session limited to some event types: the patterns it may see and act on
    /// (checked on every webhook and delivery a handler loads, see [`Principal::sees_webhook`]);
    /// `None` for keys and unlimited sessions.
    pub event_types: Option<Arc<[String]>>,
}

impl Principal {
    pub fn require_admin(&self) -> ApiResult<()> {
        match self.role {
            Role::Admin => Ok(()),
            _ => Err(ApiError::forbidden("This needs an admin key.")),
        }
    }

    pub fn require_worker(&self) -> ApiResult<()> {
        match self.role {
            Role::Admin | Role::Worker => Ok(()),
            _ => Err(ApiError::forbidden("This needs a worker key.")),
        }
    }

    /// Admin or tenant: the readers of operations, webhooks and deliveries.
    pub fn require_reader(&self) -> ApiResult<()> {
        match self.role {
            Role::Worker => Err(ApiError::forbidden(
                "Worker keys may only claim and finish operations.",
            )),
            _ => Ok(()),
        }
    }

    /// Whether this caller may see something belonging to `owner`. Tenants see only
    /// their own; the caller answers 404 otherwise, so existence does not leak.
    pub fn can_see(&self, owner: Option<TenantId>) -> bool {
        match self.role {
            Role::Admin => true,
            Role::Worker => false,
            Role::Tenant(t) => owner == Some(t),
        }
    }

    /// Whether this caller may see (and so act on) `w`: its tenant's, and for a session
    /// limited to some event types, subscribed to nothing beyond them. Anything else is
    /// answered 404, as if it were not there.
    pub fn sees_webhook(&self, w: &herald_store::Webhook) -> bool {
        self.can_see(w.tenant)
            && self
                .event_types
                .as_deref()
                .is_none_or(|allowed| crate::routes::portal::offers_webhook(allowed, w))
    }

    /// Whether a delivery of `event_type` (to a webhook this caller sees) is within this
    /// caller's event types. A webhook's own test events always are.
    pub fn sees_event_type(&self, event_type: &str) -> bool {
        self.event_types.as_deref().is_none_or(|allowed| {
            event_type == herald_store::WEBHOOK_TEST
                || crate::routes::portal::within(allowed, event_type)
        })
    }

    /// Whether this caller may subscribe to `pattern` (a session limited to some event
    /// types: only within them).
    pub fn may_subscribe(&self, pattern: &str) -> ApiResult<()> {
        match self.event_types.as_deref() {
            Some(allowed) if !crate::routes::portal::within(allowed, pattern) => {
                Err(ApiError::invalid(format!(
                    "`events`: {pattern:?} is not among the event types this portal offers ({}).",
                    allowed.join(", ")
                )))
            }
            _ => Ok(()),
        }
    }

    /// The scope idempotency keys are remembered in: one per caller identity.
    pub fn idempotency_scope(&self) -> String {
        match (self.role, self.key_id) {
            (Role::Tenant(t), _) => t.to_string(),
            (Role::Admin, _) => "admin".into(),
            (Role::Worker, Some(k)) => k.to_string(),
            (Role::Worker, None) => "worker".into(),
        }
    }
}

/// Put in a request's extensions by the portal's guard (never from outside): the request
/// comes through `/portal/api/*` with a live session of this tenant, and acts as that
/// tenant (see `routes::portal`).
#[derive(Debug, Clone)]
pub struct PortalPrincipal {
    pub tenant: TenantId,
    /// The session's event types, if it is limited to some.
    pub event_types: Option<Arc<[String]>>,
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(portal) = parts.extensions.get::<PortalPrincipal>() {
            // A portal session spends its tenant's portal bucket of `[limits]`, as a key
            // spends its own: one customer looping on `:test` is answered 429.
            if let Some(limiter) = &state.rate_limits {
                limiter.check_key(format!("portal/{}", portal.tenant))?;
            }
            return Ok(Principal {
                key_id: None,
                role: Role::Tenant(portal.tenant),
                scope: WorkerScope::default(),
                event_types: portal.event_types.clone(),
            });
        }
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ApiError::unauthorized("Send `Authorization: Bearer <key>`."))?;
        let presented = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::unauthorized("The Authorization header must be `Bearer <key>`.")
            })?;
        let client = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        let principal = match (&state.failed_auth, client) {
            (Some(guard), Some(ip)) => guard.authenticate(state, presented, ip).await?,
            _ => authenticate(state, presented).await?,
        };
        if let Some(limiter) = &state.rate_limits {
            limiter.check(&principal)?;
        }
        Ok(principal)
    }
}

/// Per-key token buckets (GCRA, from `governor`). Only authenticated keys get a
/// bucket, so the map grows with the number of keys, not with traffic.
pub struct RateLimits {
    limiter: governor::DefaultKeyedRateLimiter<String>,
    clock: governor::clock::DefaultClock,
}

impl RateLimits {
    /// `None` when the config turns limits off.
    pub fn from_config(limits: &crate::config::LimitSettings) -> Option<Self> {
        let rate = std::num::NonZeroU32::new(limits.requests_per_second)?;
        let burst = limits
            .burst
            .and_then(std::num::NonZeroU32::new)
            .unwrap_or(rate);
        let quota = governor::Quota::per_second(rate).allow_burst(burst);
        Some(Self {
            limiter: governor::RateLimiter::keyed(quota),
            clock: governor::clock::DefaultClock::default(),
        })
    }

    /// Admits one request from `principal`, or answers 429 with `Retry-After`.
    pub fn check(&self, principal: &Principal) -> ApiResult<()> {
        let key = match principal.key_id {
            Some(id) => id.to_string(),
            None => "admin-key-from-config".to_owned(),
        };
        self.check_key(key)
    }

    /// Admits one request on the bucket named `key`, or answers 429 with `Retry-After`.
    pub fn check_key(&self, key: String) -> ApiResult<()> {
        use governor::clock::Clock as _;
        match self.limiter.check_key(&key) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                // Whole seconds, rounded up: a client that waits this long gets in.
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                let mut err = ApiError::new(
                    axum::http::StatusCode::TOO_MANY_REQUESTS,
                    "RATE_LIMITED",
                    "This key sent more requests than its rate limit allows; retry after the time in Retry-After.",
                );
                err.retry_after = Some(secs.max(1));
                Err(err)
            }
        }
    }
}

/// Wrong keys per client address (GCRA buckets from `governor`): each request whose key
/// is refused spends one; a client whose bucket is empty is answered 429 with
/// `Retry-After`, without a store look-up, until it refills, except for keys this node
/// holds in memory (the config admin key, keys used in the last few seconds).
pub struct FailedAuthLimits {
    limiter: governor::DefaultKeyedRateLimiter<std::net::IpAddr>,
    clock: governor::clock::DefaultClock,
    /// Addresses whose bucket ran dry, with when it has room again.
    blocked: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, std::time::Instant>>,
}

/// At most this many addresses are remembered; beyond it, forgotten ones start afresh.
const FAILED_AUTH_TRACKED: usize = 10_000;

impl FailedAuthLimits {
    /// `None` when the config turns it off.
    pub fn from_config(limits: &crate::config::LimitSettings) -> Option<Self> {
        let per_minute = std::num::NonZeroU32::new(limits.failed_auth_per_minute)?;
        let quota = governor::Quota::per_minute(per_minute);
        Some(Self {
            limiter: governor::RateLimiter::keyed(quota),
            clock: governor::clock::DefaultClock::default(),
            blocked: Default::default(),
        })
    }

    /// Authenticates `presented` from `ip`: a held-off address gets only keys held in
    /// memory (else 429); otherwise a refused key spends one of its allowance, and the
    /// refusal that empties it is a 429 instead of a 401.
    async fn authenticate(
        &self,
        state: &AppState,
        presented: &str,
        ip: std::net::IpAddr,
    ) -> ApiResult<Principal> {
        if let Some(wait) = self.blocked(ip) {
            return authenticate_from_memory(state, presented).ok_or_else(|| Self::refusal(wait));
        }
        match authenticate(state, presented).await {
            Err(e) if e.status == axum::http::StatusCode::UNAUTHORIZED => {
                Err(self.failed(ip).map_or(e, Self::refusal))
            }
            other => other,
        }
    }

    /// How long `ip` is still held off, if it is.
    fn blocked(&self, ip: std::net::IpAddr) -> Option<std::time::Duration> {
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        let until = *blocked.get(&ip)?;
        let now = std::time::Instant::now();
        if until <= now {
            blocked.remove(&ip);
            return None;
        }
        Some(until - now)
    }

    /// Counts one refused key from `ip`; `Some(wait)` when that used up its allowance.
    fn failed(&self, ip: std::net::IpAddr) -> Option<std::time::Duration> {
        use governor::clock::Clock as _;
        if self.limiter.len() > FAILED_AUTH_TRACKED {
            self.limiter.retain_recent();
        }
        let not_until = self.limiter.check_key(&ip).err()?;
        let wait = not_until.wait_time_from(self.clock.now());
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        if blocked.len() > FAILED_AUTH_TRACKED {
            let now = std::time::Instant::now();
            blocked.retain(|_, until| *until > now);
        }
        blocked.insert(ip, std::time::Instant::now() + wait);
        Some(wait)
    }

    fn refusal(wait: std::time::Duration) -> ApiError {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut err = ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMITED",
            "Too many requests from this address had a wrong key; retry after the time in Retry-After.",
        );
        err.retry_after = Some(secs.max(1));
        err
    }
}

/// The config admin key, when `presented` is it.
fn admin_principal(state: &AppState, presented: &str) -> Option<Principal> {
    let configured = state.admin_key.as_ref()?;
    static_key_matches(presented, configured).then_some(Principal {
        key_id: None,
        role: Role::Admin,
        scope: WorkerScope::default(),
        event_types: None,
    })
}

/// The key's principal when `secret` is its secret and it is not revoked.
fn key_principal(key: &herald_store::ApiKey, secret: &str) -> Option<Principal> {
    (!key.revoked && secret_matches(secret, &key.hash)).then(|| Principal {
        key_id: Some(key.id),
        role: key.role,
        scope: key.scope.clone(),
        event_types: None,
    })
}

/// Authenticates from what this node holds in memory only (no store read): the config
/// admin key, or a key in the cache whose secret matches.
fn authenticate_from_memory(state: &AppState, presented: &str) -> Option<Principal> {
    admin_principal(state, presented).or_else(|| {
        let (id, secret) = split_key(presented)?;
        key_principal(&state.keys.get(id)?, secret)
    })
}

async fn authenticate(state: &AppState, presented: &str) -> ApiResult<Principal> {
    let rejected = || ApiError::unauthorized("The key is not valid or has been revoked.");
    if let Some(admin) = admin_principal(state, presented) {
        return Ok(admin);
    }
    let (id, secret) = split_key(presented).ok_or_else(rejected)?;
    let key = match state.keys.get(id) {
        Some(k) => k,
        None => {
            let key = match state.store.get_key(id).await {
                Ok(k) => k,
                Err(StoreError::NotFound) => return Err(rejected()),
                Err(e) => return Err(ApiError::internal(e)),
            };
            state.keys.put(key.clone());
            key
        }
    };
    key_principal(&key, secret).ok_or_else(rejected)
}

/// Keys recently read from the store, so a request costs no extra read. Revocation
/// through this node removes the entry at once; entries expire after a few seconds
/// so a revocation made elsewhere takes effect soon.
#[derive(Default)]
pub struct KeyCache {
    entries: std::sync::Mutex<
        std::collections::HashMap<KeyId, (herald_store::ApiKey, std::time::Instant)>,
    >,
}

const KEY_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(5);

impl KeyCache {
    pub fn get(&self, id: KeyId) -> Option<herald_store::ApiKey> {
        let entries = self.entries.lock().expect("key cache lock");
        entries
            .get(&id)
            .filter(|(_, at)| at.elapsed() < KEY_CACHE_TTL)
            .map(|(k, _)| k.clone())
    }

    pub fn put(&self, key: herald_store::ApiKey) {
        let mut entries = self.entries.lock().expect("key cache lock");
        if entries.len() > 10_000 {
            entries.clear();
        }
        entries.insert(key.id, (key, std::time::Instant::now()));
    }

    pub fn forget(&self, id: KeyId) {
        self.entries.lock().expect("key cache lock").remove(&id);
    }
}
