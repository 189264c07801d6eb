//! The retention loop end to end: a delivered event older than `[retention] events`
//! disappears with its delivery; one a delivery still owes stays.

use herald_testkit::receiver::{Behavior, Receiver};
use herald_testkit::*;
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn delivered_events_past_retention_are_purged_in_the_background() {
    let app = spawn_app_with_manual_clock(
        "[webhooks]\nallow_private_destinations = true\nschedule = [\"0s\", \"3d\"]\n\
         [retention]\nevents = \"1d\"\ninterval = \"50ms\"\n",
    )
    .await;
    let (tenant, _) = app.tenant("acme").await;
    let ok = Receiver::start().await;
    let failing = Receiver::start().await;
    failing.set_fallback(Behavior::Status(500));
    for (url, events) in [(ok.url("/ok"), "paid.*"), (failing.url("/f"), "owed.*")] {
        let r = app
            .post(
                "/webhooks",
                ADMIN,
                json!({ "url": url, "events": [events], "tenant": tenant }),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
    let mut ids = vec![];
    for t in ["paid.now", "owed.now"] {
        let r = app
            .post(
                "/events",
                ADMIN,
                json!({ "type": t, "tenant": tenant, "data": {} }),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
        ids.push(r.body["id"].as_str().unwrap().to_owned());
    }
    // The first is delivered; the second failed once and waits three days for its retry.
    app.eventually("both first attempts", || async {
        let r = app.get("/deliveries", ADMIN).await;
        r.body["deliveries"]
            .as_array()
            .is_some_and(|d| d.len() == 2 && d.iter().all(|d| d["attempts"] == 1))
    })
    .await;
    let paid = format!("/events/{}", ids[0]);
    let owed = format!("/events/{}", ids[1]);
    assert_eq!(app.get(&paid, ADMIN).await.status, StatusCode::OK);

    // Two days on the delivered event goes; the owed one (retry due on day 3) stays.
    app.advance(Duration::from_secs(2 * 86400));
    app.eventually("the delivered event to be purged", || async {
        app.get(&paid, ADMIN).await.status == StatusCode::NOT_FOUND
    })
    .await;
    let r = app.get("/deliveries", ADMIN).await;
    let left: Vec<_> = r.body["deliveries"].as_array().unwrap().clone();
    assert!(left.iter().all(|d| d["event_id"] == ids[1]), "{left:?}");
    let status = app.get(&owed, ADMIN).await.status;
    assert_eq!(status, StatusCode::OK);

    // What was purged is counted in /metrics: one event, its delivery and its attempt.
    let metrics = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for kind in ["events", "deliveries", "attempts"] {
        let line = format!("herald_retention_purged_total{{kind=\"{kind}\"}} 1");
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in:\n{metrics}"
        );
    }
}
