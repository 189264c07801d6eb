//! The route table: one module per resource. Custom methods (`:cancel`, `:claim`, …)
//! share their resource's path and are told apart by the suffix after `:`.

pub mod contract;
pub mod dashboard;
pub mod deliveries;
pub mod event_types;
pub mod events;
pub mod health;
pub mod operations;
pub mod stats;
pub mod tenants;
pub mod webhooks;
pub mod workers;

use crate::error::ApiError;
use crate::AppState;
use axum::routing::{delete, get, post};
use axum::Router;

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
