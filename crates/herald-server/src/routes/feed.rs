//! `GET /feed`: a tenant's events in commit order after an opaque cursor, answered as soon
//! as one exists or at the `wait` (a long poll on the store's `events_appended` signal,
//! filtered to the reader's tenant).
//! The long poll is shared with `GET /consumers/{name}/events` ([`super::consumers`]).

use crate::auth::Principal;
use crate::body::page_size;
use crate::config::request_duration;
use crate::error::{ApiError, ApiResult};
use crate::timeout::LONG_POLL_MAX_WAIT;
use crate::AppState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use herald_core::auth::Role;
use herald_core::ids::TenantId;
use herald_core::pattern::EventPattern;
use herald_store::{FeedPage, FeedPosition, FeedQuery};
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::sync::broadcast;

/// Patterns one `types` may hold.
const MAX_TYPES: usize = 50;
/// While committed events wait for an older transaction (PostgreSQL), a long poll reads
/// again after this, doubling up to [`HELD_BACK_MAX`]: no commit signal may come for them.
const HELD_BACK_FIRST: Duration = Duration::from_millis(10);
const HELD_BACK_MAX: Duration = Duration::from_millis(500);

#[derive(Deserialize)]
pub struct FeedParams {
    after: Option<String>,
    wait: Option<String>,
    types: Option<String>,
    page_size: Option<u32>,
    tenant: Option<TenantId>,
}

/// The tenant whose feed a caller reads: a tenant key its own, an admin the `tenant` it
/// names (or, naming none, the events of no tenant); a worker key none.
pub fn feed_tenant(principal: &Principal, asked: Option<TenantId>) -> ApiResult<Option<TenantId>> {
    principal.require_reader()?;
    Ok(match principal.role {
        Role::Tenant(t) => Some(t),
        _ => asked,
    })
}

/// `wait` as a duration, at most the long-poll maximum (60 s); none is zero.
pub fn parse_wait(wait: Option<&str>) -> ApiResult<Duration> {
    match wait.filter(|w| !w.is_empty()) {
        Some(w) => Ok(request_duration("wait", w)
            .map_err(ApiError::invalid)?
            .min(LONG_POLL_MAX_WAIT)),
        None => Ok(Duration::ZERO),
    }
}

/// `types=a.b,c.*`: event-type patterns as webhooks take them.
pub fn parse_types(types: Option<&str>) -> ApiResult<Vec<EventPattern>> {
    let Some(text) = types.filter(|t| !t.is_empty()) else {
        return Ok(Vec::new());
    };
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    if parts.len() > MAX_TYPES {
        return Err(ApiError::invalid(format!(
            "`types` takes at most {MAX_TYPES} patterns."
        )));
    }
    parts
        .into_iter()
        .map(|p| EventPattern::parse(p).map_err(|e| ApiError::invalid(format!("`types`: {e}"))))
        .collect()
}

pub fn parse_cursor(field: &str, text: Option<&str>) -> ApiResult<FeedPosition> {
    FeedPosition::parse(text.unwrap_or_default())
        .map_err(|e| ApiError::invalid(format!("`{field}`: {e}")))
}

/// The node's feed long polls: at most `feed.max_long_polls` wait at once, and one tenant
/// holds at most half of them (at least one), so one tenant's idle readers cannot take
/// every slot from the others.
pub fn long_polls(max: usize) -> crate::slots::TenantSlots {
    crate::slots::TenantSlots::new(max, max / 2)
}

/// Reads the feed; with nothing to answer and a `wait`, waits for events to be appended
/// (on any node) and reads again, until some match or the wait is over. At most
/// `feed.max_long_polls` wait at once on a node; one more is 503 `OVERLOADED`.
pub async fn long_poll(state: &AppState, query: FeedQuery, wait: Duration) -> ApiResult<FeedPage> {
    // Subscribed before the first read: an append committed in between is not missed.
    let mut appended = state.store.signals().events_appended.subscribe();
    let mut page = state.store.read_feed(query.clone()).await?;
    if !page.events.is_empty() || wait.is_zero() {
        return Ok(page);
    }
    let _permit = state.long_polls.try_take(query.tenant).ok_or_else(|| {
        ApiError::overloaded(format!(
            "This node already holds {} feed long polls (`feed.max_long_polls`), or this tenant half of them; retry after the Retry-After delay, or read without `wait`.",
            state.config.feed.max_long_polls
        ))
    })?;
    let deadline = tokio::time::Instant::now() + wait;
    let mut held_back = HELD_BACK_FIRST;
    let mut signal_open = true;
    loop {
        // Read again when this tenant's events are appended, when the signal may have
        // dropped some (it lagged), at the end of the wait, or soon while events are held back.
        let read_at = if page.held_back {
            deadline.min(tokio::time::Instant::now() + held_back)
        } else {
            deadline
        };
        loop {
            tokio::select! {
                to = appended.recv(), if signal_open => match to {
                    Ok(to) if to.concerns(query.tenant) => break,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    // The store dropped its signals: only the timer is left.
                    Err(broadcast::error::RecvError::Closed) => signal_open = false,
                },
                _ = tokio::time::sleep_until(read_at) => break,
                _ = state.shutdown.cancelled() => return Ok(FeedPage::default()),
            }
        }
        page = state.store.read_feed(query.clone()).await?;
        if !page.events.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(page);
        }
        held_back = if page.held_back {
            (held_back * 2).min(HELD_BACK_MAX)
        } else {
            HELD_BACK_FIRST
        };
    }
}

/// `{"events":[…],"next_cursor"}`: `next_cursor` is where the next read starts (after the
/// last event, or after all that was looked at when the page is not full; never behind
/// `after`), so a client always loops on it.
pub fn page_json(page: &FeedPage, after: FeedPosition) -> Value {
    let next = page.next(after);
    let events: Vec<Value> = page.events.iter().map(|(_, e)| e.to_resource()).collect();
    json!({ "events": events, "next_cursor": next.cursor() })
}

pub async fn read(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<FeedParams>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    principal.require_reader()?;
    let Query(q) =
        query.map_err(|e| ApiError::invalid(format!("Bad query string: {}", e.body_text())))?;
    let tenant = feed_tenant(&principal, q.tenant)?;
    let after = parse_cursor("after", q.after.as_deref())?;
    let wait = parse_wait(q.wait.as_deref())?;
    let query = FeedQuery {
        tenant,
        after,
        types: parse_types(q.types.as_deref())?,
        limit: page_size(q.page_size)?,
    };
    let page = long_poll(&state, query, wait).await?;
    Ok(Json(page_json(&page, after)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn one_tenant_holds_at_most_half_of_the_long_polls() {
        let polls = Arc::new(long_polls(4));
        let (a, b) = (Some(TenantId::generate()), Some(TenantId::generate()));
        let a1 = polls.try_take(a).unwrap();
        let _a2 = polls.try_take(a).unwrap();
        assert!(polls.try_take(a).is_none(), "a's half is taken");
        let _b1 = polls.try_take(b).unwrap();
        let _b2 = polls.try_take(b).unwrap();
        assert!(polls.try_take(None).is_none(), "the node's four are taken");
        drop(a1);
        assert!(polls.try_take(b).is_none(), "b still holds its half");
        assert!(polls.try_take(a).is_some(), "a's slot came back");
        // A node of one slot still serves one long poll.
        let one = Arc::new(long_polls(1));
        assert!(one.try_take(a).is_some());
    }
}
