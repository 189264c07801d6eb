//! OpenAPI 3.1 for the whole HTTP API: every route of `routes/mod.rs`, the trigger
//! routes from config, problem details for every error, and the webhook deliveries
//! under `webhooks`.

mod build;
mod paths;
mod schemas;
mod webhooks;

use crate::config::Config;
use serde_json::{json, Value};

pub fn openapi(config: &Config, server_url: &str) -> Value {
    let paths = paths::paths(config);

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Herald",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Long-running operations, signed webhooks and broker events from one durable core.",
            "license": { "name": "Apache-2.0", "identifier": "Apache-2.0" }
        },
        "servers": [ { "url": server_url } ],
        "security": [ { "bearer": [] } ],
        "paths": paths,
        "webhooks": webhooks::webhooks(config),
        "components": schemas::components()
    })
}
