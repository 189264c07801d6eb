//! Webhooks are at-least-once: the same event can arrive twice. A [`DedupeStore`]
//! remembers event ids so a consumer applies each event once. [`MemoryDedupe`] keeps
//! the most recent ids in memory (bounded); implement the trait over your database for
//! dedupe that survives restarts and is shared between replicas.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

pub type DedupeError = Box<dyn std::error::Error + Send + Sync>;

#[async_trait::async_trait]
pub trait DedupeStore: Send + Sync {
    /// Records `event_id` and says whether it is new. Must be atomic: of two concurrent
    /// calls with one id, exactly one gets `true` (e.g. `INSERT … ON CONFLICT DO NOTHING`).
    async fn first_time(&self, event_id: &str) -> Result<bool, DedupeError>;

    /// Forgets `event_id`, so that a redelivery is processed again: call it when
    /// handling failed after `first_time` said yes.
    async fn forget(&self, event_id: &str) -> Result<(), DedupeError>;
}

/// The last `capacity` event ids, in memory. Ids older than that are forgotten, so
/// size it above the number of events that can arrive within the retry window.
#[derive(Debug)]
pub struct MemoryDedupe {
    capacity: usize,
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl MemoryDedupe {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            seen: Mutex::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.seen.lock().expect("dedupe lock").ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The synchronous form of [`DedupeStore::first_time`].
    pub fn check_and_mark(&self, event_id: &str) -> bool {
        let mut seen = self.seen.lock().expect("dedupe lock");
        if seen.ids.contains(event_id) {
            return false;
        }
        if seen.order.len() >= self.capacity {
            if let Some(oldest) = seen.order.pop_front() {
                seen.ids.remove(&oldest);
            }
        }
        seen.ids.insert(event_id.to_owned());
        seen.order.push_back(event_id.to_owned());
        true
    }

    pub fn remove(&self, event_id: &str) {
        let mut seen = self.seen.lock().expect("dedupe lock");
        if seen.ids.remove(event_id) {
            seen.order.retain(|id| id != event_id);
        }
    }
}

#[async_trait::async_trait]
impl DedupeStore for MemoryDedupe {
    async fn first_time(&self, event_id: &str) -> Result<bool, DedupeError> {
        Ok(self.check_and_mark(event_id))
    }

    async fn forget(&self, event_id: &str) -> Result<(), DedupeError> {
        self.remove(event_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn remembers_ids_up_to_its_capacity_then_forgets_the_oldest() {
        let d = MemoryDedupe::new(2);
        assert!(d.first_time("evt_1").await.unwrap());
        assert!(!d.first_time("evt_1").await.unwrap());
        assert!(d.first_time("evt_2").await.unwrap());
        assert!(d.first_time("evt_3").await.unwrap());
        assert_eq!(d.len(), 2);
        // evt_1 was the oldest and has been evicted; evt_2 and evt_3 are still known.
        assert!(!d.first_time("evt_3").await.unwrap());
        assert!(!d.first_time("evt_2").await.unwrap());
        assert!(d.first_time("evt_1").await.unwrap());
    }

    #[tokio::test]
    async fn forget_lets_a_redelivery_through() {
        let d = MemoryDedupe::new(10);
        let store: &dyn DedupeStore = &d;
        assert!(store.first_time("evt_1").await.unwrap());
        store.forget("evt_1").await.unwrap();
        assert!(store.first_time("evt_1").await.unwrap());
        assert_eq!(d.len(), 1);
    }
}
