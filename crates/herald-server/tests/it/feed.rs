//! The pull feed and consumers over HTTP (issue #17, part 2), on SQLite or PostgreSQL:
//! the long poll answers when an event commits, a timeout answers the same cursor, types
//! and tenants filter, bad cursors are 422, acks move forward only; on PostgreSQL, two
//! nodes producing at once and one reader following through either.

use herald_testkit::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;

async fn publish(app: &TestApp, tenant: Option<&str>, ty: &str, n: usize) -> String {
    let mut body = json!({ "type": ty, "data": { "n": n } });
    if let Some(t) = tenant {
        body["tenant"] = json!(t);
    }
    let r = app.post("/events", ADMIN, body).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    r.body["id"].as_str().unwrap().to_owned()
}

fn event_ids(page: &Value) -> Vec<String> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Follows `path` (a feed URL taking `after`) until `n` events came or 30 s passed,
/// with long polls; answers them in order and the last cursor.
async fn follow(app: &TestApp, key: &str, path: &str, n: usize) -> (Vec<Value>, String) {
    let (mut events, mut cursor) = (Vec::new(), String::new());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while events.len() < n && std::time::Instant::now() < deadline {
        let sep = if path.contains('?') { '&' } else { '?' };
        let r = app
            .get(&format!("{path}{sep}after={cursor}&wait=5s"), key)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        events.extend(r.body["events"].as_array().unwrap().iter().cloned());
        cursor = r.body["next_cursor"].as_str().unwrap().to_owned();
    }
    (events, cursor)
}

#[tokio::test]
async fn the_long_poll_answers_as_soon_as_an_event_commits() {
    let app = spawn_app("").await;
    let (tenant, key) = app.tenant("acme").await;
    let first = publish(&app, Some(&tenant), "pay.ok", 1).await;
    let (seen, cursor) = follow(&app, &key, "/feed", 1).await;
    assert_eq!(seen[0]["id"], first.as_str());
    // The event as `GET /events/{id}` answers it.
    let one = app.get(&format!("/events/{first}"), &key).await;
    assert_eq!(seen[0], one.body);

    let waiter = {
        let (http, url, key) = (
            app.http.clone(),
            format!("{}/feed?after={cursor}&wait=50s", app.base),
            key.clone(),
        );
        tokio::spawn(async move {
            let r = http.get(url).bearer_auth(key).send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "the long poll holds while nothing is new"
    );
    let second = publish(&app, Some(&tenant), "pay.ok", 2).await;
    let (status, page) = tokio::time::timeout(Duration::from_secs(40), waiter)
        .await
        .expect("woken by the event, not by the 50 s wait")
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(event_ids(&page), vec![second]);
    assert_ne!(page["next_cursor"], cursor.as_str());

    // A wait that ends with nothing answers no events and a cursor not behind the one it
    // was given (on PostgreSQL it may move past transactions that stored nothing for this
    // tenant), from which the next event still comes.
    let next = page["next_cursor"].as_str().unwrap();
    let r = app
        .get(&format!("/feed?after={next}&wait=200ms"), &key)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(event_ids(&r.body).is_empty(), "{:?}", r.body);
    let later = r.body["next_cursor"].as_str().unwrap().to_owned();
    let third = publish(&app, Some(&tenant), "pay.ok", 3).await;
    let r = app
        .get(&format!("/feed?after={later}&wait=10s"), &key)
        .await;
    assert_eq!(event_ids(&r.body), vec![third]);
}

#[tokio::test]
async fn cursors_page_through_without_gaps_or_repeats_and_types_filter() {
    let app = spawn_app("").await;
    let (tenant, key) = app.tenant("acme").await;
    let mut published = Vec::new();
    for (i, ty) in ["pay.ok", "pay.failed", "refund.ok", "pay.ok", "pay"]
        .iter()
        .enumerate()
    {
        published.push((publish(&app, Some(&tenant), ty, i).await, *ty));
    }
    let all: Vec<String> = published.iter().map(|(id, _)| id.clone()).collect();
    let (seen, cursor) = follow(&app, &key, "/feed?page_size=2", 5).await;
    let seen: Vec<String> = seen
        .iter()
        .map(|e| e["id"].as_str().unwrap().into())
        .collect();
    assert_eq!(seen, all, "every event once, in order, over pages of 2");
    let r = app.get(&format!("/feed?after={cursor}"), &key).await;
    assert!(event_ids(&r.body).is_empty());

    let (pay, _) = follow(&app, &key, "/feed?types=pay.*", 3).await;
    let pay: Vec<String> = pay
        .iter()
        .map(|e| e["id"].as_str().unwrap().into())
        .collect();
    assert_eq!(pay, vec![all[0].clone(), all[1].clone(), all[3].clone()]);
    let (exact, _) = follow(&app, &key, "/feed?types=refund.ok,pay", 2).await;
    let exact: Vec<String> = exact
        .iter()
        .map(|e| e["id"].as_str().unwrap().into())
        .collect();
    assert_eq!(exact, vec![all[2].clone(), all[4].clone()]);
}

#[tokio::test]
async fn a_tenant_reads_only_its_own_feed_and_bad_requests_are_refused() {
    let app = spawn_app("").await;
    let (a, a_key) = app.tenant("a").await;
    let (b, b_key) = app.tenant("b").await;
    let a_event = publish(&app, Some(&a), "pay.ok", 1).await;
    let b_event = publish(&app, Some(&b), "pay.ok", 2).await;
    let no_tenant = publish(&app, None, "pay.ok", 3).await;
    let (seen, _) = follow(&app, &a_key, "/feed", 1).await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["id"], a_event.as_str());
    // Naming another tenant changes nothing for a tenant key.
    let r = app.get(&format!("/feed?tenant={b}"), &a_key).await;
    assert!(!event_ids(&r.body).contains(&b_event));
    let (seen, _) = follow(&app, &b_key, "/feed", 1).await;
    assert_eq!(seen[0]["id"], b_event.as_str());
    // An admin names the tenant, or reads the events of no tenant.
    let (seen, _) = follow(&app, ADMIN, &format!("/feed?tenant={a}"), 1).await;
    assert_eq!(seen[0]["id"], a_event.as_str());
    let (seen, _) = follow(&app, ADMIN, "/feed", 1).await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["id"], no_tenant.as_str());

    for bad in [
        "/feed?after=nonsense",
        "/feed?after=1-2-3",
        "/feed?after=evt_01HX",
        "/feed?types=pay.",
        "/feed?wait=forever",
        "/feed?page_size=0",
    ] {
        assert_problem(
            &app.get(bad, &a_key).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_REQUEST",
        );
    }
    let worker = app.worker_key().await;
    assert_problem(
        &app.get("/feed", &worker).await,
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
    );
    assert_problem(
        &app.get("/feed", "hrk_nope").await,
        StatusCode::UNAUTHORIZED,
        "UNAUTHENTICATED",
    );
}

