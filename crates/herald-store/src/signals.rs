//! In-process wake-ups: a change commits, the waiters it concerns wake, and nothing
//! polls in a loop. On PostgreSQL, other nodes' changes arrive here too (`LISTEN/NOTIFY`).

use herald_core::ids::{OperationId, TenantId};
use tokio::sync::{broadcast, watch, Notify};

#[derive(Debug)]
pub struct Signals {
    /// Each operation whose state changed (`:wait` waiters filter for theirs).
    pub operation_changed: broadcast::Sender<OperationId>,
    /// An operation became claimable (`:claim` long polls).
    pub operations_queued: Notify,
    /// A webhook delivery may have become due, or due sooner (the webhook dispatcher).
    pub deliveries_due: Notify,
    /// A broker delivery may have become due, or due sooner (the outbox engine).
    pub broker_deliveries_due: Notify,
    /// Counts changes to the registered event types (their schemas), on this node or,
    /// on PostgreSQL, on any node: whoever caches the schemas reloads them when it moves.
    pub event_types: watch::Sender<u64>,
    /// Each tenant (or none) whose events a commit stored, on this node or, on
    /// PostgreSQL, on any node: feed long polls subscribe, read, and read again when their
    /// tenant's events are appended.
    pub events_appended: broadcast::Sender<Appended>,
}

impl Default for Signals {
    fn default() -> Self {
        Self {
            operation_changed: broadcast::channel(4096).0,
            operations_queued: Notify::new(),
            deliveries_due: Notify::new(),
            broker_deliveries_due: Notify::new(),
            event_types: watch::channel(0).0,
            events_appended: broadcast::channel(4096).0,
        }
    }
}

impl Signals {
    pub fn operation_changed(&self, id: OperationId) {
        // No receivers is fine: nobody is waiting.
        let _ = self.operation_changed.send(id);
    }

    /// Deliveries of either kind may have become due: both engines re-plan.
    pub fn deliveries_changed(&self) {
        self.deliveries_made(true, true);
    }

    /// Webhook deliveries, broker deliveries (or both) may have become due: only the
    /// engines concerned re-plan.
    pub fn deliveries_made(&self, webhooks: bool, routes: bool) {
        if webhooks {
            self.deliveries_due.notify_waiters();
        }
        if routes {
            self.broker_deliveries_due.notify_waiters();
        }
    }

    /// Events were stored and committed (here or, on PostgreSQL, on another node).
    pub fn events_appended(&self, to: Appended) {
        // No receivers is fine: nobody is waiting.
        let _ = self.events_appended.send(to);
    }

    /// An event type was stored (here or, on PostgreSQL, on another node).
    pub fn event_types_changed(&self) {
        self.event_types.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// Whose feed an `events_appended` wake-up concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Events of this tenant (or of no tenant).
    To(Option<TenantId>),
    /// Anything may have been appended (the PostgreSQL listener has just (re)connected).
    Anything,
}

impl Appended {
    pub fn concerns(&self, tenant: Option<TenantId>) -> bool {
        match self {
            Appended::To(t) => *t == tenant,
            Appended::Anything => true,
        }
    }
}
