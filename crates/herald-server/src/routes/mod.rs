//! The route table: one module per resource. Custom methods (`:cancel`, `:claim`, …)
//! share their resource's path and are told apart by the suffix after `:`.

pub mod consumers;
pub mod contract;
pub mod dashboard;
pub mod deliveries;
pub mod event_types;
pub mod events;
pub mod feed;
pub mod health;
pub mod operations;
pub mod portal;
pub mod stats;
pub mod tenants;
pub mod webhooks;
pub mod workers;

use crate::auth::Principal;
use crate::body::page_size;
use crate::error::{ApiError, ApiResult};
use crate::AppState;
use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use axum::routing::{delete, get, post};
use axum::Router;
use herald_core::auth::Role;
use herald_core::ids::TenantId;

pub fn router(state: AppState) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/openapi.json", get(contract::openapi))
        .route("/asyncapi.json", get(contract::asyncapi))
        .route("/metrics", get(crate::telemetry::metrics))
        .route("/stats", get(stats::stats))
        .route("/dashboard", get(dashboard::index))
        .route("/dashboard/", get(dashboard::redirect_slash))
        .route("/dashboard/app.js", get(dashboard::script))
        .route("/dashboard/app.css", get(dashboard::stylesheet))
        .route("/tenants", post(tenants::create_tenant))
        .route("/tenants/{id}", get(tenants::get_tenant))
        .route("/tenants/{id}/keys", post(tenants::create_tenant_key))
        .route(
            "/tenants/{id}/portal-sessions",
            post(portal::create_session),
        )
        .route(
            "/tenants/{id}/portal",
            get(portal::get_settings).put(portal::put_settings),
        )
        .route(
            "/portal-sessions/{id}",
            get(portal::get_session).delete(portal::revoke_session),
        )
        .route("/portal", get(portal::index))
        .route("/portal/app.js", get(portal::script))
        .route("/portal/app.css", get(portal::stylesheet))
        .route("/portal/open", get(portal::open_page).post(portal::open))
        .nest("/portal/api", portal::api(state.clone()))
        .route("/keys", post(tenants::create_key))
        .route("/keys/{id}", delete(tenants::revoke_key))
        .route(
            "/operations",
            post(operations::create).get(operations::list),
        )
        .route("/operations:claim", post(workers::claim))
        .route(
            "/operations/{id}",
            get(operations::get)
                .delete(operations::delete)
                .post(operations::custom_method),
        )
        .route("/events", post(events::create).get(events::list))
        .route("/events/{id}", get(events::get))
        .route("/feed", get(feed::read))
        .route("/consumers", post(consumers::create).get(consumers::list))
        .route(
            "/consumers/{name}",
            get(consumers::get)
                .delete(consumers::delete)
                .post(consumers::custom_method),
        )
        .route("/consumers/{name}/events", get(consumers::events))
        .route("/event-types", get(event_types::list))
        .route("/event-types/{name}", axum::routing::put(event_types::put))
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
        );
    for op_type in &state.config.operation_types {
        if let Some(trigger) = &op_type.trigger {
            let name = op_type.name.clone();
            router = router.route(
                trigger.path(),
                post(
                    move |axum::extract::State(state): axum::extract::State<AppState>,
                          principal: crate::auth::Principal,
                          request: axum::extract::Request| {
                        operations::trigger(state, principal, name.clone(), request)
                    },
                ),
            );
        }
    }
    router
        .fallback(|| async { ApiError::not_found("No such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "This method is not allowed on this path.",
            )
        })
        // Inside the request tracking, so a timed-out request is counted and logged.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::timeout::enforce,
        ))
        .layer(axum::middleware::from_fn(crate::body::refuse_nul_in_uri))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::telemetry::track_request,
        ))
        .with_state(state)
}

/// Splits `op_01HX:cancel` into the id and the custom method.
pub fn split_custom(segment: &str) -> (&str, Option<&str>) {
    match segment.split_once(':') {
        Some((id, method)) => (id, Some(method)),
        None => (segment, None),
    }
}

/// The query fields every list route shares.
pub trait ListParams {
    fn page_size(&self) -> Option<u32>;
    fn page_token(&self) -> Option<&str>;
    /// The tenant an admin asked for (`?tenant=`); a tenant key reads only its own.
    fn tenant(&self) -> Option<TenantId>;
}

/// What every list route starts from: a reader's key, a well-formed query string, the page
/// size, the tenant read, and the page token (the last id of the previous page) as an id.
pub struct Listing<Q, Id> {
    pub query: Q,
    pub size: u32,
    pub tenant: Option<TenantId>,
    pub token: Option<Id>,
}

impl<Q: ListParams, Id> Listing<Q, Id> {
    pub fn read<E>(
        principal: &Principal,
        query: Result<Query<Q>, QueryRejection>,
        parse_token: impl FnOnce(&str) -> Result<Id, E>,
    ) -> ApiResult<Self> {
        principal.require_reader()?;
        let Query(query) =
            query.map_err(|e| ApiError::invalid(format!("Bad query string: {}", e.body_text())))?;
        let size = page_size(query.page_size())?;
        let tenant = match principal.role {
            Role::Tenant(t) => Some(t),
            _ => query.tenant(),
        };
        let token = match query.page_token().filter(|t| !t.is_empty()) {
            Some(t) => {
                Some(parse_token(t).map_err(|_| ApiError::invalid("`page_token` is not valid."))?)
            }
            None => None,
        };
        Ok(Self {
            query,
            size,
            tenant,
            token,
        })
    }
}

/// Implements [`ListParams`] for a list route's query struct with `page_size`,
/// `page_token` and `tenant` fields.
macro_rules! list_params {
    ($query:ty) => {
        impl $crate::routes::ListParams for $query {
            fn page_size(&self) -> Option<u32> {
                self.page_size
            }
            fn page_token(&self) -> Option<&str> {
                self.page_token.as_deref()
            }
            fn tenant(&self) -> Option<herald_core::ids::TenantId> {
                self.tenant
            }
        }
    };
}
pub(crate) use list_params;

/// `page_token` for a list: the id of the last item on this page, or "" when there is no next page.
pub fn next_page_token<T>(
    items: &mut Vec<T>,
    page_size: u32,
    id_of: impl Fn(&T) -> String,
) -> String {
    if items.len() > page_size as usize {
        items.truncate(page_size as usize);
        items.last().map(id_of).unwrap_or_default()
    } else {
        String::new()
    }
}
