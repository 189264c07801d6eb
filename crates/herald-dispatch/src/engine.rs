//! [`Engine`]: every background loop of a Herald node (webhook dispatcher, broker
//! outbox, lease reaper, retention) started together, with one handle to wait for
//! them after shutdown.

use crate::{reaper, BrokerDispatcher, Dispatcher, Retention};
use herald_core::Clock;
use herald_store::Store;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The loops to start, each built (and configured) by the caller.
pub struct Engine {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    /// Webhook deliveries.
    pub webhooks: Dispatcher,
    /// Broker deliveries. Runs even with no routes: deliveries left by routes since
    /// removed from the config stay listed with an error instead of vanishing.
    pub outbox: BrokerDispatcher,
    pub retention: Retention,
}

/// The running loops. Each stops on its own once the shutdown token is cancelled
/// (the dispatchers first drain what they hold); [`EngineHandle::join`] waits for all.
#[derive(Debug)]
pub struct EngineHandle {
    reaper: JoinHandle<()>,
    retention: JoinHandle<()>,
    webhooks: JoinHandle<()>,
    outbox: JoinHandle<()>,
}

impl Engine {
    /// Starts every loop, each running until `shutdown` is cancelled.
    pub fn spawn(self, shutdown: CancellationToken) -> EngineHandle {
        let Engine {
            store,
            clock,
            webhooks,
            outbox,
            retention,
        } = self;
        EngineHandle {
            reaper: tokio::spawn(reaper::run(store.clone(), clock.clone(), shutdown.clone())),
            retention: tokio::spawn(retention.run(store, clock, shutdown.clone())),
            webhooks: tokio::spawn(webhooks.run(shutdown.clone())),
            outbox: tokio::spawn(outbox.run(shutdown)),
        }
    }
}

impl EngineHandle {
    /// Waits for every loop to end (cancel the shutdown token first).
    pub async fn join(self) {
        let _ = self.reaper.await;
        let _ = self.retention.await;
        let _ = self.webhooks.await;
        let _ = self.outbox.await;
    }
}
