//! Webhook subscriptions: register, read, list, patch, delete, enable/disable,
//! `:rotateSecret` (both secrets sign during a grace period) and `:replay`.
//! The signing secret appears only in the answers to creation and rotation.

use super::{list_params, Listing};
use super::{next_page_token, split_custom};
use crate::auth::Principal;
use crate::body::{parse_json, parse_json_or_default, read_body};
use crate::config::request_duration;
use crate::error::{ApiError, ApiResult};
use crate::AppState;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use herald_core::auth::Role;
use herald_core::ids::{TenantId, WebhookId};
use herald_core::pattern::EventPattern;
use herald_core::payload_filter::PayloadFilter;
use herald_core::retry::RetrySchedule;
use herald_core::signing::{generate_secret, public_key, SignatureFormat};
use herald_core::webhook::{CustomHeaders, DeliveryOptions, Ordering, MAX_RATE_LIMIT};
use herald_core::Timestamp;
use herald_store::{DeliveryStatus, Replay, Rotation, Webhook, WebhookChange, WebhookFilter};
use serde::Deserialize;
use serde_json::{json, Value};

pub fn webhook_json(w: &Webhook) -> Value {
    json!({
        "id": w.id,
        "tenant": w.tenant,
        "url": w.url,
        "events": w.events.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
        "format": w.format.as_str(),
        "signing_secret_version": w.secret_version,
        "public_key": w.format.is_asymmetric().then(|| public_key(&w.secret)).flatten(),
        "previous_public_key": w.format.is_asymmetric().then(|| {
            w.previous_secret.as_ref().and_then(|(s, _)| public_key(s))
        }).flatten(),
        "schedule": w.schedule.as_ref().map(|s| s.waits().iter().map(|d| herald_core::duration::format(*d)).collect::<Vec<_>>()),
        "max_concurrency": w.max_concurrency,
        "ordering": w.ordering.as_str(),
        "headers": w.options.headers.iter().map(|(k, v)| (k.to_owned(), json!(v))).collect::<serde_json::Map<String, Value>>(),
        "filter": w.options.filter.as_ref().map(|f| f.as_json()),
        "rate_limit": w.options.rate_limit,
        "disabled": w.disabled,
        "disabled_reason": w.disabled_reason,
        "description": w.description,
        "created_at": w.created_at.to_rfc3339(),
        "updated_at": w.updated_at.to_rfc3339(),
    })
}

fn parse_webhook_id(text: &str) -> ApiResult<WebhookId> {
    WebhookId::parse(text).map_err(|_| ApiError::not_found("The webhook"))
}

async fn visible_webhook(
    state: &AppState,
    principal: &Principal,
    id: WebhookId,
) -> ApiResult<Webhook> {
    principal.require_reader()?;
    let w = state
        .store
        .get_webhook(id)
        .await
        .map_err(|e| ApiError::from_store(e, "The webhook"))?;
    if !principal.sees_webhook(&w) {
        return Err(ApiError::not_found("The webhook"));
    }
    Ok(w)
}

/// The longest a rotated-out secret keeps signing.
const MAX_ROTATION_GRACE: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);
const MAX_URL_BYTES: usize = 2048;
const MAX_DESCRIPTION_CHARS: usize = 1024;

fn check_description(text: Option<String>) -> ApiResult<Option<String>> {
    match text {
        Some(t) if t.chars().count() > MAX_DESCRIPTION_CHARS => Err(ApiError::invalid(format!(
            "`description` must be at most {MAX_DESCRIPTION_CHARS} characters."
        ))),
        other => Ok(other),
    }
}

async fn check_url(state: &AppState, url: &str) -> ApiResult<String> {
    if url.len() > MAX_URL_BYTES {
        return Err(ApiError::invalid(format!(
            "`url` must be at most {MAX_URL_BYTES} bytes."
        )));
    }
    herald_dispatch::ssrf::check_destination(url, state.config.webhooks.allow_private_destinations)
        .await
        .map(|u| u.to_string())
        .map_err(|e| ApiError::invalid(format!("`url`: {e}")))
}

fn parse_patterns(events: &[String]) -> ApiResult<Vec<EventPattern>> {
    if events.is_empty() || events.len() > 100 {
        return Err(ApiError::invalid(
            "`events` must list 1 to 100 event types (entries may end in `.*`).",
        ));
    }
    events
        .iter()
        .map(|e| {
            EventPattern::parse(e).map_err(|err| ApiError::invalid(format!("`events`: {err}")))
        })
        .collect()
}

