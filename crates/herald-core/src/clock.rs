//! The clock is passed in, never read from a global, so that retry schedules and
//! lease expiry can be tested by moving a [`ManualClock`] instead of sleeping.

use crate::Timestamp;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// A source of "now" that background loops can also sleep against.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    fn now(&self) -> Timestamp;
    /// Fires when a manual clock is moved; `None` for the real clock.
    fn moved(&self) -> Option<Arc<Notify>> {
        None
    }
}

/// Waits until `clock` reads at least `deadline`: a real sleep for the system clock,
/// a wait for `advance` for a manual one.
pub async fn sleep_until(clock: &dyn Clock, deadline: Timestamp) {
    loop {
        match clock.moved() {
            None => {
                let now = clock.now();
                if now >= deadline {
                    return;
                }
                tokio::time::sleep(now.until(deadline)).await;
            }
            Some(moved) => {
                let notified = moved.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if clock.now() >= deadline {
                    return;
                }
                notified.await;
            }
        }
    }
}

/// Wall-clock time.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(d.as_millis() as i64)
    }
}

/// A clock that only moves when told to (tests).
#[derive(Debug)]
pub struct ManualClock {
    now: AtomicI64,
    moved: Arc<Notify>,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        Self {
            now: AtomicI64::new(start.0),
            moved: Arc::new(Notify::new()),
        }
    }

    /// Starts at the real current time.
    pub fn starting_now() -> Self {
        Self::new(SystemClock.now())
    }

    pub fn advance(&self, by: Duration) {
        self.now.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
        self.moved.notify_waiters();
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.now.load(Ordering::SeqCst))
    }
    fn moved(&self) -> Option<Arc<Notify>> {
        Some(self.moved.clone())
    }
}
