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
