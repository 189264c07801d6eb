//! The scenarios every broker (or several) goes through, written once over [`Broker`]; each
//! broker's module runs them from its own test (gated on its variable) and adds the checks
//! only that broker has.

use super::*;

/// What a scenario leaves for the broker's own checks.
pub(super) struct Run {
    pub app: TestApp,
    pub topic: String,
    pub posted: Vec<Posted>,
    pub got: Vec<(String, Value)>,
}

/// Every event arrives, in key order, with its dedupe id; the delivery log names the
/// route, the broker and the topic.
pub(super) async fn every_event_in_key_order<B: Broker>(broker: &B) -> Run {
    let topic = broker.fresh_topic();
    let mut reader = broker.reader(&topic).await;
    let app = spawn_app(&config(B::KIND, &topic, &broker.table(broker.url()))).await;
    let posted = post_events(&app, 8, 0).await;
    all_published(&app, posted.len()).await;
    let got = broker.read(&mut reader, &topic, posted.len()).await;
    check_arrivals(&posted, &got);
    check_delivery_log(&app, B::KIND, &topic).await;
    Run {
        app,
        topic,
        posted,
        got,
    }
}

/// The broker goes away mid-stream (Herald reaches it at `herald_url`, through `outage`)
/// and comes back: publishes fail and are recorded while it is away, nothing is dropped.
pub(super) async fn going_away_mid_stream_loses_nothing<B: Broker>(
    broker: &B,
    outage: &impl Outage,
    herald_url: &str,
) -> Run {
    let topic = broker.fresh_topic();
    let mut reader = broker.reader(&topic).await;
    let app = spawn_app(&config(B::KIND, &topic, &broker.table(herald_url))).await;
    let mut posted = post_events(&app, 4, 0).await;
    all_published(&app, posted.len()).await;

    outage.down();
    posted.extend(post_events(&app, 4, 4).await);
    // The broker is away: publishes fail and are recorded, nothing is dropped.
    app.eventually("a failed attempt while the broker is away", || async {
        route_deliveries(&app)
            .await
            .iter()
            .any(|d| d["status"] == "pending" && d["last_error"].is_string())
    })
    .await;
    outage.up();
    posted.extend(post_events(&app, 2, 8).await);
    all_published(&app, posted.len()).await;

    let got = broker.read(&mut reader, &topic, posted.len()).await;
    check_arrivals(&posted, &got);
    Run {
        app,
        topic,
        posted,
        got,
    }
}

/// A message over the broker's size limit (`big_key`: the key it is posted with, if any)
/// is refused however often it is sent: it is dead-lettered with an error that contains
/// `refusal`, later events (of its key and others) go out, and `:redeliver` tries it again
/// (and the broker refuses it again).
pub(super) async fn oversized_is_dead_lettered_and_the_line_keeps_moving<B: Broker>(
    broker: &B,
    big_key: Option<&str>,
    refusal: &str,
) {
    let topic = broker.fresh_topic();
    let mut reader = broker.reader(&topic).await;
    let config = format!(
        "max_body_bytes = {}\n{}",
        (2 * B::OVERSIZE).max(4 * 1024 * 1024),
        config(B::KIND, &topic, &broker.table(broker.url()))
    );
    let app = spawn_app(&config).await;
    let big = "x".repeat(B::OVERSIZE);
    let mut event = json!({ "type": "payment.updated",
                            "data": { "payment_id": "pay_1", "n": 0, "blob": big } });
    if let Some(key) = big_key {
        event["key"] = json!(key);
    }
    let r = app.post("/events", ADMIN, event).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let small = post_events(&app, 1, 1).await;
    let dead =
        one_dead_lettered_three_published(&app, "the big one dead-lettered and the rest published")
            .await;
    assert_eq!(dead["event_id"], r.body["id"]);
    assert!(
        dead["last_error"].as_str().unwrap().contains(refusal),
        "{dead}"
    );
    let path = format!("/deliveries/{}:redeliver", dead["id"].as_str().unwrap());
    assert_eq!(
        app.post(&path, ADMIN, json!({})).await.status,
        StatusCode::ACCEPTED
    );
    let one = format!("/deliveries/{}", dead["id"].as_str().unwrap());
    app.eventually("a second refusal", || async {
        let d = app.get(&one, ADMIN).await.body;
        d["status"] == "failed" && d["attempt_log"].as_array().unwrap().len() == 2
    })
    .await;
    let got = broker.read(&mut reader, &topic, small.len()).await;
    check_arrivals(&small, &got);
}

