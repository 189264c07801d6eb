//! Fresh deliveries handed straight to the running dispatcher, leased in the write that
//! creates them, so the dispatcher does not claim (write) and read back (event and webhook
//! rows) what the event's own transaction just wrote.
//!
//! The dispatcher gives the store a [`Handoff`] ([`DeliveryStore::hand_off_fresh`]):
//! its global slots, the lease it claims with, and where to send the jobs. A write that
//! fans an event out to webhooks takes one free slot per delivery, without waiting, and
//! stores the delivery already leased; after the commit the jobs go to the sink with
//! their slots. A delivery that found no free slot (or no dispatcher) is stored unleased
//! and claimed as before, so nothing depends on the handoff: if the process dies between
//! the commit and the send, the lease is released at the next start (SQLite) or expires
//! (PostgreSQL), exactly as for a claimed delivery.
//!
//! [`DeliveryStore::hand_off_fresh`]: crate::DeliveryStore::hand_off_fresh

use crate::model::DeliveryJob;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Where handed-off jobs go, each with the dispatcher slot it holds. Called right after
/// the commit, on the committing task or thread: it must not block.
pub type HandoffSink = Arc<dyn Fn(DeliveryJob, OwnedSemaphorePermit) + Send + Sync>;

/// A running dispatcher's offer to take fresh deliveries (see the module docs).
#[derive(Clone)]
pub struct Handoff {
    shared: Arc<Shared>,
    sink: HandoffSink,
}

struct Shared {
    slots: Arc<Semaphore>,
    lease: Duration,
    open: AtomicBool,
}

impl Handoff {
    pub fn new(slots: Arc<Semaphore>, lease: Duration, sink: HandoffSink) -> Self {
        Self {
            shared: Arc::new(Shared {
                slots,
                lease,
                open: AtomicBool::new(true),
            }),
            sink,
        }
    }

    /// The same offer (slots, lease, open or closed) with another sink: a wrapping store
    /// uses it to change the jobs on their way (open their secrets).
    pub fn with_sink(&self, sink: HandoffSink) -> Self {
        Self {
            shared: self.shared.clone(),
            sink,
        }
    }

    pub fn sink(&self) -> HandoffSink {
        self.sink.clone()
    }

    /// From now on no delivery is handed off (the dispatcher is stopping); every clone
    /// sees it.
    pub fn close(&self) {
        self.shared.open.store(false, Ordering::SeqCst);
    }

    pub fn is_open(&self) -> bool {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// How long a handed-off delivery is leased.
    pub fn lease(&self) -> Duration {
        self.shared.lease
    }

    /// One free dispatcher slot, if there is one now and the offer is open.
    pub fn try_slot(&self) -> Option<OwnedSemaphorePermit> {
        if !self.is_open() {
            return None;
        }
        self.shared.slots.clone().try_acquire_owned().ok()
    }

    /// Gives the committed jobs to the dispatcher.
    pub fn hand(&self, jobs: Vec<(DeliveryJob, OwnedSemaphorePermit)>) {
        for (job, slot) in jobs {
            (self.sink)(job, slot);
        }
    }
}

impl std::fmt::Debug for Handoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handoff")
            .field("lease", &self.shared.lease)
            .field("open", &self.is_open())
            .finish_non_exhaustive()
    }
}
