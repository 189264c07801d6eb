//! Claiming: where the webhook engine's deliveries come from, for the claim loop it
//! shares with the outbox ([`crate::claim::claim_loop`]).

use super::admission::dispatch;
use super::Shared;
use crate::claim::ClaimSource;
use herald_core::clock::Clock;
use herald_core::Timestamp;
use herald_store::{DeliveryJob, Signals, Store, StoreResult};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit};

impl ClaimSource for Arc<Shared> {
    type Job = DeliveryJob;
    const WHAT: &'static str = "due deliveries";
    const ONE: &'static str = "delivery";
    const MAX_CLAIM: usize = 500;

    fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    fn lease(&self) -> Duration {
        self.config.timeout * 4 + Duration::from_secs(30)
    }

    async fn claim(
        &self,
        now: Timestamp,
        limit: u32,
        lease: Duration,
    ) -> StoreResult<Vec<DeliveryJob>> {
        self.store.claim_due_deliveries(now, limit, lease).await
    }

    fn due_signal(signals: &Signals) -> &Notify {
        &signals.deliveries_due
    }

    async fn next_due(&self) -> StoreResult<Option<Timestamp>> {
        self.store.next_delivery_due().await
    }

    fn start(&self, job: DeliveryJob, slot: OwnedSemaphorePermit) {
        dispatch(self, job, slot);
    }
}