/// A broker that can be set up to refuse every publish to a topic for good, and fixed.
pub(super) trait Refusing: Broker {
    /// What keeps the broken setup (a connection) until it is fixed.
    type Breakage;
    /// Makes the broker refuse every publish to `topic`, however often Herald asks.
    async fn break_topic(&self, topic: &str) -> Self::Breakage;
    /// Undoes [`Self::break_topic`].
    async fn fix_topic(&self, breakage: &mut Self::Breakage, topic: &str);
}

/// A publish the broker refuses for good is dead-lettered with the broker's error (it
/// contains every one of `refusal`); once the broker is fixed, `:redeliver` sends it.
pub(super) async fn refused_is_dead_lettered_and_redeliver_sends_it_once_fixed<B: Refusing>(
    broker: &B,
    refusal: &[&str],
) {
    let topic = broker.fresh_topic();
    let mut breakage = broker.break_topic(&topic).await;
    let app = spawn_app(&config(B::KIND, &topic, &broker.table(broker.url()))).await;
    let r = app
        .post(
            "/events",
            ADMIN,
            json!({ "type": "payment.updated", "key": "pay_1", "data": { "payment_id": "pay_1", "n": 0 } }),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let event_id = r.body["id"].as_str().unwrap().to_owned();
    app.eventually("the delivery to be dead-lettered", || async {
        route_deliveries(&app)
            .await
            .first()
            .is_some_and(|d| d["status"] == "failed")
    })
    .await;
    let d = route_deliveries(&app).await.remove(0);
    let error = d["last_error"].as_str().unwrap();
    assert!(refusal.iter().all(|r| error.contains(r)), "{d}");
    let failed = app
        .get("/deliveries?status=failed&route=test-route", ADMIN)
        .await;
    assert_eq!(failed.body["deliveries"].as_array().unwrap().len(), 1);

    // Fixed on the broker's side, then redelivered by hand: it goes through.
    broker.fix_topic(&mut breakage, &topic).await;
    let mut reader = broker.reader(&topic).await;
    let r = app
        .post(
            &format!("/deliveries/{}:redeliver", d["id"].as_str().unwrap()),
            ADMIN,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    all_published(&app, 1).await;
    let got = broker.read(&mut reader, &topic, 1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, event_id);
    let one = app
        .get(&format!("/deliveries/{}", d["id"].as_str().unwrap()), ADMIN)
        .await;
    assert_eq!(one.body["attempt_log"].as_array().unwrap().len(), 2);
}

/// An emulator of the test's own that it can stop and start again, forgetting everything
/// (SQS's and Pub/Sub's emulators keep their state in memory).
pub(super) trait Restartable: Proxied {
    /// Stops the emulator; returns once it no longer listens.
    async fn stop(&mut self);
    /// Starts it again on the same port; returns once it listens.
    async fn start(&mut self);
}

/// The emulator is stopped mid-stream and started again, empty: publishes fail and are
/// recorded while it is away, and once the topic is made again every event arrives, in key
/// order. Herald reaches the emulator through a proxy, held down until the test has made
/// the topic again (an emulator that forgot the topic refuses messages for good).
pub(super) async fn emulator_restarted_mid_stream_loses_nothing<B: Restartable>(broker: &mut B) {
    let topic = broker.fresh_topic();
    let (proxy, herald_url) = proxied(&*broker).await;
    let mut reader = broker.reader(&topic).await;
    let app = spawn_app(&config(B::KIND, &topic, &broker.table(&herald_url))).await;
    let mut posted = post_events(&app, 4, 0).await;
    all_published(&app, posted.len()).await;
    // Read before the emulator forgets them.
    let mut got = broker.read(&mut reader, &topic, posted.len()).await;

    proxy.down();
    broker.stop().await;
    posted.extend(post_events(&app, 4, 4).await);
    app.eventually("a failed attempt while the emulator is stopped", || async {
        route_deliveries(&app)
            .await
            .iter()
            .any(|d| d["status"] == "pending" && d["last_error"].is_string())
    })
    .await;
    broker.start().await;
    let mut reader = broker.reader(&topic).await;
    proxy.up();
    posted.extend(post_events(&app, 2, 8).await);
    all_published(&app, posted.len()).await;
    let before: HashSet<String> = got.iter().map(|(id, _)| id.clone()).collect();
    let missing = posted.iter().filter(|p| !before.contains(&p.id)).count();
    got.extend(broker.read(&mut reader, &topic, missing).await);
    check_arrivals(&posted, &got);
    let failed_attempts = route_deliveries(&app)
        .await
        .iter()
        .filter(|d| d["attempts"].as_i64().unwrap_or(0) > 1)
        .count();
    assert!(failed_attempts > 0, "some publish was retried");
}
