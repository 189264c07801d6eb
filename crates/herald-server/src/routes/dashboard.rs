//! The operator dashboard: one static page, its script and stylesheet, compiled into
//! the binary. The page holds no data of its own; it logs in with an API key and
//! calls the same API as any client, so the server's tenancy rules apply to it.

use axum::http::header::{HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::response::{IntoResponse, Redirect, Response};

const INDEX_HTML: &str = include_str!("../dashboard/index.html");
const APP_JS: &str = include_str!("../dashboard/app.js");
const APP_CSS: &str = include_str!("../dashboard/app.css");

/// Scripts and styles only from Herald itself; nothing inline, nothing from elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
        ],
        body,
    )
        .into_response()
}

pub async fn index() -> Response {
    asset(INDEX_HTML, "text/html; charset=utf-8")
}

pub async fn script() -> Response {
    asset(APP_JS, "text/javascript; charset=utf-8")
}

pub async fn stylesheet() -> Response {
    asset(APP_CSS, "text/css; charset=utf-8")
}

/// `/dashboard/` and `/dashboard` are one page.
pub async fn redirect_slash() -> Redirect {
    Redirect::permanent("/dashboard")
}