#[tokio::test]
async fn long_polls_past_the_bound_are_refused_with_retry_after() {
    let app = spawn_app("[feed]\nmax_long_polls = 1\n").await;
    let (_, key) = app.tenant("acme").await;
    let holder = {
        let (http, url, key) = (
            app.http.clone(),
            format!("{}/feed?wait=20s", app.base),
            key.clone(),
        );
        // Keeps one long poll waiting (should a probe below take the slot first, the
        // holder is refused and asks again).
        tokio::spawn(async move {
            loop {
                let r = http.get(&url).bearer_auth(&key).send().await.unwrap();
                if r.status() == StatusCode::SERVICE_UNAVAILABLE {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        })
    };
    let mut refused = None;
    for _ in 0..200 {
        let r = app.get("/feed?wait=1s", &key).await;
        if r.status == StatusCode::SERVICE_UNAVAILABLE {
            refused = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = refused.expect("a second long poll is refused while the first waits");
    assert_problem(&r, StatusCode::SERVICE_UNAVAILABLE, "OVERLOADED");
    assert_eq!(r.headers["retry-after"], "1");
    // Without a wait, a read is not a long poll and is answered.
    assert_eq!(app.get("/feed", &key).await.status, StatusCode::OK);
    holder.abort();
}

/// A reader whose `types` match nothing it is shown still moves on: an empty page's
/// `next_cursor` is past every event it looked at (it scanned them once, not on every
/// read), a consumer may ack it, and the next matching event still comes.
#[tokio::test]
async fn a_reader_whose_types_match_little_moves_on_past_what_it_looked_at() {
    let app = spawn_app("").await;
    let (tenant, key) = app.tenant("acme").await;
    for i in 0..5 {
        publish(&app, Some(&tenant), "noise.x", i).await;
    }
    let r = app.get("/feed?types=rare.*", &key).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert!(event_ids(&r.body).is_empty());
    let past = r.body["next_cursor"].as_str().unwrap().to_owned();
    assert_ne!(past, "0-0", "moved past the five it looked at");
    // From there the five are behind it: reading from the start with no filter gives them,
    // reading from `past` gives none.
    let all = app.get("/feed", &key).await;
    assert_eq!(event_ids(&all.body).len(), 5);
    let after = app.get(&format!("/feed?after={past}"), &key).await;
    assert!(event_ids(&after.body).is_empty(), "{:?}", after.body);
    let rare = publish(&app, Some(&tenant), "rare.one", 9).await;
    let r = app
        .get(&format!("/feed?types=rare.*&after={past}"), &key)
        .await;
    assert_eq!(event_ids(&r.body), vec![rare.clone()]);

    // A consumer: its empty read hands out the moved cursor, which it may ack.
    let c = create_consumer(&app, &key, json!({ "name": "rare", "types": ["never.*"] })).await;
    assert_eq!(c.status, StatusCode::CREATED, "{:?}", c.body);
    let r = app.get("/consumers/rare/events", &key).await;
    assert!(event_ids(&r.body).is_empty());
    let next = r.body["next_cursor"].as_str().unwrap().to_owned();
    assert_ne!(next, "0-0");
    let ack = app
        .post("/consumers/rare:ack", &key, json!({ "cursor": next }))
        .await;
    assert_eq!(ack.status, StatusCode::OK, "{:?}", ack.body);
    assert_eq!(ack.body["cursor"], next.as_str());
}

async fn create_consumer(app: &TestApp, key: &str, body: Value) -> Reply {
    app.post("/consumers", key, body).await
}

#[tokio::test]
async fn consumers_resume_after_their_ack_and_acks_move_forward_only() {
    let app = spawn_app("[feed]\nmax_consumers_per_tenant = 2\n").await;
    let (tenant, key) = app.tenant("acme").await;
    let (_, other_key) = app.tenant("other").await;
    let r = create_consumer(&app, &key, json!({ "name": "billing", "types": ["pay.*"] })).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["name"], "billing");
    assert_eq!(r.body["types"], json!(["pay.*"]));
    assert_eq!(r.body["cursor"], "0-0");
    assert_problem(
        &create_consumer(&app, &key, json!({ "name": "billing" })).await,
        StatusCode::CONFLICT,
        "ALREADY_EXISTS",
    );
    for bad in [
        json!({ "name": "" }),
        json!({ "name": "a:b" }),
        json!({ "name": "." }),
        json!({ "name": ".." }),
        json!({ "name": "ok", "types": ["pay."] }),
        json!({ "name": "ok", "start": "middle" }),
        json!({ "name": "ok", "extra": 1 }),
    ] {
        assert_problem(
            &create_consumer(&app, &key, bad).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_REQUEST",
        );
    }

    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for i in 0..4 {
            ids.push(publish(&app, Some(&tenant), "pay.ok", i).await);
            publish(&app, Some(&tenant), "refund.ok", i).await;
        }
        ids
    };
    // Reads after the acknowledged cursor, with the consumer's types.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let page = loop {
        let page = app
            .get("/consumers/billing/events?wait=2s", &key)
            .await
            .body;
        if event_ids(&page).len() >= 4 || std::time::Instant::now() > deadline {
            break page;
        }
    };
    assert_eq!(event_ids(&page), ids);
    // Not acked: read again, the same events come again (at least once).
    let r = app.get("/consumers/billing/events?page_size=2", &key).await;
    assert_eq!(event_ids(&r.body), ids[..2]);
    let second = r.body["next_cursor"].as_str().unwrap().to_owned();
    let r = app
        .post("/consumers/billing:ack", &key, json!({ "cursor": second }))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["cursor"], second.as_str());
    let r = app.get("/consumers/billing/events", &key).await;
    assert_eq!(event_ids(&r.body), ids[2..], "only what follows the ack");
    // An ack behind the acknowledged cursor changes nothing.
    let r = app
        .post("/consumers/billing:ack", &key, json!({ "cursor": "0-0" }))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["cursor"], second.as_str());
    // A cursor this consumer was never handed, or not a cursor at all.
    assert_problem(
        &app.post(
            "/consumers/billing:ack",
            &key,
            json!({ "cursor": "7fffffffffffffff-1" }),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "CURSOR_NOT_DELIVERED",
    );
    assert_problem(
        &app.post("/consumers/billing:ack", &key, json!({ "cursor": "x" }))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_REQUEST",
    );
    let got = app.get("/consumers/billing", &key).await;
    assert_eq!(got.body["cursor"], second.as_str());

    // Another tenant sees no such consumer, and cannot ack or read it.
    for path in ["/consumers/billing", "/consumers/billing/events"] {
        assert_problem(
            &app.get(path, &other_key).await,
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        );
    }
    assert_problem(
        &app.post(
            "/consumers/billing:ack",
            &other_key,
            json!({ "cursor": second }),
        )
        .await,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
    );
    let list = app.get("/consumers", &other_key).await;
    assert_eq!(list.body["consumers"], json!([]));

    // `latest` starts after everything there now; the cap holds.
    let r = create_consumer(&app, &key, json!({ "name": "fresh", "start": "latest" })).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = app.get("/consumers/fresh/events", &key).await;
    assert_eq!(event_ids(&r.body), Vec::<String>::new());
    assert_problem(
        &create_consumer(&app, &key, json!({ "name": "third" })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "LIMIT_REACHED",
    );
    let list = app.get("/consumers", &key).await;
    let names: Vec<&str> = list.body["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["billing", "fresh"]);
    let r = app
        .call(reqwest::Method::DELETE, "/consumers/fresh", &key, None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_problem(
        &app.get("/consumers/fresh", &key).await,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
    );
    // An admin names the tenant.
    let r = app
        .get(&format!("/consumers/billing?tenant={tenant}"), ADMIN)
        .await;
    assert_eq!(r.body["cursor"], second.as_str());
}

/// Two nodes on one PostgreSQL database, producers on both at once; one reader follows
/// the feed through either node in turn: every event once, in one order both agree on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_one_feed_every_event_once() {
    let a = spawn_app("").await;
    let Some(b) = a.second_node("").await else {
        println!("skipped: needs PostgreSQL (HERALD_TEST_HTTP_DATABASE_URL)");
        return;
    };
    let (tenant, key) = a.tenant("acme").await;
    const EACH: usize = 60;
    let producers: Vec<_> = [&a, &b]
        .into_iter()
        .enumerate()
        .map(|(node, app)| {
            let (http, base, tenant) = (app.http.clone(), app.base.clone(), tenant.clone());
            tokio::spawn(async move {
                let mut ids = Vec::new();
                // Ten at a time, so the nodes' event writers batch and interleave.
                for chunk in 0..EACH / 10 {
                    let sends = (0..10).map(|j| {
                        let (http, base, tenant) = (http.clone(), base.clone(), tenant.clone());
                        let i = chunk * 10 + j;
                        async move {
                            let r = http
                                .post(format!("{base}/events"))
                                .bearer_auth(ADMIN)
                                .json(&json!({ "type": "pay.ok", "tenant": tenant, "data": { "node": node, "i": i } }))
                                .send()
                                .await
                                .unwrap();
                            assert_eq!(r.status(), StatusCode::ACCEPTED);
                            r.json::<Value>().await.unwrap()["id"]
                                .as_str()
                                .unwrap()
                                .to_owned()
                        }
                    });
                    ids.extend(futures::future::join_all(sends).await);
                }
                ids
            })
        })
        .collect();
    // The reader, through A then B then A…, while the producers run.
    let mut seen: Vec<String> = Vec::new();
    let mut cursor = String::new();
    let nodes = [&a, &b];
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut turn = 0;
    while seen.len() < 2 * EACH && std::time::Instant::now() < deadline {
        let node = nodes[turn % 2];
        turn += 1;
        let r = node
            .get(&format!("/feed?after={cursor}&wait=2s&page_size=7"), &key)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        seen.extend(event_ids(&r.body));
        cursor = r.body["next_cursor"].as_str().unwrap().to_owned();
    }
    let mut published = HashSet::new();
    for p in producers {
        published.extend(p.await.unwrap());
    }
    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no event twice");
    assert_eq!(unique, published, "every event, none skipped");
    // Both nodes answer the same order from the start.
    let (from_a, _) = follow(&a, &key, "/feed?page_size=1000", 2 * EACH).await;
    let (from_b, _) = follow(&b, &key, "/feed?page_size=1000", 2 * EACH).await;
    let order = |events: &[Value]| -> Vec<String> {
        events
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(order(&from_a), seen);
    assert_eq!(order(&from_b), seen);

    // A long poll on B is woken by a commit on A (LISTEN/NOTIFY), not by its wait.
    let waiter = {
        let (http, url, key) = (
            b.http.clone(),
            format!("{}/feed?after={cursor}&wait=50s", b.base),
            key.clone(),
        );
        tokio::spawn(async move {
            let r = http.get(url).bearer_auth(key).send().await.unwrap();
            r.json::<Value>().await.unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "the long poll on B holds while nothing is new"
    );
    let last = publish(&a, Some(&tenant), "pay.ok", 0).await;
    let page = tokio::time::timeout(Duration::from_secs(40), waiter)
        .await
        .expect("woken by A's commit, not by the 50 s wait")
        .unwrap();
    assert_eq!(event_ids(&page), vec![last]);
}