fn parse_schedule(schedule: Option<Vec<String>>) -> ApiResult<Option<RetrySchedule>> {
    schedule
        .map(|waits| {
            let waits = waits
                .iter()
                .map(|w| request_duration("schedule", w).map_err(ApiError::invalid))
                .collect::<ApiResult<Vec<_>>>()?;
            RetrySchedule::new(waits).map_err(|e| ApiError::invalid(format!("`schedule`: {e}")))
        })
        .transpose()
}

fn check_concurrency(n: Option<u32>) -> ApiResult<Option<u32>> {
    match n {
        Some(0) => Err(ApiError::invalid("`max_concurrency` must be at least 1.")),
        Some(n) if n > 1000 => Err(ApiError::invalid("`max_concurrency` must be at most 1000.")),
        other => Ok(other),
    }
}

/// `headers` as sent: an object of header name to string value.
fn parse_headers(given: Option<Value>) -> ApiResult<Option<CustomHeaders>> {
    let Some(given) = given else {
        return Ok(None);
    };
    let Value::Object(map) = given else {
        return Err(ApiError::invalid(
            "`headers` must be an object of header name to string value.",
        ));
    };
    let mut pairs = Vec::with_capacity(map.len());
    for (name, value) in &map {
        let Value::String(value) = value else {
            return Err(ApiError::invalid(format!(
                "`headers`: the value of {name:?} must be a string."
            )));
        };
        pairs.push((name.as_str(), value.as_str()));
    }
    CustomHeaders::parse(pairs)
        .map(Some)
        .map_err(|e| ApiError::invalid(format!("`headers`: {e}.")))
}

fn parse_filter(given: Value) -> ApiResult<PayloadFilter> {
    PayloadFilter::parse(&given).map_err(|e| {
        ApiError::invalid(format!(
            "{e}. A filter is an object of JSON pointers into the event body and conditions (a value, {{\"$in\": [..]}}, {{\"$exists\": bool}}), combined with \"$and\"/\"$or\" (see docs/api.md, \"Payload filters\")."
        ))
    })
}

fn check_rate_limit(n: Option<u32>) -> ApiResult<Option<u32>> {
    match n {
        Some(0) => Err(ApiError::invalid(
            "`rate_limit` must be at least 1 (delivery per second).",
        )),
        Some(n) if n > MAX_RATE_LIMIT => Err(ApiError::invalid(format!(
            "`rate_limit` must be at most {MAX_RATE_LIMIT} deliveries per second."
        ))),
        other => Ok(other),
    }
}

/// A field a `PATCH` may set, leave alone (absent) or clear (`null`).
fn clearable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateWebhook {
    url: String,
    events: Vec<String>,
    #[serde(default)]
    signing_secret_version: Option<u32>,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    tenant: Option<TenantId>,
    #[serde(default)]
    schedule: Option<Vec<String>>,
    #[serde(default)]
    max_concurrency: Option<u32>,
    #[serde(default)]
    ordering: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    headers: Option<Value>,
    #[serde(default)]
    filter: Option<Value>,
    #[serde(default)]
    rate_limit: Option<u32>,
}

fn parse_ordering(text: Option<&str>) -> ApiResult<Option<Ordering>> {
    text.map(|t| {
        Ordering::parse(t).ok_or_else(|| {
            ApiError::invalid(format!(
                "`ordering` must be \"none\" or \"key\", not {t:?}."
            ))
        })
    })
    .transpose()
}

