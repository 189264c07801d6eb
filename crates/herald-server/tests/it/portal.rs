//! Portal sessions over HTTP: minted by an admin, opened once by their link's page (its
//! button's POST, from that page) for an HttpOnly cookie (SameSite=Strict, or None and
//! Partitioned when the tenant lists origins that frame the portal), scoped to their tenant (and event types), read-only
//! when asked, CSRF-safe, revocable, expiring, and framed only by the tenant's origins.

use herald_testkit::receiver::Receiver;
use herald_testkit::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

fn config() -> String {
    "[webhooks]\nallow_private_destinations = true\n".into()
}

/// A browser-like client of the portal: no redirects followed, its cookie sent by hand.
struct Portal<'a> {
    app: &'a TestApp,
    http: reqwest::Client,
    cookie: String,
    csrf: String,
}

/// Mints a session for `tenant` with `body` and opens its link as a browser does: the
/// link's page, then its form's POST from that page.
async fn open<'a>(app: &'a TestApp, tenant: &str, body: Value) -> (Portal<'a>, Value) {
    let (http, minted) = mint(app, tenant, body).await;
    let url = minted["url"].as_str().unwrap();
    let set = press_open(app, &http, url, Some(&app.base)).await;
    for attribute in ["HttpOnly", "Path=/portal", "Max-Age="] {
        assert!(set.contains(attribute), "{set}");
    }
    let cookie = set.split(';').next().unwrap().to_owned();
    // The link works once.
    let token = url.split("token=").nth(1).unwrap();
    let again = post_open(app, &http, token, Some(&app.base)).await;
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    let page = http.get(url).send().await.unwrap();
    assert_eq!(
        page.status(),
        StatusCode::UNAUTHORIZED,
        "its page says so too"
    );
    let mut portal = Portal {
        app,
        http,
        cookie,
        csrf: String::new(),
    };
    let s = portal.get("/portal/api/session").await;
    assert_eq!(s.status, StatusCode::OK, "{:?}", s.body);
    portal.csrf = s.body["csrf_token"].as_str().unwrap().to_owned();
    (portal, minted)
}

/// An admin mints a session; a client that follows no redirects.
async fn mint(app: &TestApp, tenant: &str, body: Value) -> (reqwest::Client, Value) {
    let r = app
        .post(&format!("/tenants/{tenant}/portal-sessions"), ADMIN, body)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let url = r.body["url"].as_str().unwrap();
    assert!(
        url.starts_with(&app.base) && url.contains("/portal/open?token=hpt_"),
        "{url}"
    );
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    (http, r.body)
}

/// `POST /portal/open` with `token`, from `origin`.
async fn post_open(
    app: &TestApp,
    http: &reqwest::Client,
    token: &str,
    origin: Option<&str>,
) -> reqwest::Response {
    let headers: Vec<(&str, &str)> = origin.map(|o| ("origin", o)).into_iter().collect();
    post_open_with(app, http, token, &headers).await
}

/// `POST /portal/open` with `token` and these request headers.
async fn post_open_with(
    app: &TestApp,
    http: &reqwest::Client,
    token: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = http
        .post(format!("{}/portal/open", app.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.send().await.unwrap()
}

/// Shows the link's page (which opens nothing), then posts its form: the `Set-Cookie`.
async fn press_open(
    app: &TestApp,
    http: &reqwest::Client,
    url: &str,
    origin: Option<&str>,
) -> String {
    let page = http.get(url).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers().get("set-cookie").is_none());
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("form-action 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    let token = url.split("token=").nth(1).unwrap();
    assert!(
        html.contains("method=\"post\" action=\"/portal/open\"")
            && html.contains(&format!("value=\"{token}\"")),
        "{html}"
    );
    let resp = post_open(app, http, token, origin).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()["location"], "/portal");
    assert_eq!(resp.headers()["referrer-policy"], "no-referrer");
    resp.headers()["set-cookie"].to_str().unwrap().to_owned()
}

impl Portal<'_> {
    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.app.base))
            .header("cookie", &self.cookie)
    }

    async fn get(&self, path: &str) -> Reply {
        into_reply(self.request(Method::GET, path).send().await.unwrap()).await
    }

    /// A change as the portal's page makes it: same origin, CSRF header.
    async fn change(&self, method: Method, path: &str, body: Value) -> Reply {
        let req = self
            .request(method, path)
            .header("origin", &self.app.base)
            .header("x-herald-csrf", &self.csrf)
            .json(&body);
        into_reply(req.send().await.unwrap()).await
    }
}

