//! The reaper (expired leases, deadlines, retention) and claims (by tenant, never shared).

use super::*;

pub(super) async fn reap_requeues_expired_leases_then_worker_lost(s: &dyn Store) {
    let id = create(s, new_op(None, "transcode", 2)).await;
    let first = claim(s, &["transcode"], 1, at(0)).await; // lease until at(10)
    assert_eq!(s.next_operation_timer().await.unwrap(), Some(at(10)));
    assert_eq!(
        s.reap_operations(at(5)).await.unwrap(),
        ReapReport::default()
    );
    let report = s.reap_operations(at(10)).await.unwrap();
    assert_eq!(report.requeued, 1);
    assert_eq!(
        s.get_operation(id).await.unwrap().state,
        OperationState::Queued
    );
    assert!(matches!(
        s.heartbeat(Heartbeat {
            id,
            lease_token: token(&first[0]),
            metadata: None,
            lease: LEASE,
            now: at(11)
        })
        .await,
        Err(StoreError::StaleLease)
    ));
    let second = claim(s, &["transcode"], 1, at(11)).await;
    assert_eq!(second[0].attempt, 2);
    let report = s.reap_operations(at(30)).await.unwrap();
    assert_eq!(report.worker_lost, 1);
    let op = s.get_operation(id).await.unwrap();
    assert_eq!(error_code(&op).as_deref(), Some(codes::WORKER_LOST));
    assert_eq!(
        s.list_events(EventFilter {
            event_type: Some("transcode.failed".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .len(),
        1
    );
}

pub(super) async fn reap_enforces_deadlines(s: &dyn Store) {
    let mut op = new_op(None, "transcode", 3);
    op.deadline_at = Some(at(5));
    let queued = create(s, op).await;
    let mut op = new_op(None, "transcode", 3);
    op.deadline_at = Some(at(100));
    let later = create(s, op).await;
    assert_eq!(s.next_operation_timer().await.unwrap(), Some(at(5)));
    assert_eq!(s.reap_operations(at(4)).await.unwrap().deadline_exceeded, 0);
    let report = s.reap_operations(at(5)).await.unwrap();
    assert_eq!(report.deadline_exceeded, 1);
    assert_eq!(
        error_code(&s.get_operation(queued).await.unwrap()).as_deref(),
        Some(codes::DEADLINE_EXCEEDED)
    );
    assert_eq!(
        s.get_operation(later).await.unwrap().state,
        OperationState::Queued
    );
}

pub(super) async fn reap_purges_after_retention(s: &dyn Store) {
    let mut op = new_op(None, "transcode", 3);
    op.retention = Duration::from_secs(60);
    let id = create(s, op).await;
    s.cancel_operation(id, at(1)).await.unwrap(); // done at(1), purge at(61)
    assert_eq!(s.next_operation_timer().await.unwrap(), Some(at(61)));
    assert_eq!(s.reap_operations(at(60)).await.unwrap().purged, 0);
    assert!(s.get_operation(id).await.is_ok());
    assert_eq!(s.reap_operations(at(61)).await.unwrap().purged, 1);
    assert!(matches!(
        s.get_operation(id).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(s.next_operation_timer().await.unwrap(), None);
}

/// A tenant-scoped claim leases only those tenants' operations, oldest first, never
/// another tenant's nor one of no tenant; an empty tenant list claims nothing.
pub(super) async fn claims_filter_by_tenant(s: &dyn Store) {
    let (a, b, c) = (
        tenant(s, "a").await,
        tenant(s, "b").await,
        tenant(s, "c").await,
    );
    let mut made = HashMap::new();
    for (i, owner) in [Some(a), Some(b), None, Some(c), Some(a), Some(b)]
        .into_iter()
        .enumerate()
    {
        let mut op = new_op(owner, "transcode", 3);
        op.created_at = at(i as i64);
        made.insert(create(s, op).await, owner);
    }
    let scoped = |tenants: Option<Vec<TenantId>>, max| ClaimRequest {
        types: vec!["transcode".into()],
        tenants,
        max,
        lease: LEASE,
        now: at(10),
    };
    assert!(s
        .claim_operations(scoped(Some(vec![]), 10))
        .await
        .unwrap()
        .is_empty());
    let first = s
        .claim_operations(scoped(Some(vec![a, c]), 2))
        .await
        .unwrap();
    let owners: Vec<_> = first.iter().map(|o| o.tenant).collect();
    assert_eq!(
        owners,
        vec![Some(a), Some(c)],
        "oldest first, in scope only"
    );
    let rest = s
        .claim_operations(scoped(Some(vec![a, c]), 10))
        .await
        .unwrap();
    assert_eq!(
        rest.iter().map(|o| o.tenant).collect::<Vec<_>>(),
        vec![Some(a)]
    );
    assert!(s
        .claim_operations(scoped(Some(vec![a, c]), 10))
        .await
        .unwrap()
        .is_empty());
    for op in first.iter().chain(&rest) {
        assert_eq!(made[&op.id], op.tenant);
    }
    // Unscoped, the rest: b's two and the one of no tenant.
    let others = s.claim_operations(scoped(None, 10)).await.unwrap();
    let mut owners: Vec<_> = others.iter().map(|o| o.tenant).collect();
    owners.sort_by_key(|t| t.map(|t| t.to_string()));
    assert_eq!(owners, vec![None, Some(b), Some(b)]);
}

pub(super) async fn concurrent_claims_never_share_an_operation(s: &dyn Store) {
    const N: usize = 300;
    for _ in 0..N {
        create(s, new_op(None, "transcode", 3)).await;
    }
    let claimer = || async {
        let mut mine = Vec::new();
        loop {
            let got = claim(s, &["transcode"], 7, at(1)).await;
            if got.is_empty() {
                return mine;
            }
            mine.extend(got.into_iter().map(|o| o.id));
        }
    };
    let all: Vec<Vec<OperationId>> = futures::future::join_all((0..8).map(|_| claimer())).await;
    let total: usize = all.iter().map(Vec::len).sum();
    let distinct: HashSet<OperationId> = all.into_iter().flatten().collect();
    assert_eq!(total, N, "every operation claimed exactly once");
    assert_eq!(distinct.len(), N);
}
