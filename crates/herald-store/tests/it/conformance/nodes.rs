//! PostgreSQL only: many nodes on one database.

use super::*;
use herald_testkit::database::postgres_or_skip;

/// Several stores on one database stand for several nodes: migrations run once when
/// they start together, and a change made through one wakes the waiters of another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_nodes_share_migrations_and_wake_each_other() {
    let Some(db) = postgres_or_skip().await else {
        return;
    };
    let (name, url) = (db.name.clone(), db.url.clone());
    // Even on a database whose default is not durable, Herald's commits are.
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "ALTER DATABASE \"{name}\" SET synchronous_commit = off"
        ))
        .await
        .unwrap();
    drop(client);
    let (a, b, c) = tokio::join!(
        PgStore::connect(&url),
        PgStore::connect(&url),
        PgStore::connect(&url)
    );
    let (a, b, _c) = (a.unwrap(), b.unwrap(), c.unwrap());
    let patience = Duration::from_secs(30);
    assert_eq!(a.setting("synchronous_commit").await.unwrap(), "on");

    // Queued on A wakes a claimer waiting on B.
    let queued = b.signals().operations_queued.notified();
    tokio::pin!(queued);
    queued.as_mut().enable();
    let id = a
        .create_operation(new_op(None, "transcode", 3), None)
        .await
        .unwrap()
        .into_inner()
        .id;
    tokio::time::timeout(patience, queued)
        .await
        .expect("B heard of the queued operation");

    // A change on A reaches B's `:wait` waiters, with the operation's id.
    let mut changed = b.signals().operation_changed.subscribe();
    let claimed = claim(&a, &["transcode"], 1, at(1)).await;
    assert_eq!(claimed[0].id, id);
    let heard = tokio::time::timeout(patience, changed.recv())
        .await
        .expect("B heard of the change")
        .unwrap();
    assert_eq!(heard, id);
    // B sees what A committed.
    assert!(matches!(
        b.get_operation(id).await.unwrap().state,
        OperationState::Running { .. }
    ));

    // New deliveries made through B wake A's dispatcher.
    let t = tenant(&b, "acme").await;
    b.create_webhook(webhook(Some(t), &["x.*"])).await.unwrap();
    let due = a.signals().deliveries_due.notified();
    tokio::pin!(due);
    due.as_mut().enable();
    emit(&b, event(Some(t), "x.y", None, at(2))).await;
    tokio::time::timeout(patience, due)
        .await
        .expect("A heard of the due delivery");
    assert_eq!(
        a.claim_due_deliveries(at(3), 10, LEASE)
            .await
            .unwrap()
            .len(),
        1
    );
}

fn whole_feed(tenant: TenantId, after: FeedPosition) -> FeedQuery {
    FeedQuery {
        tenant: Some(tenant),
        after,
        types: Vec::new(),
        limit: 1000,
    }
}

/// Stores an event in a transaction of its own connection, left open: a node whose
/// transaction began (and drew its id) first and has not committed yet.
async fn open_event_transaction(
    client: &mut tokio_postgres::Client,
    tenant: TenantId,
) -> (tokio_postgres::Transaction<'_>, EventId) {
    let tx = client.transaction().await.unwrap();
    let id = EventId::generate();
    tx.execute(
        "INSERT INTO events (id, tenant_id, type, data, request_hash, created_at) \
         VALUES ($1, $2, 'pay.ok', '{}', 'h', 0)",
        &[&id.to_string(), &tenant.to_string()],
    )
    .await
    .unwrap();
    (tx, id)
}

/// Ids are not commit-ordered: a transaction that began first and commits last must not
/// be skipped by a reader that already went past a later one. The later event is held
/// back until the earlier transaction has ended; then both come, earlier first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_feed_holds_back_events_behind_a_transaction_still_running() {
    let Some(db) = postgres_or_skip().await else {
        return;
    };
    let store = PgStore::connect(&db.url).await.unwrap();
    let t = tenant(&store, "a").await;
    let (mut client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let (tx, early) = open_event_transaction(&mut client, t).await;
    let later = store
        .insert_event(event(Some(t), "pay.ok", None, at(1)), None)
        .await
        .unwrap()
        .into_inner();
    let page = store
        .read_feed(whole_feed(t, FeedPosition::START))
        .await
        .unwrap();
    assert!(
        page.events.is_empty(),
        "the later commit is held back behind the transaction still running"
    );
    assert!(page.held_back, "and the reader is told so");
    tx.commit().await.unwrap();
    // Other tests' transactions on this server may hold it back a moment longer.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let page = loop {
        let page = store
            .read_feed(whole_feed(t, FeedPosition::START))
            .await
            .unwrap();
        if page.events.len() >= 2 || std::time::Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let ids: Vec<EventId> = page.events.iter().map(|(_, e)| e.id).collect();
    assert_eq!(ids, vec![early, later.id]);
}

/// Many writers on several connections commit in an order unrelated to the order their
/// transactions began, while a reader follows the feed: it sees every event exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_feed_follower_sees_every_out_of_order_commit_once() {
    let Some(db) = postgres_or_skip().await else {
        return;
    };
    let store = Arc::new(PgStore::connect(&db.url).await.unwrap());
    let t = tenant(&*store, "a").await;
    const WRITERS: usize = 6;
    const EACH: usize = 15;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let url = db.url.clone();
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let (mut client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(connection);
            let mut ids = Vec::new();
            for i in 0..EACH {
                // Raw transactions held open a varying while, and the store's own writer.
                let (tx, id) = open_event_transaction(&mut client, t).await;
                let hold = ((w * 31 + i * 17) % 40) as u64;
                tokio::time::sleep(Duration::from_millis(hold)).await;
                if i % 3 == 0 {
                    ids.push(
                        store
                            .insert_event(event(Some(t), "pay.ok", None, at(i as i64)), None)
                            .await
                            .unwrap()
                            .into_inner()
                            .id,
                    );
                }
                tx.commit().await.unwrap();
                ids.push(id);
            }
            ids
        }));
    }
    let follower = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut seen: Vec<EventId> = Vec::new();
            let mut cursor = FeedPosition::START;
            let total = WRITERS * (EACH + EACH.div_ceil(3));
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            while seen.len() < total && std::time::Instant::now() < deadline {
                let mut q = whole_feed(t, cursor);
                q.limit = 7;
                let page = store.read_feed(q).await.unwrap();
                for (p, e) in &page.events {
                    assert!(*p > cursor);
                    cursor = *p;
                    seen.push(e.id);
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            seen
        })
    };
    let mut written = HashSet::new();
    for w in writers {
        written.extend(w.await.unwrap());
    }
    let seen = follower.await.unwrap();
    let unique: HashSet<EventId> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "no event twice");
    assert_eq!(unique, written, "every event, none skipped");
}