fn parse_format(text: Option<&str>) -> ApiResult<SignatureFormat> {
    match text {
        None => Ok(SignatureFormat::Herald),
        Some(t) => SignatureFormat::parse(t).ok_or_else(|| {
            ApiError::invalid(format!(
                "`format` must be \"herald\", \"standard-webhooks\" or \"standard-webhooks-ed25519\", not {t:?}."
            ))
        }),
    }
}

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    body: Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
    principal.require_reader()?;
    let req: CreateWebhook = parse_json(&read_body(body, state.config.max_body_bytes).await?)?;
    let tenant = match principal.role {
        Role::Tenant(t) => {
            if req.tenant.is_some_and(|r| r != t) {
                return Err(ApiError::invalid(
                    "A tenant key registers webhooks for its own tenant only; leave out `tenant`.",
                ));
            }
            Some(t)
        }
        _ => req.tenant,
    };
    if let Some(t) = tenant {
        super::events::ensure_tenant(&state, t).await?;
    }
    let events = parse_patterns(&req.events)?;
    for p in &req.events {
        principal.may_subscribe(p)?;
    }
    let format = parse_format(req.format.as_deref())?;
    let url = check_url(&state, &req.url).await?;
    let secret_version = req.signing_secret_version.unwrap_or(1);
    if secret_version == 0 {
        return Err(ApiError::invalid("`signing_secret_version` starts at 1."));
    }
    let now = state.clock.now();
    let webhook = Webhook {
        id: WebhookId::generate(),
        tenant,
        url,
        events,
        format,
        secret: generate_secret(format),
        secret_version,
        previous_secret: None,
        schedule: parse_schedule(req.schedule)?,
        max_concurrency: check_concurrency(req.max_concurrency)?,
        ordering: parse_ordering(req.ordering.as_deref())?.unwrap_or_default(),
        options: DeliveryOptions {
            headers: parse_headers(req.headers)?.unwrap_or_default(),
            filter: req.filter.map(parse_filter).transpose()?,
            rate_limit: check_rate_limit(req.rate_limit)?,
        },
        disabled: false,
        disabled_reason: None,
        description: check_description(req.description)?,
        created_at: now,
        updated_at: now,
    };
    // The cap is checked in the store's write, so two creates at once cannot both pass it.
    let cap = state.config.webhooks.max_per_tenant;
    let webhook = match state.store.create_webhook_capped(webhook, cap).await {
        Err(herald_store::StoreError::LimitReached) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "LIMIT_REACHED",
                format!(
                    "This tenant already has {cap} webhooks, the most `webhooks.max_per_tenant` allows; delete one before registering another. Nothing was created."
                ),
            ))
        }
        other => other?,
    };
    let mut out = webhook_json(&webhook);
    if !webhook.format.is_asymmetric() {
        // An ed25519 private key is never shown: receivers verify with `public_key`.
        out["signing_secret"] = json!(webhook.secret);
    }
    Ok((StatusCode::CREATED, Json(out)))
}

pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let w = visible_webhook(&state, &principal, parse_webhook_id(&id)?).await?;
    Ok(Json(webhook_json(&w)))
}

#[derive(Deserialize)]
pub struct ListQuery {
    tenant: Option<TenantId>,
    page_size: Option<u32>,
    page_token: Option<String>,
}

