//! A node's slots for work that waits or runs long on a tenant's behalf (feed long polls,
//! background replays): at most `max` at once, and one tenant (or the tenantless callers
//! together) holds at most `share` of them, so one tenant's load never takes every slot
//! from the others.

use herald_core::ids::TenantId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct TenantSlots {
    slots: Arc<Semaphore>,
    held: Mutex<HashMap<Option<TenantId>, usize>>,
    share: usize,
}

/// One slot, given back when dropped.
pub struct TenantSlot {
    owner: Arc<TenantSlots>,
    tenant: Option<TenantId>,
    _slot: OwnedSemaphorePermit,
}

impl TenantSlots {
    pub fn new(max: usize, share: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max)),
            held: Default::default(),
            share: share.max(1),
        }
    }

    /// A slot for `tenant`, if the node and the tenant's share have one.
    pub fn try_take(self: &Arc<Self>, tenant: Option<TenantId>) -> Option<TenantSlot> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let mine = held.entry(tenant).or_default();
        if *mine >= self.share {
            if *mine == 0 {
                held.remove(&tenant);
            }
            return None;
        }
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            if *mine == 0 {
                held.remove(&tenant);
            }
            return None;
        };
        *mine += 1;
        Some(TenantSlot {
            owner: self.clone(),
            tenant,
            _slot: slot,
        })
    }

    #[cfg(test)]
    pub(crate) fn tenants_holding(&self) -> usize {
        self.held.lock().unwrap().len()
    }
}

impl Drop for TenantSlot {
    fn drop(&mut self) {
        let mut held = self.owner.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = held.get_mut(&self.tenant) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.tenant);
            }
        }
    }
}