#[tokio::test]
async fn a_link_opens_once_into_a_tenant_scoped_session() {
    let app = spawn_app(&config()).await;
    let (acme, acme_key) = app.tenant("acme").await;
    let (_, globex_key) = app.tenant("globex").await;
    // Only an admin mints sessions.
    let r = app
        .post(
            &format!("/tenants/{acme}/portal-sessions"),
            &acme_key,
            json!({}),
        )
        .await;
    assert_problem(&r, StatusCode::FORBIDDEN, "FORBIDDEN");
    let r = app
        .post(
            "/tenants/tnt_01JD0000000000000000000000/portal-sessions",
            ADMIN,
            json!({}),
        )
        .await;
    assert_problem(&r, StatusCode::NOT_FOUND, "NOT_FOUND");
    for bad in [
        json!({"expires_in": "25h"}),
        json!({"expires_in": "10s"}),
        json!({"event_types": []}),
        json!({"nope": 1}),
    ] {
        let r = app
            .post(
                &format!("/tenants/{acme}/portal-sessions"),
                ADMIN,
                bad.clone(),
            )
            .await;
        assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST");
    }

    let receiver = Receiver::start().await;
    let theirs = app
        .post(
            "/webhooks",
            &globex_key,
            json!({"url": receiver.url("/g"), "events": ["*"]}),
        )
        .await;
    let theirs = theirs.body["id"].as_str().unwrap().to_owned();
    let (portal, minted) = open(&app, &acme, json!({})).await;
    assert!(minted["token"].as_str().unwrap().starts_with("hpt_"));
    let s = portal.get("/portal/api/session").await.body;
    assert_eq!(s["tenant"], acme);
    assert_eq!(s["tenant_name"], "acme");
    assert_eq!(s["read_only"], false);
    assert!(s.get("token").is_none());

    let created = portal
        .change(
            Method::POST,
            "/portal/api/webhooks",
            json!({"url": receiver.url("/mine"), "events": ["payment.*"]}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.body["tenant"], acme);
    assert!(created.body["signing_secret"].is_string(), "shown once");
    let listed = portal.get("/portal/api/webhooks").await.body;
    assert_eq!(listed["webhooks"].as_array().unwrap().len(), 1);
    // Another tenant's webhook does not exist here.
    let r = portal.get(&format!("/portal/api/webhooks/{theirs}")).await;
    assert_problem(&r, StatusCode::NOT_FOUND, "NOT_FOUND");
    let r = portal
        .change(
            Method::DELETE,
            &format!("/portal/api/webhooks/{theirs}"),
            json!({}),
        )
        .await;
    assert_problem(&r, StatusCode::NOT_FOUND, "NOT_FOUND");

    // Without the cookie, nothing.
    let r = into_reply(
        reqwest::get(format!("{}/portal/api/webhooks", app.base))
            .await
            .unwrap(),
    )
    .await;
    assert_problem(&r, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    // A bearer key does not open the portal's API either (it is the cookie's alone).
    let r = app.get("/portal/api/webhooks", &acme_key).await;
    assert_problem(&r, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
}

#[tokio::test]
async fn every_change_needs_the_csrf_header_and_the_portals_origin() {
    let app = spawn_app(&config()).await;
    let (acme, _) = app.tenant("acme").await;
    let receiver = Receiver::start().await;
    let (portal, _) = open(&app, &acme, json!({})).await;
    let body = json!({"url": receiver.url("/h"), "events": ["*"]});
    let attempts = [
        // A cross-site form: neither the header nor the origin.
        portal
            .request(Method::POST, "/portal/api/webhooks")
            .json(&body),
        portal
            .request(Method::POST, "/portal/api/webhooks")
            .header("origin", &app.base)
            .json(&body),
        portal
            .request(Method::POST, "/portal/api/webhooks")
            .header("x-herald-csrf", &portal.csrf)
            .json(&body),
        portal
            .request(Method::POST, "/portal/api/webhooks")
            .header("origin", "https://evil.example")
            .header("x-herald-csrf", &portal.csrf)
            .json(&body),
        portal
            .request(Method::POST, "/portal/api/webhooks")
            .header("origin", &app.base)
            .header("x-herald-csrf", "hcsrf_guessed")
            .json(&body),
    ];
    for attempt in attempts {
        let r = into_reply(attempt.send().await.unwrap()).await;
        assert_problem(&r, StatusCode::FORBIDDEN, "FORBIDDEN");
    }
    let listed = portal.get("/portal/api/webhooks").await.body;
    assert!(
        listed["webhooks"].as_array().unwrap().is_empty(),
        "nothing made"
    );
    let r = portal
        .change(Method::POST, "/portal/api/webhooks", body)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
}

#[tokio::test]
async fn read_only_and_event_type_limits_hold() {
    let app = spawn_app(&config()).await;
    let (acme, acme_key) = app.tenant("acme").await;
    for name in ["payment.succeeded", "invoice.paid"] {
        let r = app
            .call(
                Method::PUT,
                &format!("/event-types/{name}"),
                ADMIN,
                Some(json!({"schema": {"type": "object"}})),
            )
            .await;
        assert!(r.status.is_success(), "{:?}", r.body);
    }
    let receiver = Receiver::start().await;
    let hook = app
        .post(
            "/webhooks",
            &acme_key,
            json!({"url": receiver.url("/h"), "events": ["*"]}),
        )
        .await;
    let hook = hook.body["id"].as_str().unwrap().to_owned();

    let (viewer, minted) = open(&app, &acme, json!({"read_only": true, "expires_in": "5m"})).await;
    assert_eq!(minted["read_only"], true);
    assert_eq!(
        viewer.get("/portal/api/webhooks").await.status,
        StatusCode::OK
    );
    assert_eq!(
        viewer
            .get(&format!("/portal/api/webhooks/{hook}"))
            .await
            .status,
        StatusCode::OK
    );
    for (method, path) in [
        (Method::POST, "/portal/api/webhooks".to_owned()),
        (Method::PATCH, format!("/portal/api/webhooks/{hook}")),
        (Method::DELETE, format!("/portal/api/webhooks/{hook}")),
        (
            Method::POST,
            format!("/portal/api/webhooks/{hook}:rotateSecret"),
        ),
    ] {
        let r = viewer
            .change(
                method,
                &path,
                json!({"url": receiver.url("/x"), "events": ["*"]}),
            )
            .await;
        assert_problem(&r, StatusCode::FORBIDDEN, "FORBIDDEN");
        assert!(r.body["detail"].as_str().unwrap().contains("read-only"));
    }

    let (payments, _) = open(&app, &acme, json!({"event_types": ["payment.*"]})).await;
    let catalog = payments.get("/portal/api/event-types").await.body;
    let names: Vec<&str> = catalog["event_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["payment.succeeded"]);
    for events in [
        json!(["invoice.paid"]),
        json!(["*"]),
        json!(["payment.succeeded", "invoice.*"]),
    ] {
        let r = payments
            .change(
                Method::POST,
                "/portal/api/webhooks",
                json!({"url": receiver.url("/p"), "events": events}),
            )
            .await;
        assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST");
    }
    // The tenant's endpoint on `*` is beyond this session: no action on it at all (else it
    // could be pointed elsewhere and every invoice replayed to it, signed): it is not there
    // for the session, however its id is spelled (percent-encoded, the custom method too).
    let encoded = hook.replacen("wh_", "wh%5F", 1);
    for (method, path, body) in [
        (
            Method::PATCH,
            format!("/portal/api/webhooks/{encoded}"),
            json!({"url": receiver.url("/attacker")}),
        ),
        (
            Method::POST,
            format!("/portal/api/webhooks/{hook}%3Areplay"),
            json!({}),
        ),
        (
            Method::POST,
            format!("/portal/api/webhooks/{encoded}%3ArotateSecret"),
            json!({}),
        ),
        (
            Method::DELETE,
            format!("/portal/api/webhooks/{encoded}"),
            json!({}),
        ),
        (
            Method::PATCH,
            format!("/portal/api/webhooks/{hook}"),
            json!({"events": ["invoice.paid"]}),
        ),
        (
            Method::PATCH,
            format!("/portal/api/webhooks/{hook}"),
            json!({"url": receiver.url("/attacker")}),
        ),
        (
            Method::POST,
            format!("/portal/api/webhooks/{hook}:rotateSecret"),
            json!({}),
        ),
        (
            Method::POST,
            format!("/portal/api/webhooks/{hook}:replay"),
            json!({}),
        ),
        (
            Method::DELETE,
            format!("/portal/api/webhooks/{hook}"),
            json!({}),
        ),
    ] {
        let r = payments.change(method, &path, body).await;
        assert_problem(&r, StatusCode::NOT_FOUND, "NOT_FOUND");
    }
    assert_eq!(
        payments
            .get(&format!("/portal/api/webhooks/{encoded}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let unchanged = app.get(&format!("/webhooks/{hook}"), &acme_key).await;
    assert_eq!(unchanged.body["url"], receiver.url("/h"));
    assert_eq!(
        unchanged.body["signing_secret_version"], 1,
        "{:?}",
        unchanged.body
    );
    let r = payments
        .change(
            Method::POST,
            "/portal/api/webhooks",
            json!({"url": receiver.url("/p"), "events": ["payment.succeeded"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let own = r.body["id"].as_str().unwrap().to_owned();
    let r = payments
        .change(
            Method::PATCH,
            &format!("/portal/api/webhooks/{own}"),
            json!({"description": "mine"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "its own endpoint: {:?}", r.body);
    let r = payments
        .change(
            Method::POST,
            &format!("/portal/api/webhooks/{own}:test"),
            json!({"event_type": "invoice.paid"}),
        )
        .await;
    assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST");

    // What it reads is within its types too: the `*` endpoint and its invoice deliveries
    // are not listed, not shown, and not in the health it sees.
    let r = app
        .post(
            "/events",
            ADMIN,
            json!({"type": "invoice.paid", "tenant": acme, "data": {}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let mut invoice = String::new();
    for _ in 0..100 {
        let all = app
            .get(&format!("/deliveries?webhook={hook}"), &acme_key)
            .await;
        if let Some(d) = all.body["deliveries"].as_array().and_then(|d| d.first()) {
            if d["attempts"].as_u64().unwrap_or(0) > 0 {
                invoice = d["id"].as_str().unwrap().to_owned();
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !invoice.is_empty(),
        "the invoice was delivered to the `*` endpoint"
    );
    let ids = |v: &Value, field: &str| -> Vec<String> {
        v[field]
            .as_array()
            .unwrap_or_else(|| panic!("no {field} in {v:?}"))
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let listed = payments.get("/portal/api/webhooks").await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(ids(&listed.body, "webhooks"), vec![own.clone()]);
    let seen = viewer.get("/portal/api/webhooks").await;
    assert_eq!(
        ids(&seen.body, "webhooks").len(),
        2,
        "an unlimited session sees both"
    );
    assert_eq!(
        payments
            .get(&format!("/portal/api/webhooks/{hook}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let listed = payments.get("/portal/api/deliveries").await;
    assert_eq!(listed.status, StatusCode::OK);
    assert!(
        ids(&listed.body, "deliveries").is_empty(),
        "{:?}",
        listed.body
    );
    assert_eq!(
        ids(
            &viewer.get("/portal/api/deliveries").await.body,
            "deliveries"
        ),
        vec![invoice.clone()]
    );
    for path in [
        format!("/portal/api/deliveries/{invoice}"),
        format!("/portal/api/deliveries?webhook={hook}"),
    ] {
        let r = payments.get(&path).await;
        let hidden = r.status == StatusCode::NOT_FOUND
            || r.body["deliveries"]
                .as_array()
                .is_some_and(|d| d.is_empty());
        assert!(hidden, "{path}: {:?}", r.body);
    }
    let health = |v: &Value| -> Vec<String> {
        v["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        health(&viewer.get("/portal/api/stats").await.body),
        vec![hook.clone()]
    );
    let stats = payments.get("/portal/api/stats").await.body;
    assert!(health(&stats).is_empty(), "{stats:?}");
    assert_eq!(stats["totals"]["attempts"], 0, "{stats:?}");

    // A payment goes to the `*` endpoint and to the session's own: the session sees (and
    // acts on) the one to its own endpoint only, by list, by id, or by a spelling of its id.
    let r = app
        .post(
            "/events",
            ADMIN,
            json!({"type": "payment.succeeded", "tenant": acme, "data": {}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let event = r.body["id"].as_str().unwrap().to_owned();
    let mut to_star = String::new();
    for _ in 0..100 {
        let all = app
            .get(
                &format!("/deliveries?webhook={hook}&event_type=payment.succeeded"),
                &acme_key,
            )
            .await;
        if let Some(d) = all.body["deliveries"].as_array().and_then(|d| d.first()) {
            to_star = d["id"].as_str().unwrap().to_owned();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!to_star.is_empty(), "the payment went to the `*` endpoint");
    let listed = payments.get("/portal/api/deliveries").await;
    let listed: Vec<&Value> = listed.body["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["webhook_id"], own.as_str());
    assert_eq!(listed[0]["event_id"], event.as_str());
    let encoded = to_star.replacen("dlv_", "dlv%5F", 1);
    for path in [
        format!("/portal/api/deliveries/{to_star}"),
        format!("/portal/api/deliveries/{encoded}"),
    ] {
        assert_eq!(
            payments.get(&path).await.status,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    for path in [
        format!("/portal/api/deliveries/{to_star}:skip"),
        format!("/portal/api/deliveries/{to_star}:redeliver"),
        format!("/portal/api/deliveries/{encoded}%3Askip"),
    ] {
        let r = payments.change(Method::POST, &path, json!({})).await;
        assert_problem(&r, StatusCode::NOT_FOUND, "NOT_FOUND");
    }
    let d = app.get(&format!("/deliveries/{to_star}"), &acme_key).await;
    assert_ne!(d.body["status"], "skipped", "{:?}", d.body);
}

/// Publishes one event of each type for `tenant`.
async fn publish(app: &TestApp, tenant: &str, types: &[&str]) {
    for t in types {
        let r = app
            .post(
                "/events",
                ADMIN,
                json!({"type": t, "tenant": tenant, "data": {}}),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    }
}

/// The tenant narrows `hook` to `payment.*`, into a payments session's types.
async fn narrow_to_payments(app: &TestApp, key: &str, hook: &str) {
    let r = app
        .call(
            Method::PATCH,
            &format!("/webhooks/{hook}"),
            key,
            Some(json!({"events": ["payment.*"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
}

#[tokio::test]
async fn a_limited_session_replays_only_its_types() {
    let app = spawn_app(&config()).await;
    let (acme, acme_key) = app.tenant("acme").await;
    let receiver = Receiver::start().await;
    let r = app
        .post(
            "/webhooks",
            &acme_key,
            json!({"url": receiver.url("/h"), "events": ["payment.*", "invoice.*"]}),
        )
        .await;
    let hook = r.body["id"].as_str().unwrap().to_owned();
    publish(&app, &acme, &["invoice.paid", "payment.succeeded"]).await;
    receiver.wait_for(2, Duration::from_secs(10)).await;
    // Narrowed into the session's types, the endpoint is the session's; what it once
    // received of other types is not the session's to replay.
    narrow_to_payments(&app, &acme_key, &hook).await;
    let (payments, _) = open(&app, &acme, json!({"event_types": ["payment.*"]})).await;
    let r = payments
        .change(
            Method::POST,
            &format!("/portal/api/webhooks/{hook}:replay"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    assert_eq!(r.body["replayed"], 1, "{:?}", r.body);
    let got = receiver.wait_for(3, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = if receiver.count() > got.len() {
        receiver.received()
    } else {
        got
    };
    let types: Vec<String> = got
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(types.len(), 3, "{types:?}");
    assert_eq!(types[2], "payment.succeeded", "{types:?}");
    // The tenant's key replays everything in the range.
    let r = app
        .post(&format!("/webhooks/{hook}:replay"), &acme_key, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    assert_eq!(r.body["replayed"], 2, "{:?}", r.body);
}

#[tokio::test]
async fn revoked_and_expired_sessions_open_nothing() {
    let app = spawn_app_with_manual_clock(&config()).await;
    let (acme, _) = app.tenant("acme").await;
    let (portal, minted) = open(&app, &acme, json!({"expires_in": "10m"})).await;
    let id = minted["id"].as_str().unwrap();
    assert!(id.starts_with("pts_"));
    let got = app.get(&format!("/portal-sessions/{id}"), ADMIN).await;
    assert_eq!(got.body["revoked"], false);
    assert!(got.body["opened_at"].is_string());
    let r = app
        .call(
            Method::DELETE,
            &format!("/portal-sessions/{id}"),
            ADMIN,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = portal.get("/portal/api/webhooks").await;
    assert_problem(&r, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    assert_eq!(
        app.get(&format!("/portal-sessions/{id}"), ADMIN).await.body["revoked"],
        true
    );

    let (portal, minted) = open(&app, &acme, json!({"expires_in": "10m"})).await;
    app.advance(Duration::from_secs(9 * 60));
    assert_eq!(
        portal.get("/portal/api/webhooks").await.status,
        StatusCode::OK
    );
    app.advance(Duration::from_secs(61));
    let r = portal.get("/portal/api/webhooks").await;
    assert_problem(&r, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    // An unopened link expires too.
    let r = app
        .post(
            &format!("/tenants/{acme}/portal-sessions"),
            ADMIN,
            json!({"expires_in": "1m"}),
        )
        .await;
    let url = r.body["url"].as_str().unwrap().to_owned();
    app.advance(Duration::from_secs(61));
    let r = portal.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let token = url.split("token=").nth(1).unwrap();
    let r = post_open(&app, &portal.http, token, Some(&app.base)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let _ = minted;
}

#[tokio::test]
async fn the_portal_is_framed_only_by_the_tenants_origins() {
    let app = spawn_app(&config()).await;
    let (acme, _) = app.tenant("acme").await;
    let (portal, _) = open(&app, &acme, json!({})).await;
    let framing = |r: &reqwest::Response| {
        (
            r.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .to_owned(),
            r.headers()
                .get("x-frame-options")
                .map(|v| v.to_str().unwrap().to_owned()),
        )
    };
    // No origins listed: framed nowhere.
    let r = portal.request(Method::GET, "/portal").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (csp, xfo) = framing(&r);
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(xfo.as_deref(), Some("DENY"));

    let bad = app
        .call(
            Method::PUT,
            &format!("/tenants/{acme}/portal"),
            ADMIN,
            Some(json!({"frame_origins": ["http://app.example.com"]})),
        )
        .await;
    assert_problem(&bad, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST");
    let bad = app
        .call(
            Method::PUT,
            &format!("/tenants/{acme}/portal"),
            ADMIN,
            Some(json!({"branding": {"accent": "red; background: url(x)"}})),
        )
        .await;
    assert_problem(&bad, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST");
    let put = app
        .call(
            Method::PUT,
            &format!("/tenants/{acme}/portal"),
            ADMIN,
            Some(json!({"frame_origins": ["https://app.example.com", "https://admin.example.com:8443/"],
                        "branding": {"name": "Acme Payments", "accent": "#0a7d5a", "theme": "dark"}})),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{:?}", put.body);
    assert_eq!(
        put.body["frame_origins"],
        json!(["https://app.example.com", "https://admin.example.com:8443"])
    );
    let r = portal.request(Method::GET, "/portal").send().await.unwrap();
    let (csp, xfo) = framing(&r);
    assert!(
        csp.contains("frame-ancestors https://app.example.com https://admin.example.com:8443"),
        "{csp}"
    );
    assert_eq!(xfo, None);
    assert_eq!(
        portal.get("/portal/api/session").await.body["branding"]["name"],
        "Acme Payments"
    );
    // Without the session's cookie, the page is framed nowhere.
    let r = reqwest::get(format!("{}/portal", app.base)).await.unwrap();
    let (csp, xfo) = framing(&r);
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(xfo.as_deref(), Some("DENY"));
}

#[tokio::test]
async fn a_test_event_goes_to_its_webhook_only() {
    let app = spawn_app(&config()).await;
    let (acme, acme_key) = app.tenant("acme").await;
    let r = app
        .call(
            Method::PUT,
            "/event-types/payment.succeeded",
            ADMIN,
            Some(json!({"schema": {"type": "object", "examples": [{"amount": 4599}]}})),
        )
        .await;
    assert!(r.status.is_success(), "{:?}", r.body);
    let target = Receiver::start().await;
    let other = Receiver::start().await;
    let hook = app
        .post(
            "/webhooks",
            &acme_key,
            json!({"url": target.url("/t"), "events": ["payment.*"], "filter": {"/data/never": true}}),
        )
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.post(
        "/webhooks",
        &acme_key,
        json!({"url": other.url("/o"), "events": ["*"]}),
    )
    .await;
    let (portal, _) = open(&app, &acme, json!({})).await;
    let r = portal
        .change(
            Method::POST,
            &format!("/portal/api/webhooks/{hook}:test"),
            json!({"event_type": "payment.succeeded"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let event = r.body["event"].as_str().unwrap().to_owned();
    // Who gets it is decided in the write that stores it (fan-out makes its deliveries
    // there), so the delivery log says so at once, with no wait for what does not arrive.
    let made = app
        .get("/deliveries?event_type=webhook.test", &acme_key)
        .await;
    assert_eq!(made.status, StatusCode::OK, "{:?}", made.body);
    let made = made.body["deliveries"].as_array().unwrap().clone();
    assert_eq!(made.len(), 1, "one delivery, to its webhook only: {made:?}");
    assert_eq!(made[0]["webhook_id"], hook);
    assert_eq!(made[0]["event_id"], event);
    let got = target.wait_for(1, Duration::from_secs(10)).await;
    let body = got[0].json();
    assert_eq!(body["type"], "webhook.test");
    assert_eq!(body["id"], event);
    assert_eq!(body["data"]["webhook"], hook);
    assert_eq!(body["data"]["example"], json!({"amount": 4599}));
    assert_eq!(other.count(), 0, "nobody else gets a test event");
    let r = portal
        .change(
            Method::POST,
            &format!("/portal/api/webhooks/{hook}:test"),
            json!({"event_type": "nope.nope"}),
        )
        .await;
    assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST");
}

/// A portal session is rate limited like a key (`[limits]`): a customer looping on the
/// portal's API is answered 429 with Retry-After, not served without bound.
#[tokio::test]
async fn a_portal_session_is_rate_limited_like_a_key() {
    let app = spawn_app(&format!(
        "{}[limits]\nrequests_per_second = 1\nburst = 3\n",
        config()
    ))
    .await;
    let (acme, _) = app.tenant("acme").await;
    let (portal, _) = open(&app, &acme, json!({})).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(portal.get("/portal/api/webhooks").await);
    }
    let limited = statuses
        .iter()
        .find(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .unwrap_or_else(|| {
            panic!(
                "{:?}",
                statuses.iter().map(|r| r.status).collect::<Vec<_>>()
            )
        });
    assert_eq!(limited.body["code"], "RATE_LIMITED");
    assert!(limited.headers.get("retry-after").is_some());
}

/// The link's page spends nothing (a mail or chat scanner that fetches it leaves it good);
/// only a POST from Herald's own page opens it, so another site cannot log a visitor into
/// a session of its choosing; the cookie is SameSite=Strict unless the tenant lists
/// origins that frame the portal.
#[tokio::test]
async fn a_link_is_opened_by_its_pages_post_from_that_page_only() {
    let app = spawn_app(&config()).await;
    let (acme, _) = app.tenant("acme").await;
    let (http, minted) = mint(&app, &acme, json!({})).await;
    let url = minted["url"].as_str().unwrap();
    let token = url.split("token=").nth(1).unwrap();
    // A scanner fetches it, more than once: still unopened.
    for _ in 0..3 {
        assert_eq!(http.get(url).send().await.unwrap().status(), StatusCode::OK);
    }
    let id = minted["id"].as_str().unwrap();
    let got = app.get(&format!("/portal-sessions/{id}"), ADMIN).await;
    assert!(got.body["opened_at"].is_null(), "{:?}", got.body);
    // A junk or unknown token: the expired page, and no form.
    for bad in ["nope", &format!("hpt_{}", "0".repeat(64))] {
        let r = http
            .get(format!("{}/portal/open?token={bad}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(!r.text().await.unwrap().contains("<form"));
    }
    // Another site's form (login CSRF), a cross-site fetch, or no Origin at all: refused,
    // and the link stays good.
    for origin in [Some("https://evil.example"), Some("null"), None] {
        let r = post_open(&app, &http, token, origin).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{origin:?}");
        assert!(r.headers().get("set-cookie").is_none());
    }
    let r = post_open_with(
        &app,
        &http,
        token,
        &[("origin", &app.base), ("sec-fetch-site", "cross-site")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let got = app.get(&format!("/portal-sessions/{id}"), ADMIN).await;
    assert!(got.body["opened_at"].is_null(), "{:?}", got.body);
    // From its own page, as Chromium posts it under `Referrer-Policy: no-referrer`.
    let r = post_open_with(
        &app,
        &http,
        token,
        &[("origin", "null"), ("sec-fetch-site", "same-origin")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(set.contains("SameSite=Strict"), "{set}");
    assert!(
        !set.contains("Secure"),
        "plain HTTP, no framing: no Secure ({set})"
    );

    // Listed frame origins: the cookie a framed (cross-site) portal can be sent.
    let r = app
        .call(
            Method::PUT,
            &format!("/tenants/{acme}/portal"),
            ADMIN,
            Some(json!({"frame_origins": ["https://app.example.com"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let (http, minted) = mint(&app, &acme, json!({})).await;
    let url = minted["url"].as_str().unwrap();
    let page = http.get(url).send().await.unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("frame-ancestors https://app.example.com"),
        "{csp}"
    );
    assert!(page.headers().get("x-frame-options").is_none());
    let set = press_open(&app, &http, url, Some(&app.base)).await;
    for attribute in ["SameSite=None", "Secure", "Partitioned", "HttpOnly"] {
        assert!(set.contains(attribute), "{set}");
    }
    assert!(!set.contains("Strict"), "{set}");
}

/// With `public_url` set, a session's link starts with it, whatever the request's `Host`
/// (absent over HTTP/2, or a proxy's inner name).
#[tokio::test]
async fn links_use_the_public_url_when_set() {
    let app = spawn_app(&format!(
        "public_url = \"https://hooks.example.com\"\n{}",
        config()
    ))
    .await;
    let (acme, _) = app.tenant("acme").await;
    let r = app
        .post(
            &format!("/tenants/{acme}/portal-sessions"),
            ADMIN,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let url = r.body["url"].as_str().unwrap();
    let token = r.body["token"].as_str().unwrap();
    assert_eq!(
        url,
        format!("https://hooks.example.com/portal/open?token={token}")
    );
    // Its page's POST, from that origin (as through a proxy that keeps an inner `Host`):
    // opened.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = post_open_with(
        &app,
        &http,
        token,
        &[
            ("host", "herald.internal:8288"),
            ("origin", "https://hooks.example.com"),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
}

/// What a session limited to `payment.*` must never learn of: the tenant's `*` endpoint and
/// an invoice delivery, neither on a page nor in a `next_page_token`; and an endpoint
/// narrowed into its types while it still owes an invoice cannot be pointed elsewhere.
#[tokio::test]
async fn a_limited_session_learns_nothing_beyond_its_types_and_redirects_nothing_of_them() {
    let app =
        spawn_app("[webhooks]\nallow_private_destinations = true\nschedule = [\"0s\", \"1h\"]\n")
            .await;
    let (acme, acme_key) = app.tenant("acme").await;
    let ok = Receiver::start().await;
    let failing = Receiver::start().await;
    failing.set_fallback(herald_testkit::receiver::Behavior::Status(500));
    let mut hooks = Vec::new();
    for (receiver, events) in [
        (&ok, json!(["*"])),
        (&ok, json!(["payment.*"])),
        (&failing, json!(["payment.*", "invoice.*"])),
        (&ok, json!(["payment.*"])),
    ] {
        let r = app
            .post(
                "/webhooks",
                &acme_key,
                json!({"url": receiver.url("/h"), "events": events}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        hooks.push(r.body["id"].as_str().unwrap().to_owned());
    }
    let (star, narrowed) = (hooks[0].clone(), hooks[2].clone());
    publish(&app, &acme, &["invoice.paid", "payment.succeeded"]).await;
    failing.wait_for(2, Duration::from_secs(10)).await;
    // The failing endpoint's invoice waits an hour for its retry; it is narrowed to payments.
    narrow_to_payments(&app, &acme_key, &narrowed).await;
    let hidden: Vec<String> = {
        let all = app.get("/deliveries?page_size=100", &acme_key).await;
        let mut ids: Vec<String> = all.body["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["webhook_id"] == star.as_str() || d["event_type"] == "invoice.paid")
            .map(|d| d["id"].as_str().unwrap().to_owned())
            .collect();
        ids.push(star.clone());
        ids
    };
    assert_eq!(
        hidden.len(),
        4,
        "two deliveries to `*`, one invoice, the endpoint"
    );

    let (payments, _) = open(&app, &acme, json!({"event_types": ["payment.*"]})).await;
    let mut seen = Vec::new();
    for list in ["webhooks", "deliveries"] {
        for query in ["", "&status=pending", "&event_type=invoice.paid"] {
            let mut token = String::new();
            for _ in 0..20 {
                let r = payments
                    .get(&format!(
                        "/portal/api/{list}?page_size=1&page_token={token}{query}"
                    ))
                    .await;
                assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
                let text = r.body.to_string();
                for id in &hidden {
                    assert!(
                        !text.contains(id.as_str()),
                        "{list}{query} names {id}: {text}"
                    );
                }
                seen.extend(
                    r.body[list]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|e| e["id"].as_str().unwrap().to_owned()),
                );
                token = r.body["next_page_token"].as_str().unwrap().to_owned();
                if token.is_empty() {
                    break;
                }
            }
        }
        let r = payments
            .get(&format!("/portal/api/deliveries?webhook={star}"))
            .await;
        assert_eq!(r.body["deliveries"], json!([]), "{:?}", r.body);
        assert_eq!(r.body["next_page_token"], "", "{:?}", r.body);
    }
    // Pages still lead to everything it may see: its three endpoints and their payments.
    for hook in &hooks[1..] {
        assert!(seen.contains(hook), "{hook} listed");
    }
    // The narrowed endpoint is the session's, but it still owes the tenant's invoice: its
    // URL cannot change from here, nor can it be started again.
    let r = payments
        .change(
            Method::PATCH,
            &format!("/portal/api/webhooks/{narrowed}"),
            json!({"url": ok.url("/attacker")}),
        )
        .await;
    assert_problem(&r, StatusCode::CONFLICT, "PENDING_BEYOND_SESSION");
    let r = payments
        .change(
            Method::POST,
            &format!("/portal/api/webhooks/{narrowed}:disable"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = payments
        .change(
            Method::POST,
            &format!("/portal/api/webhooks/{narrowed}:enable"),
            json!({}),
        )
        .await;
    assert_problem(&r, StatusCode::CONFLICT, "PENDING_BEYOND_SESSION");
    let w = app.get(&format!("/webhooks/{narrowed}"), &acme_key).await;
    assert_eq!(w.body["url"], failing.url("/h"));
    // Its own endpoints' URLs change as usual.
    let r = payments
        .change(
            Method::PATCH,
            &format!("/portal/api/webhooks/{}", hooks[1]),
            json!({"url": ok.url("/moved")}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
}

#[tokio::test]
async fn a_limited_session_cannot_offer_herald_s_own_events() {
    let app = spawn_app(&config()).await;
    let (acme, _) = app.tenant("acme").await;
    for types in [
        json!(["*"]),
        json!(["webhook.*"]),
        json!(["payment.*", "delivery.failed"]),
    ] {
        let r = app
            .post(
                &format!("/tenants/{acme}/portal-sessions"),
                ADMIN,
                json!({"event_types": types}),
            )
            .await;
        assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST");
    }
    let r = app
        .post(
            &format!("/tenants/{acme}/portal-sessions"),
            ADMIN,
            json!({"event_types": ["payment.*", "webhook.test"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
}
