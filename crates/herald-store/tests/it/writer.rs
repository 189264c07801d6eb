//! The SQLite writer's bounded queue, through the public API: while the writer cannot
//! commit, writes past the bound are refused at once with `Overloaded` and change nothing;
//! the ones it took are all stored once it can.

use herald_core::ids::TenantId;
use herald_core::Timestamp;
use herald_store::sqlite::SqliteStore;
use herald_store::{DeliveryStore, StoreError, Tenant, TenantStore};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_write_queue_refuses_at_once_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.db");
    let store = Arc::new(SqliteStore::open_with(&path, 2).unwrap());
    // Another connection holds the write lock, so the writer thread waits in `BEGIN`
    // with the first job it took, and its queue of 2 fills up.
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();

    const CALLS: usize = 20;
    let (done, mut answers) = tokio::sync::mpsc::unbounded_channel();
    let mut ids = Vec::new();
    for i in 0..CALLS {
        let t = Tenant {
            id: TenantId::generate(),
            name: format!("t{i}"),
            created_at: Timestamp(1_775_834_400_000),
        };
        ids.push(t.id);
        let (store, done) = (store.clone(), done.clone());
        tokio::spawn(async move {
            let id = t.id;
            let result = store.create_tenant(t).await;
            drop(store); // before answering, so the test can reopen the file after
            let _ = done.send((id, result));
        });
    }
    drop(done);
    // At most one job in the writer and two queued: every other call is refused without
    // waiting for the writer, which is still stuck.
    let mut outcomes = Vec::new();
    let mut refused = 0;
    while refused < CALLS - 3 {
        let (id, result) = answers.recv().await.unwrap();
        match &result {
            Err(StoreError::Overloaded) => refused += 1,
            other => panic!("{id}: {other:?} while the writer could not commit"),
        }
        outcomes.push((id, result));
    }
    other.execute_batch("ROLLBACK").unwrap();
    while let Some(outcome) = answers.recv().await {
        outcomes.push(outcome);
    }
    assert_eq!(outcomes.len(), CALLS);
    let stored = outcomes.iter().filter(|(_, r)| r.is_ok()).count();
    assert!(
        (2..=3).contains(&stored),
        "the writer took at most 1 + 2 queued, at least the 2 queued: {outcomes:?}"
    );
    for (id, result) in &outcomes {
        match result {
            Ok(_) | Err(StoreError::Overloaded) => {}
            Err(e) => panic!("{id}: {e}"),
        }
    }

    // A refused write changed nothing; an accepted one is on disk.
    drop(store);
    let store = SqliteStore::open(&path).unwrap();
    for (id, result) in &outcomes {
        let found = match store.get_tenant(*id).await {
            Ok(_) => true,
            Err(StoreError::NotFound) => false,
            Err(e) => panic!("reading {id}: {e}"),
        };
        assert_eq!(found, result.is_ok(), "{id}: {result:?}");
    }
    // And the store takes writes again.
    store
        .create_tenant(Tenant {
            id: TenantId::generate(),
            name: "after".into(),
            created_at: Timestamp(1_775_834_400_000),
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn herald_s_own_loops_wait_for_room_instead_of_failing() {
    // Delivery results under overload: refusing them would only send the deliveries
    // again when their leases ran out, so the dispatcher's writes wait for the queue.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.db");
    let store = Arc::new(SqliteStore::open_with(&path, 1).unwrap());
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let fill = |n: usize| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .create_tenant(Tenant {
                    id: TenantId::generate(),
                    name: format!("t{n}"),
                    created_at: Timestamp(1_775_834_400_000),
                })
                .await
        })
    };
    // One in the writer (stuck in BEGIN), one queued: the queue is full.
    let a = fill(0);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let b = fill(1);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(matches!(
        fill(2).await.unwrap(),
        Err(StoreError::Overloaded)
    ));
    let results = {
        let store = store.clone();
        tokio::spawn(async move { store.record_attempts(vec![]).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        !results.is_finished(),
        "it waits for room, it is not refused"
    );
    other.execute_batch("ROLLBACK").unwrap();
    results.await.unwrap().unwrap();
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
}
