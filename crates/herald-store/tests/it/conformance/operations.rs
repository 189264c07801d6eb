//! Operations: create, get and list, idempotency, claim, heartbeat and finish, retryable failure, cancel, delete, concurrent gets.

use super::*;

pub(super) async fn operation_create_get_and_list(s: &dyn Store) {
    let t = tenant(s, "acme").await;
    let other = tenant(s, "other").await;
    let mut ids = vec![];
    for _ in 0..3 {
        ids.push(create(s, new_op(Some(t), "transcode", 3)).await);
    }
    create(s, new_op(Some(t), "resize", 3)).await;
    create(s, new_op(Some(other), "transcode", 3)).await;

    let op = s.get_operation(ids[0]).await.unwrap();
    assert_eq!(op.state, OperationState::Queued);
    assert_eq!(op.tenant, Some(t));
    assert_eq!(op.attempt, 0);
    assert_eq!(op.input, json!({ "video": "vid_1" }));
    assert!(matches!(
        s.get_operation(OperationId::generate()).await,
        Err(StoreError::NotFound)
    ));

    let listed = s
        .list_operations(OperationFilter {
            tenant: Some(t),
            op_type: Some("transcode".into()),
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    // Newest first, two to a page.
    assert_eq!(
        listed.iter().map(|o| o.id).collect::<Vec<_>>(),
        vec![ids[2], ids[1]]
    );
    let next = s
        .list_operations(OperationFilter {
            tenant: Some(t),
            op_type: Some("transcode".into()),
            before: Some(ids[1]),
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(next.iter().map(|o| o.id).collect::<Vec<_>>(), vec![ids[0]]);
    let all = s
        .list_operations(OperationFilter {
            tenant: Some(t),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 4);
    let done = s
        .list_operations(OperationFilter {
            tenant: Some(t),
            done: Some(true),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(done.is_empty());
}

pub(super) async fn operation_idempotency(s: &dyn Store) {
    let idem = |hash: &str| Idempotency {
        scope: "admin:POST /operations".into(),
        key: "k1".into(),
        request_hash: hash.into(),
    };
    let first = s
        .create_operation(new_op(None, "transcode", 3), Some(idem("h")))
        .await
        .unwrap();
    assert!(first.is_new());
    let again = s
        .create_operation(new_op(None, "transcode", 3), Some(idem("h")))
        .await
        .unwrap();
    assert!(!again.is_new());
    assert_eq!(again.into_inner().id, first.clone().into_inner().id);
    assert!(matches!(
        s.create_operation(new_op(None, "transcode", 3), Some(idem("other")))
            .await,
        Err(StoreError::IdempotencyMismatch)
    ));
    let other_scope = Idempotency {
        scope: "tenant:x".into(),
        ..idem("h")
    };
    assert!(s
        .create_operation(new_op(None, "transcode", 3), Some(other_scope))
        .await
        .unwrap()
        .is_new());
    // Only two operations exist.
    assert_eq!(
        s.list_operations(OperationFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .len(),
        2
    );
    // Deleting the operation releases its key: a retry, even with another body, makes a
    // new one (a Location the client could not read would be no answer), and the key then
    // names the new one.
    let first = first.into_inner().id;
    s.delete_operation(first, at(1)).await.unwrap();
    let after = s
        .create_operation(new_op(None, "transcode", 3), Some(idem("other")))
        .await
        .unwrap();
    assert!(after.is_new());
    let after = after.into_inner().id;
    assert_ne!(after, first);
    let again = s
        .create_operation(new_op(None, "transcode", 3), Some(idem("other")))
        .await
        .unwrap();
    assert!(!again.is_new());
    assert_eq!(again.into_inner().id, after);
    assert!(matches!(
        s.create_operation(new_op(None, "transcode", 3), Some(idem("h")))
            .await,
        Err(StoreError::IdempotencyMismatch)
    ));
}

pub(super) async fn operation_claim_heartbeat_complete(s: &dyn Store) {
    let t = tenant(s, "acme").await;
    let id = create(s, new_op(Some(t), "transcode", 3)).await;
    create(s, new_op(Some(t), "resize", 3)).await;
    assert!(claim(s, &["nothing"], 10, at(1)).await.is_empty());
    let claimed = claim(s, &["transcode"], 10, at(1)).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, id);
    assert_eq!(claimed[0].attempt, 1);
    let lease = token(&claimed[0]);
    assert!(
        claim(s, &["transcode"], 10, at(1)).await.is_empty(),
        "a running operation is not claimed twice"
    );

    let stale = s
        .heartbeat(Heartbeat {
            id,
            lease_token: "lt_wrong".into(),
            metadata: None,
            lease: LEASE,
            now: at(2),
        })
        .await;
    assert!(matches!(stale, Err(StoreError::StaleLease)));
    let mut progress = Map::new();
    progress.insert("progress_percent".into(), json!(42));
    progress.insert("type".into(), json!("hijacked"));
    let beat = s
        .heartbeat(Heartbeat {
            id,
            lease_token: lease.clone(),
            metadata: Some(progress),
            lease: LEASE,
            now: at(2),
        })
        .await
        .unwrap();
    assert!(!beat.cancel_requested);
    assert_eq!(
        beat.state,
        OperationState::Running {
            lease_token: lease.clone(),
            lease_expires_at: at(32)
        }
    );
    let read = s.get_operation(id).await.unwrap();
    assert_eq!(read.metadata["progress_percent"], json!(42));
    assert_eq!(read.metadata["type"], json!("transcode"));

    assert!(matches!(
        s.finish_operation(finish(id, "lt_wrong", FinishAs::Complete(json!({})), at(3)))
            .await,
        Err(StoreError::StaleLease)
    ));
    let done = s
        .finish_operation(finish(
            id,
            &lease,
            FinishAs::Complete(json!({ "url": "u" })),
            at(3),
        ))
        .await
        .unwrap();
    assert_eq!(
        done.state,
        OperationState::Done(Outcome::Response(json!({ "url": "u" })))
    );
    let read = s.get_operation(id).await.unwrap();
    assert_eq!(read, done);
    assert_eq!(read.metadata["progress_percent"], json!(100));
    assert!(matches!(
        s.finish_operation(finish(id, &lease, FinishAs::Complete(json!({})), at(4)))
            .await,
        Err(StoreError::AlreadyDone)
    ));
    // The final event carries the final operation.
    let events = s
        .list_events(EventFilter {
            event_type: Some("transcode.succeeded".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].tenant, Some(t));
    assert_eq!(events[0].data["done"], json!(true));
    assert_eq!(events[0].data["response"], json!({ "url": "u" }));
    let done = s
        .list_operations(OperationFilter {
            done: Some(true),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(done.len(), 1);
}

pub(super) async fn operation_retryable_failure_requeues_until_max_attempts(s: &dyn Store) {
    let id = create(s, new_op(None, "transcode", 2)).await;
    let first = claim(s, &["transcode"], 1, at(1)).await;
    let op = s
        .finish_operation(finish(id, &token(&first[0]), fail("FLAKY", true), at(2)))
        .await
        .unwrap();
    assert_eq!(op.state, OperationState::Queued);
    let second = claim(s, &["transcode"], 1, at(3)).await;
    assert_eq!(second[0].attempt, 2);
    // The first lease is stale now.
    assert!(matches!(
        s.finish_operation(finish(id, &token(&first[0]), fail("FLAKY", true), at(4)))
            .await,
        Err(StoreError::StaleLease)
    ));
    let op = s
        .finish_operation(finish(id, &token(&second[0]), fail("FLAKY", true), at(4)))
        .await
        .unwrap();
    assert_eq!(error_code(&op).as_deref(), Some("FLAKY"));
    let failed = s
        .list_events(EventFilter {
            event_type: Some("transcode.failed".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);

    // A failure that is not retryable ends the operation at once.
    let id = create(s, new_op(None, "transcode", 5)).await;
    let c = claim(s, &["transcode"], 1, at(5)).await;
    let op = s
        .finish_operation(finish(id, &token(&c[0]), fail("BAD_INPUT", false), at(6)))
        .await
        .unwrap();
    assert_eq!(error_code(&op).as_deref(), Some("BAD_INPUT"));
}

pub(super) async fn operation_cancel_queued_and_running(s: &dyn Store) {
    let queued = create(s, new_op(None, "transcode", 3)).await;
    let op = s.cancel_operation(queued, at(1)).await.unwrap();
    assert_eq!(error_code(&op).as_deref(), Some(codes::CANCELLED));
    assert_eq!(
        error_code(&s.get_operation(queued).await.unwrap()).as_deref(),
        Some(codes::CANCELLED)
    );
    assert_eq!(
        s.list_events(EventFilter {
            event_type: Some("transcode.cancelled".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .len(),
        1
    );
    // Cancelling again changes nothing.
    assert_eq!(
        s.cancel_operation(queued, at(2)).await.unwrap(),
        s.get_operation(queued).await.unwrap()
    );

    let running = create(s, new_op(None, "transcode", 3)).await;
    let c = claim(s, &["transcode"], 1, at(1)).await;
    let op = s.cancel_operation(running, at(2)).await.unwrap();
    assert!(op.cancel_requested);
    assert!(!op.state.is_done());
    let beat = s
        .heartbeat(Heartbeat {
            id: running,
            lease_token: token(&c[0]),
            metadata: None,
            lease: LEASE,
            now: at(3),
        })
        .await
        .unwrap();
    assert!(beat.cancel_requested);
    // A retryable failure after a cancel request is final.
    let op = s
        .finish_operation(finish(running, &token(&c[0]), fail("STOPPED", true), at(4)))
        .await
        .unwrap();
    assert!(op.state.is_done());
    assert!(matches!(
        s.cancel_operation(OperationId::generate(), at(5)).await,
        Err(StoreError::NotFound)
    ));
}

pub(super) async fn operation_delete_hides_but_work_goes_on(s: &dyn Store) {
    let id = create(s, new_op(None, "transcode", 3)).await;
    let c = claim(s, &["transcode"], 1, at(1)).await;
    s.delete_operation(id, at(2)).await.unwrap();
    assert!(matches!(
        s.get_operation(id).await,
        Err(StoreError::NotFound)
    ));
    assert!(s
        .list_operations(OperationFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .is_empty());
    assert!(matches!(
        s.delete_operation(id, at(3)).await,
        Err(StoreError::NotFound)
    ));
    // The worker-facing read still finds it, lease and all, and a heartbeat extends it.
    let held = s.get_operation_for_worker(id).await.unwrap();
    assert_eq!(held.state, c[0].state);
    assert!(matches!(
        s.get_operation_for_worker(OperationId::generate()).await,
        Err(StoreError::NotFound)
    ));
    s.heartbeat(Heartbeat {
        id,
        lease_token: token(&c[0]),
        metadata: None,
        lease: LEASE,
        now: at(3),
    })
    .await
    .unwrap();
    // The worker can still finish it, and its final event is still raised.
    s.finish_operation(finish(
        id,
        &token(&c[0]),
        FinishAs::Complete(json!(1)),
        at(4),
    ))
    .await
    .unwrap();
    assert_eq!(
        s.list_events(EventFilter {
            event_type: Some("transcode.succeeded".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .len(),
        1
    );
}

/// Many look-ups at once (PostgreSQL answers them in shared batches): each gets its own
/// operation, an operation asked for by several gets it every time, and deleted or unknown
/// ids are not found.
pub(super) async fn concurrent_gets_each_answer_their_own_operation(s: &dyn Store) {
    let mut live = Vec::new();
    let mut gone = Vec::new();
    for i in 0..30 {
        let id = create(s, new_op(None, &format!("type{}", i % 3), 3)).await;
        if i % 6 == 0 {
            s.delete_operation(id, at(1)).await.unwrap();
            gone.push(id);
        } else {
            live.push(id);
        }
    }
    let unknown: Vec<OperationId> = (0..5).map(|_| OperationId::generate()).collect();
    // Every id five times over, interleaved, all in flight together.
    let mut asks: Vec<OperationId> = Vec::new();
    for _ in 0..5 {
        asks.extend(&live);
        asks.extend(&gone);
        asks.extend(&unknown);
    }
    let answers = futures::future::join_all(asks.iter().map(|&id| s.get_operation(id))).await;
    for (id, answer) in asks.iter().zip(answers) {
        if live.contains(id) {
            let op = answer.unwrap_or_else(|e| panic!("{id}: {e}"));
            assert_eq!(op.id, *id);
            assert_eq!(op.state, OperationState::Queued);
        } else {
            assert!(
                matches!(answer, Err(StoreError::NotFound)),
                "{id} should not be found: {answer:?}"
            );
        }
    }
}
