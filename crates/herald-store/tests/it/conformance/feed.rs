//! The pull feed: commit order, cursors, type filters, tenants, and consumers' acks,
//! on both backends; on PostgreSQL, a transaction that began first and commits last.

use super::*;

fn feed(tenant: Option<TenantId>, after: FeedPosition, types: &[&str]) -> FeedQuery {
    FeedQuery {
        tenant,
        after,
        types: types
            .iter()
            .map(|t| EventPattern::parse(t).unwrap())
            .collect(),
        limit: 100,
    }
}

/// Reads until `n` events are there (or 30 s pass). On PostgreSQL a commit is readable
/// once every older write transaction on the server has ended, which other tests' may
/// briefly delay; SQLite answers at once.
async fn settled(s: &dyn Store, q: FeedQuery, n: usize) -> FeedPage {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let page = s.read_feed(q.clone()).await.unwrap();
        if page.events.len() >= n || std::time::Instant::now() > deadline {
            return page;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ids(page: &FeedPage) -> Vec<EventId> {
    page.events.iter().map(|(_, e)| e.id).collect()
}

pub async fn feed_reads_in_commit_order_after_a_cursor(s: &dyn Store) {
    let (a, b) = (tenant(s, "a").await, tenant(s, "b").await);
    let mut stored = Vec::new();
    for (i, ty) in ["pay.ok", "pay.failed", "refund.ok", "pay.ok"]
        .iter()
        .enumerate()
    {
        let e = s
            .insert_event(event(Some(a), ty, None, at(i as i64)), None)
            .await;
        stored.push(e.unwrap().into_inner().id);
        s.insert_event(event(Some(b), ty, None, at(i as i64)), None)
            .await
            .unwrap();
    }
    s.insert_event(event(None, "pay.ok", None, at(9)), None)
        .await
        .unwrap();
    let all = settled(s, feed(Some(a), FeedPosition::START, &[]), 4).await;
    assert_eq!(ids(&all), stored, "a's events, in the order they committed");
    let positions: Vec<FeedPosition> = all.events.iter().map(|(p, _)| *p).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    // After the second: the third and fourth; after the last: nothing.
    let rest = settled(s, feed(Some(a), positions[1], &[]), 2).await;
    assert_eq!(ids(&rest), stored[2..]);
    let none = s.read_feed(feed(Some(a), positions[3], &[])).await.unwrap();
    assert!(none.events.is_empty() && !none.held_back);
    // Patterns as webhooks take them.
    let pay = settled(s, feed(Some(a), FeedPosition::START, &["pay.*"]), 3).await;
    assert_eq!(ids(&pay), vec![stored[0], stored[1], stored[3]]);
    let exact = settled(
        s,
        feed(Some(a), FeedPosition::START, &["refund.ok", "nothing.here"]),
        1,
    )
    .await;
    assert_eq!(ids(&exact), vec![stored[2]]);
    // `pay.*` is not `pay` itself nor `payx.…`.
    s.insert_event(event(Some(a), "payx.ok", None, at(10)), None)
        .await
        .unwrap();
    assert_eq!(
        settled(s, feed(Some(a), positions[3], &[]), 1)
            .await
            .events
            .len(),
        1
    );
    let pay = s
        .read_feed(feed(Some(a), positions[3], &["pay.*"]))
        .await
        .unwrap();
    assert!(pay.events.is_empty());
    // The events of no tenant are their own feed.
    let none = settled(s, feed(None, FeedPosition::START, &[]), 1).await;
    assert_eq!(none.events.len(), 1);
    assert_eq!(none.events[0].1.tenant, None);
    // A page holds at most `limit`, oldest first.
    let mut q = feed(Some(b), FeedPosition::START, &[]);
    q.limit = 3;
    let page = settled(s, q, 3).await;
    assert_eq!(page.events.len(), 3);
}

pub async fn consumers_ack_forward_only_and_what_was_delivered(s: &dyn Store) {
    let a = tenant(s, "a").await;
    let new = |name: &str, start| NewConsumer {
        tenant: Some(a),
        name: name.into(),
        types: vec![EventPattern::parse("pay.*").unwrap()],
        start,
        created_at: at(0),
    };
    for i in 0..3 {
        s.insert_event(event(Some(a), "pay.ok", None, at(i)), None)
            .await
            .unwrap();
    }
    let c = s
        .create_consumer(new("one", ConsumerStart::Earliest), 2)
        .await
        .unwrap();
    assert_eq!(c.acked, FeedPosition::START);
    assert!(matches!(
        s.create_consumer(new("one", ConsumerStart::Earliest), 2)
            .await,
        Err(StoreError::AlreadyExists)
    ));
    // Latest: after everything readable now.
    settled(s, feed(Some(a), FeedPosition::START, &[]), 3).await;
    let late = s
        .create_consumer(new("late", ConsumerStart::Latest), 2)
        .await
        .unwrap();
    let page = s.read_feed(feed(Some(a), late.acked, &[])).await.unwrap();
    assert!(
        page.events.is_empty(),
        "a consumer started at the latest sees nothing old"
    );
    assert!(matches!(
        s.create_consumer(new("third", ConsumerStart::Earliest), 2)
            .await,
        Err(StoreError::LimitReached)
    ));
    // Another tenant's consumer of the same name is another consumer.
    let b = tenant(s, "b").await;
    let mut other = new("one", ConsumerStart::Earliest);
    other.tenant = Some(b);
    s.create_consumer(other, 2).await.unwrap();
    assert!(matches!(
        s.get_consumer(Some(tenant(s, "c").await), "one".into())
            .await,
        Err(StoreError::NotFound)
    ));

    let page = settled(s, feed(Some(a), c.acked, &["pay.*"]), 3).await;
    let (second, third) = (page.events[1].0, page.events[2].0);
    // Nothing delivered yet: an ack of a position it was never handed is refused.
    assert!(matches!(
        s.ack_consumer(Some(a), "one".into(), second, at(1)).await,
        Err(StoreError::CursorNotDelivered)
    ));
    s.consumer_delivered(Some(a), "one".into(), third, at(1))
        .await
        .unwrap();
    // Delivered never moves back.
    s.consumer_delivered(Some(a), "one".into(), second, at(1))
        .await
        .unwrap();
    assert_eq!(
        s.get_consumer(Some(a), "one".into())
            .await
            .unwrap()
            .delivered,
        third
    );
    match s
        .ack_consumer(Some(a), "one".into(), second, at(2))
        .await
        .unwrap()
    {
        Acked::Moved(c) => assert_eq!(c.acked, second),
        other => panic!("{other:?}"),
    }
    // Behind (or at) the acknowledged position: nothing changes.
    match s
        .ack_consumer(Some(a), "one".into(), page.events[0].0, at(3))
        .await
        .unwrap()
    {
        Acked::Unchanged(c) => assert_eq!(c.acked, second),
        other => panic!("{other:?}"),
    }
    let c = s.get_consumer(Some(a), "one".into()).await.unwrap();
    assert_eq!(c.acked, second);
    let after = settled(s, feed(Some(a), c.acked, &["pay.*"]), 1).await;
    assert_eq!(after.events.len(), 1, "only what follows the ack");
    let names: Vec<String> = s
        .list_consumers(Some(a))
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["late", "one"]);
    s.delete_consumer(Some(a), "one".into()).await.unwrap();
    assert!(matches!(
        s.delete_consumer(Some(a), "one".into()).await,
        Err(StoreError::NotFound)
    ));
}

/// Retention may delete every event: positions still never go back, so a cursor handed
/// out before still stands after every event stored later.
pub async fn positions_never_go_back_after_retention_empties_the_feed(s: &dyn Store) {
    let a = tenant(s, "a").await;
    s.insert_event(event(Some(a), "pay.ok", None, at(0)), None)
        .await
        .unwrap();
    let first = settled(s, feed(Some(a), FeedPosition::START, &[]), 1).await;
    let cursor = first.events[0].0;
    let purged = s.purge_settled_events(at(100), 100).await.unwrap();
    assert_eq!(purged.events, 1);
    let later = s
        .insert_event(event(Some(a), "pay.ok", None, at(200)), None)
        .await
        .unwrap()
        .into_inner();
    let page = settled(s, feed(Some(a), cursor, &[]), 1).await;
    assert_eq!(ids(&page), vec![later.id]);
}