list_params!(ListQuery);

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Listing {
        size,
        tenant,
        token: after,
        ..
    } = Listing::read(&principal, query, WebhookId::parse)?;
    // An admin that names no tenant lists every tenant's webhooks.
    let all_tenants = tenant.is_none() && !matches!(principal.role, Role::Tenant(_));
    // A session limited to some event types lists only the endpoints within them: pages
    // are read on until one is full of those (a tenant has at most `max_per_tenant`), so
    // neither a page nor its `next_page_token` names an endpoint beyond them.
    let mut hooks = Vec::new();
    let mut from = after;
    loop {
        let page = state
            .store
            .list_webhooks(WebhookFilter {
                tenant,
                all_tenants,
                after: from,
                limit: size + 1,
            })
            .await?;
        let done = page.len() <= size as usize;
        from = page.last().map(|w| w.id);
        hooks.extend(page.into_iter().filter(|w| principal.sees_webhook(w)));
        if done || hooks.len() > size as usize || principal.event_types.is_none() {
            break;
        }
    }
    let token = next_page_token(&mut hooks, size, |w| w.id.to_string());
    Ok(Json(
        json!({ "webhooks": hooks.iter().map(webhook_json).collect::<Vec<_>>(), "next_page_token": token }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchWebhook {
    url: Option<String>,
    events: Option<Vec<String>>,
    format: Option<String>,
    disabled: Option<bool>,
    description: Option<String>,
    schedule: Option<Vec<String>>,
    max_concurrency: Option<u32>,
    ordering: Option<String>,
    headers: Option<Value>,
    #[serde(default, deserialize_with = "clearable")]
    filter: Option<Option<Value>>,
    #[serde(default, deserialize_with = "clearable")]
    rate_limit: Option<Option<u32>>,
}

pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult<Json<Value>> {
    let w = visible_webhook(&state, &principal, parse_webhook_id(&id)?).await?;
    let req: PatchWebhook = parse_json(&read_body(body, state.config.max_body_bytes).await?)?;
    for p in req.events.iter().flatten() {
        principal.may_subscribe(p)?;
    }
    if let Some(format) = req.format {
        // A webhook's format never changes, so the one read above is the stored one.
        let format = parse_format(Some(&format))?;
        if format != w.format {
            // Secrets of the two formats differ in shape; a format change needs a new one.
            return Err(ApiError::invalid(
                "`format` cannot change after creation; register a new webhook.",
            ));
        }
    }
    if req.url.is_some() || req.disabled == Some(false) {
        owes_only_its_sessions_types(&state, &principal, &w).await?;
    }
    let change = WebhookChange {
        url: match req.url {
            Some(url) => Some(check_url(&state, &url).await?),
            None => None,
        },
        events: req.events.as_deref().map(parse_patterns).transpose()?,
        disabled: req.disabled,
        description: check_description(req.description)?,
        schedule: parse_schedule(req.schedule)?,
        max_concurrency: check_concurrency(req.max_concurrency)?,
        ordering: parse_ordering(req.ordering.as_deref())?,
        headers: parse_headers(req.headers)?,
        filter: req
            .filter
            .map(|f| f.map(parse_filter).transpose())
            .transpose()?,
        rate_limit: req.rate_limit.map(check_rate_limit).transpose()?,
        ..WebhookChange::default()
    };
    let w = change_webhook(&state, w.id, change, state.clock.now()).await?;
    Ok(Json(webhook_json(&w)))
}

/// Applies `change` in the store's write; a webhook deleted meanwhile is 404.
async fn change_webhook(
    state: &AppState,
    id: WebhookId,
    change: WebhookChange,
    now: Timestamp,
) -> ApiResult<Webhook> {
    state
        .store
        .update_webhook(id, change, now)
        .await
        .map_err(|e| ApiError::from_store(e, "The webhook"))
}

pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let w = visible_webhook(&state, &principal, parse_webhook_id(&id)?).await?;
    state
        .store
        .delete_webhook(w.id, state.clock.now())
        .await
        .map_err(|e| ApiError::from_store(e, "The webhook"))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /webhooks/{id}:rotateSecret | :replay | :enable | :disable`.
pub async fn custom_method(
    State(state): State<AppState>,
    principal: Principal,
    Path(segment): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    let (id, method) = split_custom(&segment);
    let w = visible_webhook(&state, &principal, parse_webhook_id(id)?).await?;
    let bytes = read_body(body, state.config.max_body_bytes).await?;
    match method {
        Some("rotateSecret") => rotate(&state, w, &bytes).await,
        Some("replay") => replay(&state, &principal, w, &bytes).await,
        Some("test") => send_test(&state, &principal, w, &bytes).await,
        Some(m @ ("enable" | "disable")) => {
            if m == "enable" {
                owes_only_its_sessions_types(&state, &principal, &w).await?;
            }
            let change = WebhookChange {
                disabled: Some(m == "disable"),
                ..WebhookChange::default()
            };
            let w = change_webhook(&state, w.id, change, state.clock.now()).await?;
            Ok(Json(webhook_json(&w)).into_response())
        }
        _ => Err(ApiError::not_found("No such webhook method")),
    }
}

/// A session limited to some event types may not point an endpoint elsewhere, or start it
/// again, while the endpoint still owes deliveries of other types (made before it was
/// narrowed into the session's types): those are its tenant's, and would go where the
/// session says.
async fn owes_only_its_sessions_types(
    state: &AppState,
    principal: &Principal,
    w: &Webhook,
) -> ApiResult<()> {
    let Some(allowed) = principal.event_types.as_deref() else {
        return Ok(());
    };
    let foreign = state
        .store
        .list_deliveries(herald_store::DeliveryFilter {
            tenant: w.tenant,
            webhook: Some(w.id),
            webhooks_only: true,
            status: Some(DeliveryStatus::Pending),
            event_types_out: Some(super::portal::patterns_with_tests(allowed)?),
            limit: 1,
            ..Default::default()
        })
        .await?;
    if foreign.is_empty() {
        Ok(())
    } else {
        Err(ApiError::conflict(
            "PENDING_BEYOND_SESSION",
            "This endpoint still has pending deliveries of event types beyond this portal session's; its URL cannot change, nor can it be enabled, from here until they are done. Nothing was changed.",
        ))
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TestBody {
    event_type: Option<String>,
}

/// `:test`: a `webhook.test` event for this webhook alone (fan-out sends it nowhere else,
/// whatever the webhook subscribes to or filters), whose `data` names the webhook and, when
/// asked for a registered event type, that type and the first of its schema's `examples`.
async fn send_test(
    state: &AppState,
    principal: &Principal,
    w: Webhook,
    body: &[u8],
) -> ApiResult<Response> {
    let req: TestBody = parse_json_or_default(body)?;
    let example = match &req.event_type {
        None => Value::Null,
        Some(name) => {
            principal.may_subscribe(name)?;
            let types = state.store.list_event_types().await?;
            let t = types.iter().find(|t| &t.name == name).ok_or_else(|| {
                ApiError::invalid(format!(
                    "`event_type`: {name:?} is not a registered event type."
                ))
            })?;
            t.schema
                .get("examples")
                .and_then(|e| e.get(0))
                .cloned()
                .unwrap_or(Value::Null)
        }
    };
    let now = state.clock.now();
    let id = herald_core::ids::EventId::generate();
    let event = herald_store::NewEvent {
        id,
        tenant: w.tenant,
        event_type: herald_store::WEBHOOK_TEST.into(),
        key: None,
        data: json!({ "webhook": w.id, "event_type": req.event_type, "example": example }),
        created_at: now,
        request_hash: id.to_string(),
    };
    let stored = state.store.insert_event(event, None).await?.into_inner();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "webhook": w.id, "event": stored.id })),
    )
        .into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    grace: Option<String>,
}

async fn rotate(state: &AppState, w: Webhook, body: &[u8]) -> ApiResult<Response> {
    let req: RotateBody = parse_json_or_default(body)?;
    let grace = match req.grace {
        Some(g) => request_duration("grace", &g).map_err(ApiError::invalid)?,
        None => state.config.webhooks.rotation_grace,
    };
    if grace > MAX_ROTATION_GRACE {
        // The old secret may be the leaked one: it must stop signing in bounded time.
        return Err(ApiError::invalid("`grace` must be at most 30d."));
    }
    let now = state.clock.now();
    let change = WebhookChange {
        rotate: Some(Rotation {
            secret: generate_secret(w.format),
            grace_until: (!grace.is_zero()).then(|| now.plus(grace)),
        }),
        ..WebhookChange::default()
    };
    let w = change_webhook(state, w.id, change, now).await?;
    let mut out = webhook_json(&w);
    if !w.format.is_asymmetric() {
        out["signing_secret"] = json!(w.secret);
    }
    out["previous_secret_expires_at"] =
        json!(w.previous_secret.as_ref().map(|(_, t)| t.to_rfc3339()));
    Ok(Json(out).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    since: Option<String>,
    until: Option<String>,
    status: Option<String>,
}

fn parse_time(field: &str, text: Option<&str>, default: Timestamp) -> ApiResult<Timestamp> {
    match text {
        None => Ok(default),
        Some(t) => Timestamp::parse_rfc3339(t).ok_or_else(|| {
            ApiError::invalid(format!(
                "`{field}` must be an RFC 3339 time like 2026-04-10T15:20:00Z."
            ))
        }),
    }
}

/// Deliveries one replay write looks at: a short write, whatever the range holds.
const REPLAY_BATCH: u32 = 500;
/// Replays this node continues in the background at once; one more is answered 503.
const BACKGROUND_REPLAYS: usize = 16;
/// Of those, at most this many for one tenant (or the tenantless webhooks together), so
/// one tenant's replays never leave another's answered 503.
const TENANT_REPLAYS: usize = 4;

/// The node's replay slots: [`BACKGROUND_REPLAYS`], at most [`TENANT_REPLAYS`] per tenant.
pub(crate) fn replay_slots() -> crate::slots::TenantSlots {
    crate::slots::TenantSlots::new(BACKGROUND_REPLAYS, TENANT_REPLAYS)
}

/// Replays in batches of [`REPLAY_BATCH`], each one short write: the first in the
/// request, the rest (if any) in a background task, so the answer never waits for a
/// large range and the writer is never held by one.
async fn replay(
    state: &AppState,
    principal: &Principal,
    w: Webhook,
    body: &[u8],
) -> ApiResult<Response> {
    let req: ReplayBody = parse_json_or_default(body)?;
    let now = state.clock.now();
    let since = parse_time("since", req.since.as_deref(), Timestamp(0))?;
    let until = parse_time(
        "until",
        req.until.as_deref(),
        now.plus(std::time::Duration::from_millis(1)),
    )?;
    if since >= until {
        return Err(ApiError::invalid("`since` must be before `until`."));
    }
    let status = match req.status.as_deref() {
        None | Some("all") => None,
        Some(s) => Some(DeliveryStatus::parse(s).ok_or_else(|| {
            ApiError::invalid(
                "`status` must be \"failed\", \"succeeded\", \"pending\", \"skipped\" or \"all\".",
            )
        })?),
    };
    // Taken before anything is replayed, so a refusal changes nothing.
    let permit = state.replays.try_take(w.tenant).ok_or_else(|| {
        ApiError::overloaded(format!(
            "{BACKGROUND_REPLAYS} replays are already running on this node, or {TENANT_REPLAYS} of this tenant's; nothing was replayed. Retry after the Retry-After delay."
        ))
    })?;
    // A session limited to some event types replays only deliveries of those (and the
    // webhook's test events), whatever else the webhook once received.
    let event_types = principal
        .event_types
        .as_deref()
        .map(super::portal::patterns_with_tests)
        .transpose()?;
    let request = Replay {
        webhook: w.id,
        since,
        until,
        status,
        event_types,
        now,
        after: None,
        limit: REPLAY_BATCH,
    };
    let first = state
        .store
        .replay(request.clone())
        .await
        .map_err(|e| ApiError::from_store(e, "The webhook"))?;
    if let Some(after) = first.next {
        let state = state.clone();
        tokio::spawn(async move {
            let _permit = permit;
            replay_rest(&state, request, after, first.replayed).await;
        });
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "webhook": w.id, "replayed": first.replayed, "done": first.next.is_none() })),
    )
        .into_response())
}

/// The batches of a replay after the first, until the range is done, the webhook is
/// deleted or Herald stops. Between batches it pauses at least as long as the batch
/// took, so a replay takes at most about half of the store's writer.
async fn replay_rest(
    state: &AppState,
    mut request: Replay,
    mut after: herald_store::ReplayCursor,
    mut replayed: u64,
) {
    let webhook = request.webhook;
    let mut failures = 0u32;
    loop {
        request.after = Some(after);
        request.now = state.clock.now();
        let started = std::time::Instant::now();
        let mut pause = std::time::Duration::from_secs(1);
        match state.store.replay(request.clone()).await {
            Ok(batch) => {
                failures = 0;
                replayed += batch.replayed;
                match batch.next {
                    Some(next) => after = next,
                    None => {
                        tracing::info!(%webhook, replayed, "replay done");
                        return;
                    }
                }
                pause = started.elapsed().max(std::time::Duration::from_millis(10));
            }
            Err(herald_store::StoreError::NotFound) => {
                tracing::info!(%webhook, replayed, "the webhook was deleted; replay stopped");
                return;
            }
            // A full store queue: wait and take the same batch again, however long it lasts.
            Err(herald_store::StoreError::Overloaded) => {}
            Err(e) => {
                failures += 1;
                if failures >= 5 {
                    tracing::error!(%webhook, replayed, error = %e, "replay stopped after repeated store failures; replay the rest again");
                    return;
                }
                tracing::warn!(%webhook, error = %e, "a replay batch failed; retrying");
            }
        }
        tokio::select! {
            _ = state.shutdown.cancelled() => {
                tracing::warn!(%webhook, replayed, "Herald is stopping: replay stopped before the end of its range; replay the rest again");
                return;
            }
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_tenant_holds_at_most_its_share_of_the_replays() {
        let replays = std::sync::Arc::new(replay_slots());
        let (a, b) = (Some(TenantId::generate()), Some(TenantId::generate()));
        let held: Vec<_> = (0..TENANT_REPLAYS)
            .map(|_| replays.try_take(a).expect("within the share"))
            .collect();
        assert!(replays.try_take(a).is_none(), "past the tenant's share");
        let other = replays.try_take(b).expect("another tenant is not held up");
        drop(held);
        assert!(replays.try_take(a).is_some(), "given back when done");
        drop(other);
        assert_eq!(replays.tenants_holding(), 0);
    }
}
