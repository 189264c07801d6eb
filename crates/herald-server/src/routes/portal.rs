//! The tenant portal's sessions: an admin mints one for a tenant (`POST
//! /tenants/{id}/portal-sessions`), its one-time URL token is exchanged at `/portal/open`
//! (a page whose button POSTs it) for an HttpOnly cookie, and `/portal/api/*` serves the page the
//! tenant's own API routes through [`guard`]: the cookie names the tenant, every change
//! needs the session's CSRF token in a header and a same-origin `Origin`, a read-only
//! session changes nothing, and a session limited to event types subscribes to no others.

use crate::auth::PortalPrincipal;
use crate::body::{parse_json, read_body};
use crate::config::{request_duration, PublicUrl};
use crate::error::{ApiError, ApiResult};
use crate::AppState;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::header::{
    HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, COOKIE, LOCATION,
    SET_COOKIE, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use herald_core::auth::hash_secret;
use herald_core::ids::{PortalSessionId, TenantId};
use herald_core::pattern::EventPattern;
use herald_store::{PortalSession, PortalSettings, StoreError};
use rand::RngCore;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::time::Duration;

/// The session cookie's name.
pub const COOKIE_NAME: &str = "herald_portal";
/// The header every change carries, with the session's CSRF token.
pub const CSRF_HEADER: &str = "x-herald-csrf";
const DEFAULT_EXPIRES_IN: Duration = Duration::from_secs(3600);
const MIN_EXPIRES_IN: Duration = Duration::from_secs(60);
const MAX_EXPIRES_IN: Duration = Duration::from_secs(24 * 3600);
const MAX_FRAME_ORIGINS: usize = 20;

const INDEX_HTML: &str = include_str!("../portal/index.html");
const APP_JS: &str = include_str!("../portal/app.js");
const APP_CSS: &str = include_str!("../portal/app.css");

/// 32 random bytes from a CSPRNG, hex, behind a prefix.
fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

fn session_json(s: &PortalSession) -> Value {
    json!({
        "id": s.id,
        "tenant": s.tenant,
        "read_only": s.read_only,
        "event_types": s.event_types,
        "expires_at": s.expires_at.to_rfc3339(),
        "created_at": s.created_at.to_rfc3339(),
        "opened_at": s.exchanged_at.map(|t| t.to_rfc3339()),
        "revoked": s.revoked,
    })
}

/// `https://host` when the request came over TLS (directly or, per `X-Forwarded-Proto`,
/// through a proxy), `http://host` otherwise.
fn origin_of(headers: &HeaderMap) -> Option<(bool, String)> {
    let host = headers.get("host")?.to_str().ok()?;
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    Some((
        https,
        format!("{}://{host}", if https { "https" } else { "http" }),
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CreateSession {
    #[serde(default)]
    read_only: bool,
    #[serde(default)]
    event_types: Option<Vec<String>>,
    #[serde(default)]
    expires_in: Option<String>,
}

/// `POST /tenants/{id}/portal-sessions` (admin): a session and its one-time link.
pub async fn create_session(
    State(state): State<AppState>,
    principal: crate::auth::Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
    principal.require_admin()?;
    let tenant = TenantId::parse(&id).map_err(|_| ApiError::not_found("The tenant"))?;
    state
        .store
        .get_tenant(tenant)
        .await
        .map_err(|e| ApiError::from_store(e, "The tenant"))?;
    let bytes = read_body(body, state.config.max_body_bytes).await?;
    let req: CreateSession = if bytes.is_empty() {
        CreateSession::default()
    } else {
        parse_json(&bytes)?
    };
    let expires_in = match &req.expires_in {
        Some(text) => request_duration("expires_in", text).map_err(ApiError::invalid)?,
        None => DEFAULT_EXPIRES_IN,
    };
    if !(MIN_EXPIRES_IN..=MAX_EXPIRES_IN).contains(&expires_in) {
        return Err(ApiError::invalid("`expires_in` must be from 1m to 24h."));
    }
    let event_types = match req.event_types {
        None => None,
        Some(list) if list.is_empty() || list.len() > 100 => {
            return Err(ApiError::invalid(
                "`event_types` must list 1 to 100 event types (entries may end in `.*`), or be left out for all.",
            ))
        }
        Some(list) => {
            for p in &list {
                let pattern = EventPattern::parse(p)
                    .map_err(|e| ApiError::invalid(format!("`event_types`: {e}")))?;
                // Herald's own events tell of every endpoint of the tenant (its URL, why it
                // was disabled): a session that sees only some endpoints cannot offer them.
                let told = [herald_store::WEBHOOK_DISABLED, herald_store::DELIVERY_FAILED];
                if told.iter().any(|t| pattern.matches(t)) {
                    return Err(ApiError::invalid(format!(
                        "`event_types`: {p:?} takes in Herald's own events (webhook.disabled, delivery.failed), which tell of every endpoint of the tenant; a session limited to some types cannot offer them (leave `event_types` out for all)."
                    )));
                }
            }
            Some(list)
        }
    };
    let now = state.clock.now();
    let token = random_token("hpt_");
    let session = PortalSession {
        id: PortalSessionId::generate(),
        tenant,
        token_hash: hash_secret(&token),
        cookie_hash: None,
        csrf_token: random_token("hcsrf_"),
        read_only: req.read_only,
        event_types,
        expires_at: now.plus(expires_in),
        created_at: now,
        exchanged_at: None,
        revoked: false,
    };
    let session = state.store.create_portal_session(session).await?;
    let base = match &state.config.public_url {
        Some(url) => url.as_str().to_owned(),
        None => origin_of(&headers).map(|(_, o)| o).unwrap_or_default(),
    };
    let mut out = session_json(&session);
    out["token"] = json!(token);
    out["url"] = json!(format!("{base}/portal/open?token={token}"));
    Ok((StatusCode::CREATED, Json(out)))
}

fn parse_session_id(text: &str) -> ApiResult<PortalSessionId> {
    PortalSessionId::parse(text).map_err(|_| ApiError::not_found("The portal session"))
}

/// `GET /portal-sessions/{id}` (admin).
pub async fn get_session(
    State(state): State<AppState>,
    principal: crate::auth::Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    principal.require_admin()?;
    let s = state
        .store
        .get_portal_session(parse_session_id(&id)?)
        .await
        .map_err(|e| ApiError::from_store(e, "The portal session"))?;
    Ok(Json(session_json(&s)))
}

/// `DELETE /portal-sessions/{id}` (admin): revoked at once; its cookie opens nothing more.
pub async fn revoke_session(
    State(state): State<AppState>,
    principal: crate::auth::Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    principal.require_admin()?;
    state
        .store
        .revoke_portal_session(parse_session_id(&id)?, state.clock.now())
        .await
        .map_err(|e| ApiError::from_store(e, "The portal session"))?;
    Ok(StatusCode::NO_CONTENT)
}

fn settings_json(s: &PortalSettings) -> Value {
    json!({ "frame_origins": s.frame_origins, "branding": s.branding })
}

/// An origin as CSP `frame-ancestors` takes it: `https://host[:port]` (or `http://` for
/// `localhost` and loopback, for development), nothing else.
fn check_origin(text: &str) -> ApiResult<String> {
    let bad = || {
        ApiError::invalid(format!(
            "`frame_origins`: {text:?} is not an origin like \"https://app.example.com\" (http only for localhost)."
        ))
    };
    let url = url::Url::parse(text).map_err(|_| bad())?;
    let host = url.host_str().ok_or_else(bad)?;
    // Letters, digits, `-` and `.` (or an IP literal): the origin goes into a CSP
    // `frame-ancestors` source, where `*`, `;`, `,` or `'` would mean something else.
    let plain_host = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b));
    if !plain_host {
        return Err(bad());
    }
    let local = matches!(host, "localhost" | "127.0.0.1" | "[::1]");
    let plain = url.path() == "/" && url.query().is_none() && url.fragment().is_none();
    if !plain
        || !url.username().is_empty()
        || !(url.scheme() == "https" || (url.scheme() == "http" && local))
    {
        return Err(bad());
    }
    Ok(url.origin().ascii_serialization())
}

fn check_branding(given: Map<String, Value>) -> ApiResult<Map<String, Value>> {
    for (k, v) in &given {
        let ok = match (k.as_str(), v) {
            ("name", Value::String(s)) => s.chars().count() <= 100,
            ("logo_url", Value::String(s)) => {
                s.len() <= 2048 && url::Url::parse(s).is_ok_and(|u| u.scheme() == "https")
            }
            ("accent", Value::String(s)) => {
                s.len() == 7 && s.starts_with('#') && s[1..].bytes().all(|b| b.is_ascii_hexdigit())
            }
            ("theme", Value::String(s)) => s == "light" || s == "dark",
            _ => false,
        };
        if !ok {
            return Err(ApiError::invalid(format!(
                "`branding.{k}`: branding takes `name` (at most 100 characters), `logo_url` (https), `accent` (#rrggbb) and `theme` (\"light\" or \"dark\")."
            )));
        }
    }
    Ok(given)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutSettings {
    #[serde(default)]
    frame_origins: Vec<String>,
    #[serde(default)]
    branding: Map<String, Value>,
}

/// `GET /tenants/{id}/portal` (admin).
pub async fn get_settings(
    State(state): State<AppState>,
    principal: crate::auth::Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    principal.require_admin()?;
    let tenant = existing_tenant(&state, &id).await?;
    Ok(Json(settings_json(
        &state.store.get_portal_settings(tenant).await?,
    )))
}

/// `PUT /tenants/{id}/portal` (admin): replaced whole.
pub async fn put_settings(
    State(state): State<AppState>,
    principal: crate::auth::Principal,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult<Json<Value>> {
    principal.require_admin()?;
    let tenant = existing_tenant(&state, &id).await?;
    let req: PutSettings = parse_json(&read_body(body, state.config.max_body_bytes).await?)?;
    if req.frame_origins.len() > MAX_FRAME_ORIGINS {
        return Err(ApiError::invalid(format!(
            "`frame_origins` lists at most {MAX_FRAME_ORIGINS} origins."
        )));
    }
    let mut frame_origins = Vec::new();
    for o in &req.frame_origins {
        let o = check_origin(o)?;
        if !frame_origins.contains(&o) {
            frame_origins.push(o);
        }
    }
    let settings = PortalSettings {
        frame_origins,
        branding: check_branding(req.branding)?,
    };
    let saved = state.store.put_portal_settings(tenant, settings).await?;
    Ok(Json(settings_json(&saved)))
}

async fn existing_tenant(state: &AppState, id: &str) -> ApiResult<TenantId> {
    let tenant = TenantId::parse(id).map_err(|_| ApiError::not_found("The tenant"))?;
    state
        .store
        .get_tenant(tenant)
        .await
        .map_err(|e| ApiError::from_store(e, "The tenant"))?;
    Ok(tenant)
}

/// The session the request's cookie names, if it is live.
async fn session_of(state: &AppState, headers: &HeaderMap) -> ApiResult<PortalSession> {
    let gone = || {
        ApiError::unauthorized(
            "This portal session has ended (or never began); ask for a new link.",
        )
    };
    let cookie = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.to_owned())
        .ok_or_else(gone)?;
    // Only what Herald mints is looked up: a junk cookie costs no store read.
    if !minted_shape_with(&cookie, "hpc_") {
        return Err(gone());
    }
    let session = match state
        .store
        .portal_session_by_cookie(hash_secret(&cookie))
        .await
    {
        Ok(s) => s,
        Err(StoreError::NotFound) => return Err(gone()),
        Err(e) => return Err(e.into()),
    };
    if !session.is_live(state.clock.now()) {
        return Err(gone());
    }
    Ok(session)
}

/// The headers that decide where the portal may be shown: in frames of the tenant's listed
/// origins only, and nowhere framed when it lists none (or the session is unknown).
fn framing_headers(origins: &[String]) -> Vec<(axum::http::HeaderName, HeaderValue)> {
    let ancestors = if origins.is_empty() {
        "'none'".to_owned()
    } else {
        origins.join(" ")
    };
    let csp = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
         img-src 'self' https: data:; base-uri 'none'; form-action 'none'; frame-ancestors {ancestors}"
    );
    let mut out = vec![(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_str(&csp).unwrap_or(HeaderValue::from_static("frame-ancestors 'none'")),
    )];
    if origins.is_empty() {
        out.push((X_FRAME_OPTIONS, HeaderValue::from_static("DENY")));
    }
    out
}

async fn framing_for(
    state: &AppState,
    headers: &HeaderMap,
) -> Vec<(axum::http::HeaderName, HeaderValue)> {
    let origins = match session_of(state, headers).await {
        Ok(s) => state
            .store
            .get_portal_settings(s.tenant)
            .await
            .map(|p| p.frame_origins)
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    framing_headers(&origins)
}

fn page(
    body: impl Into<Body>,
    content_type: &'static str,
    framing: Vec<(axum::http::HeaderName, HeaderValue)>,
) -> Response {
    let mut r = (
        [
            (CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body.into(),
    )
        .into_response();
    for (k, v) in framing {
        r.headers_mut().insert(k, v);
    }
    r.headers_mut()
        .insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    r
}

pub async fn index(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let framing = framing_for(&state, &headers).await;
    page(INDEX_HTML, "text/html; charset=utf-8", framing)
}

pub async fn script() -> Response {
    page(
        APP_JS,
        "text/javascript; charset=utf-8",
        framing_headers(&[]),
    )
}

pub async fn stylesheet() -> Response {
    page(APP_CSS, "text/css; charset=utf-8", framing_headers(&[]))
}

#[derive(Deserialize)]
pub struct OpenQuery {
    token: Option<String>,
}

/// Whether `token` has the shape Herald mints: only such a token reaches the store, so a
/// flood of junk links costs nothing.
fn minted_shape(token: &str) -> bool {
    minted_shape_with(token, "hpt_")
}

/// Whether `token` has the shape of what [`random_token`] makes with `prefix`.
fn minted_shape_with(token: &str, prefix: &str) -> bool {
    token
        .strip_prefix(prefix)
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether a request that changes something came from Herald's own page. The browser says
/// so in `Origin` (its host and port must be this one's: behind a TLS proxy the Host says
/// nothing of the scheme) or, where a page's `Referrer-Policy: no-referrer` makes it send
/// `Origin: null`, in `Sec-Fetch-Site: same-origin` (a header no script can set). Any other
/// `Sec-Fetch-Site` is refused whatever `Origin` says. With `public_url` set, an `Origin`
/// of it is Herald's own too (over HTTP/2 there is no `Host` to compare with).
fn from_own_page(headers: &HeaderMap, public_url: Option<&PublicUrl>) -> bool {
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if fetch_site.is_some_and(|s| s != "same-origin") {
        return false;
    }
    let host_of = |o: &str| o.split_once("://").map(|(_, h)| h.to_owned());
    match headers.get("origin").and_then(|v| v.to_str().ok()) {
        // With `public_url` set, it is Herald's origin, scheme and all; without it, the
        // host and port must be this request's.
        Some(o) if o != "null" => match public_url {
            Some(p) => p.as_str() == o,
            None => {
                let own = origin_of(headers).map(|(_, own)| own);
                host_of(o).is_some() && own.as_deref().and_then(host_of) == host_of(o)
            }
        },
        _ => fetch_site == Some("same-origin"),
    }
}

fn expired_page() -> Response {
    let mut r = page(
        "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>Link expired</title>\
         <h1>This link has expired or was already used</h1>\
         <p>Portal links work once and for a short time. Ask for a new one.</p></html>",
        "text/html; charset=utf-8",
        framing_headers(&[]),
    );
    *r.status_mut() = StatusCode::UNAUTHORIZED;
    r
}

/// `GET /portal/open?token=…`: a page whose button opens the session (a POST), so a link
/// scanner that fetches the link spends nothing. Framed only by the tenant's origins (the
/// link is what an API owner's page frames); the token never leaves in a `Referer`.
pub async fn open_page(State(state): State<AppState>, Query(q): Query<OpenQuery>) -> Response {
    let now = state.clock.now();
    let session = match q.token.as_deref() {
        Some(token) if minted_shape(token) => state
            .store
            .portal_session_by_token(hash_secret(token))
            .await
            .ok()
            .filter(|s| s.exchanged_at.is_none() && s.is_live(now)),
        _ => None,
    };
    let (Some(session), Some(token)) = (session, q.token) else {
        return expired_page();
    };
    let origins = state
        .store
        .get_portal_settings(session.tenant)
        .await
        .map(|p| p.frame_origins)
        .unwrap_or_default();
    // The token is 64 hex digits behind `hpt_` (checked above): nothing in it to escape.
    let html = format!(
        "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Open the portal</title><link rel=\"stylesheet\" href=\"/portal/app.css\">\
         <main class=\"open\"><h1>Your webhooks portal</h1>\
         <p>This link opens the portal once, for a short time.</p>\
         <form method=\"post\" action=\"/portal/open\">\
         <input type=\"hidden\" name=\"token\" value=\"{token}\">\
         <button type=\"submit\" class=\"primary\">Open the portal</button></form></main></html>"
    );
    // The one form of Herald's pages: it posts to this origin.
    let framing = framing_headers(&origins)
        .into_iter()
        .map(|(k, v)| match (k == CONTENT_SECURITY_POLICY, v.to_str()) {
            (true, Ok(csp)) => {
                let csp = csp.replace("form-action 'none'", "form-action 'self'");
                (k, HeaderValue::from_str(&csp).unwrap_or(v))
            }
            _ => (k, v),
        })
        .collect();
    page(html, "text/html; charset=utf-8", framing)
}

/// `POST /portal/open` (the link page's form: `token=…`): the one-time token becomes the
/// session cookie, and the browser is sent on to `/portal`. Only from Herald's own page
/// ([`from_own_page`]): another site cannot log a visitor into a session of its choosing.
/// The cookie is `SameSite=Strict`, or, when the tenant lists origins that may frame the
/// portal, `SameSite=None; Secure; Partitioned`: a framed portal's cookie is otherwise
/// never sent (the frame is cross-site), and CHIPS keeps it to the one top-level site that
/// framed it. CSRF then rests on the `X-Herald-CSRF` token and the Origin check of every
/// change ([`admit`]).
pub async fn open(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    if !from_own_page(&headers, state.config.public_url.as_ref()) {
        let mut r = ApiError::forbidden(
            "A portal link is opened from its own page (Origin): follow the link, then press its button.",
        )
        .into_response();
        r.headers_mut()
            .insert("referrer-policy", HeaderValue::from_static("no-referrer"));
        return r;
    }
    let bytes = match read_body(body, 4096).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let token = url::form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned());
    let now = state.clock.now();
    let cookie = random_token("hpc_");
    let opened = match token {
        Some(token) if minted_shape(&token) => {
            state
                .store
                .exchange_portal_token(hash_secret(&token), hash_secret(&cookie), now)
                .await
        }
        _ => Err(StoreError::NotFound),
    };
    let session = match opened {
        Ok(session) => session,
        Err(e) => {
            if !matches!(e, StoreError::NotFound) {
                tracing::error!(error = %e, "opening a portal session failed");
            }
            return expired_page();
        }
    };
    let framed = state
        .store
        .get_portal_settings(session.tenant)
        .await
        .is_ok_and(|p| !p.frame_origins.is_empty());
    let https = origin_of(&headers).is_some_and(|(https, _)| https)
        || state
            .config
            .public_url
            .as_ref()
            .is_some_and(|p| p.as_str().starts_with("https:"));
    let max_age = now.until(session.expires_at).as_secs();
    let same_site = match (framed, https) {
        (true, _) => "; SameSite=None; Secure; Partitioned",
        (false, true) => "; SameSite=Strict; Secure",
        (false, false) => "; SameSite=Strict",
    };
    let set =
        format!("{COOKIE_NAME}={cookie}; Path=/portal; HttpOnly; Max-Age={max_age}{same_site}");
    let mut r = StatusCode::SEE_OTHER.into_response();
    let h = r.headers_mut();
    h.insert(LOCATION, HeaderValue::from_static("/portal"));
    if let Ok(v) = HeaderValue::from_str(&set) {
        h.insert(SET_COOKIE, v);
    }
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    r
}

/// What the portal's page calls: the tenant API it needs, behind [`guard`].
pub fn api(state: AppState) -> axum::Router<AppState> {
    use super::{deliveries, stats, webhooks};
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/session", get(current))
        .route("/event-types", get(event_types))
        .route("/webhooks", post(webhooks::create).get(webhooks::list))
        .route(
            "/webhooks/{id}",
            get(webhooks::get)
                .patch(webhooks::update)
                .delete(webhooks::delete)
                .post(webhooks::custom_method),
        )
        .route("/deliveries", get(deliveries::list))
        .route(
            "/deliveries/{id}",
            get(deliveries::get).post(deliveries::custom_method),
        )
        .route("/stats", get(stats::stats))
        .layer(axum::middleware::from_fn_with_state(state, guard))
}

/// Whether every pattern of `wanted` lies within one of `allowed`.
pub(crate) fn within(allowed: &[String], wanted: &str) -> bool {
    allowed.iter().any(|a| {
        a == "*"
            || a == wanted
            || a.strip_suffix('*').is_some_and(|prefix| {
                prefix.ends_with('.') && wanted.starts_with(prefix) && wanted.len() > prefix.len()
            })
    })
}

/// A limited session's event types as patterns, with Herald's `webhook.test` (every
/// endpoint's own test events are its session's).
pub(crate) fn patterns_with_tests(allowed: &[String]) -> ApiResult<Vec<EventPattern>> {
    allowed
        .iter()
        .map(String::as_str)
        .chain([herald_store::WEBHOOK_TEST])
        .map(|p| {
            EventPattern::parse(p)
                .map_err(|e| ApiError::internal(format!("a session's event type: {e}")))
        })
        .collect()
}

/// Whether a session limited to `allowed` may see and act on this endpoint: every
/// pattern it subscribes to lies within them.
pub(crate) fn offers_webhook(allowed: &[String], w: &herald_store::Webhook) -> bool {
    w.events.iter().all(|p| within(allowed, p.as_str()))
}

/// The tenant's endpoints a session limited to `allowed` sees.
pub(crate) async fn visible_webhooks(
    state: &AppState,
    tenant: Option<TenantId>,
    allowed: &[String],
) -> ApiResult<std::collections::HashSet<herald_core::ids::WebhookId>> {
    let mut visible = std::collections::HashSet::new();
    let mut after = None;
    loop {
        let page = state
            .store
            .list_webhooks(herald_store::WebhookFilter {
                tenant,
                all_tenants: false,
                after,
                limit: 500,
            })
            .await?;
        after = page.last().map(|w| w.id);
        let done = page.len() < 500;
        visible.extend(
            page.iter()
                .filter(|w| offers_webhook(allowed, w))
                .map(|w| w.id),
        );
        if done {
            return Ok(visible);
        }
    }
}

/// In front of `/portal/api/*`: the cookie's session becomes the caller (the tenant, with
/// the session's event types, which the handlers check on every webhook and delivery they
/// load: [`crate::auth::Principal::sees_webhook`]), and a change must carry the CSRF token,
/// come from this origin and be allowed by a read-only session (never).
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match admit(&state, request).await {
        Ok(request) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

async fn admit(state: &AppState, request: Request) -> ApiResult<Request> {
    let (mut parts, body) = request.into_parts();
    let session = session_of(state, &parts.headers).await?;
    let changes = !matches!(parts.method, Method::GET | Method::HEAD);
    if changes {
        let forbidden = |m: &str| ApiError::forbidden(m.to_owned());
        if !from_own_page(&parts.headers, state.config.public_url.as_ref()) {
            return Err(forbidden(
                "Changes through the portal must come from the portal's own page (Origin).",
            ));
        }
        let token = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !herald_core::auth::static_key_matches(token, &session.csrf_token) {
            return Err(forbidden(
                "Changes through the portal need the session's `X-Herald-CSRF` header.",
            ));
        }
        if session.read_only {
            return Err(forbidden("This portal session is read-only."));
        }
    }
    parts.extensions.insert(PortalPrincipal {
        tenant: session.tenant,
        event_types: session.event_types.clone().map(std::sync::Arc::from),
    });
    parts.extensions.insert(session);
    Ok(Request::from_parts(parts, body))
}

/// `GET /portal/api/session`: what the page needs: the tenant, the CSRF token, the limits
/// and the branding.
pub async fn current(
    State(state): State<AppState>,
    axum::Extension(session): axum::Extension<PortalSession>,
) -> ApiResult<Json<Value>> {
    let settings = state.store.get_portal_settings(session.tenant).await?;
    let tenant = state.store.get_tenant(session.tenant).await?;
    let mut out = session_json(&session);
    out["csrf_token"] = json!(session.csrf_token);
    out["tenant_name"] = json!(tenant.name);
    out["branding"] = Value::Object(settings.branding);
    Ok(Json(out))
}

/// `GET /portal/api/event-types`: the registered catalog, within the session's types.
pub async fn event_types(
    State(state): State<AppState>,
    axum::Extension(session): axum::Extension<PortalSession>,
) -> ApiResult<Json<Value>> {
    let types = state.store.list_event_types().await?;
    let list: Vec<Value> = types
        .iter()
        .filter(|t| {
            session
                .event_types
                .as_ref()
                .is_none_or(|allowed| within(allowed, &t.name))
        })
        .map(|t| json!({ "name": t.name, "schema": t.schema }))
        .collect();
    Ok(Json(json!({ "event_types": list, "next_page_token": "" })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_within_the_sessions_types() {
        let allowed = vec!["payment.*".to_owned(), "invoice.paid".to_owned()];
        assert!(within(&allowed, "payment.succeeded"));
        assert!(within(&allowed, "payment.*"));
        assert!(within(&allowed, "payment.card.*"));
        assert!(within(&allowed, "invoice.paid"));
        assert!(!within(&allowed, "invoice.*"));
        assert!(!within(&allowed, "*"));
        assert!(!within(&allowed, "paymentx.a"));
        assert!(within(&["*".to_owned()], "*"));
    }

    #[test]
    fn origins_are_plain_https_origins() {
        assert_eq!(
            check_origin("https://app.example.com").unwrap(),
            "https://app.example.com"
        );
        assert_eq!(
            check_origin("https://app.example.com:8443/").unwrap(),
            "https://app.example.com:8443"
        );
        assert!(check_origin("http://localhost:3000").is_ok());
        for bad in [
            "http://app.example.com",
            "https://app.example.com/path",
            "javascript:alert(1)",
            "*",
            "https://a.com; script-src *",
            "https://*",
            "https://*.example.com",
            "https://a;b.example",
            "https://a,b.example",
            "https://a'b.example",
        ] {
            assert!(check_origin(bad).is_err(), "{bad}");
        }
        assert!(check_origin("https://[::1]:8443").is_ok());
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn own_page_is_herald_s_origin_and_with_public_url_its_scheme_too() {
        use crate::config::FromText;
        let public = PublicUrl::from_text("https://herald.example").unwrap();
        let https_page = headers(&[
            ("host", "herald.example"),
            ("origin", "https://herald.example"),
        ]);
        let http_page = headers(&[
            ("host", "herald.example"),
            ("origin", "http://herald.example"),
        ]);
        assert!(from_own_page(&https_page, Some(&public)));
        assert!(
            !from_own_page(&http_page, Some(&public)),
            "a plain-http page of the host"
        );
        // Without public_url: host and port, as the request came.
        assert!(from_own_page(&https_page, None));
        assert!(!from_own_page(
            &headers(&[
                ("host", "herald.example"),
                ("origin", "https://evil.example")
            ]),
            None
        ));
        assert!(!from_own_page(
            &headers(&[
                ("host", "herald.example"),
                ("origin", "https://herald.example"),
                ("sec-fetch-site", "cross-site")
            ]),
            None
        ));
        assert!(from_own_page(
            &headers(&[
                ("host", "herald.example"),
                ("origin", "null"),
                ("sec-fetch-site", "same-origin")
            ]),
            Some(&public)
        ));
    }
}
