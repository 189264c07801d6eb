//! The circuit breaker: after `breaker_threshold` failed attempts in a row (no success
//! between) at two deliveries or more, a webhook's circuit opens and its deliveries are
//! deferred for `breaker_cooldown`; then one probe goes through, and its result closes or
//! reopens the circuit. In memory only, a hint: a restart starts every circuit closed.
//!
//! Two deliveries or more: an endpoint that is down fails whatever it is sent, but one
//! event it cannot take (a poison payload, an ordered webhook's stuck head), retried on its
//! schedule, fails alone; it must not open the circuit and then, as the probe, keep it open,
//! deferring the webhook's other deliveries (or keys) with it. Counting attempts, not
//! deliveries, still opens the circuit for an ordered webhook with only a few keys in line.

use super::send::SendResult;
use super::Shared;
use herald_core::ids::{DeliveryId, WebhookId};
use herald_core::Timestamp;
use std::time::Duration;

/// Circuit breaker of one webhook.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Breaker {
    consecutive_failures: u32,
    /// The deliveries whose attempts failed since the last success (at most two kept).
    failed: Vec<DeliveryId>,
    /// Open until this instant; once it has passed, the circuit is half-open.
    open_until: Option<Timestamp>,
    /// The half-open probe is in flight.
    probing: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    Go,
    /// The half-open probe: its result closes or reopens the circuit.
    Probe,
    Defer(Timestamp),
}

impl Breaker {
    /// Open and still cooling down: defer until it reopens.
    pub(super) fn open_until(&self, now: Timestamp) -> Option<Timestamp> {
        self.open_until.filter(|t| now < *t)
    }

    /// Whether an attempt may go now. `probe_wait`: how long to defer while a probe is out.
    pub(crate) fn admit(&mut self, now: Timestamp, probe_wait: Duration) -> Admission {
        match self.open_until {
            None => Admission::Go,
            Some(t) if now < t => Admission::Defer(t),
            Some(_) if self.probing => Admission::Defer(now.plus(probe_wait)),
            Some(_) => {
                self.probing = true;
                Admission::Probe
            }
        }
    }

    /// Returns true when this result opened (or reopened) the circuit.
    pub(crate) fn record(
        &mut self,
        delivery: DeliveryId,
        success: bool,
        was_probe: bool,
        now: Timestamp,
        threshold: u32,
        cooldown: Duration,
    ) -> bool {
        if was_probe {
            self.probing = false;
        }
        if success {
            *self = Breaker::default();
            return false;
        }
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        if !self.failed.contains(&delivery) && self.failed.len() < 2 {
            self.failed.push(delivery);
        }
        let several = self.failed.len() >= 2.min(threshold as usize);
        let expired_or_closed = self.open_until.is_none_or(|t| t <= now);
        if self.consecutive_failures >= threshold && several && (expired_or_closed || was_probe) {
            self.open_until = Some(now.plus(cooldown));
            return true;
        }
        false
    }

    pub(super) fn state(&self, now: Timestamp) -> super::CircuitState {
        match self.open_until {
            None => super::CircuitState::Closed,
            Some(until) if now < until => super::CircuitState::Open { until },
            Some(_) => super::CircuitState::HalfOpen,
        }
    }

    pub(super) fn is_idle(&self) -> bool {
        self.consecutive_failures == 0 && self.open_until.is_none() && !self.probing
    }
}

impl Shared {
    /// Asks `webhook`'s breaker whether an attempt at `at` may go (the circuit may have
    /// opened while the delivery was queued).
    pub(super) fn breaker_admit(&self, webhook: WebhookId, at: Timestamp) -> Admission {
        let config = &self.config;
        let probe_wait = config
            .timeout
            .min(config.breaker_cooldown)
            .max(Duration::from_secs(1));
        let mut map = self.webhooks.lock().unwrap_or_else(|p| p.into_inner());
        map.get_mut(&webhook)
            .map(|s| s.breaker.admit(at, probe_wait))
            .unwrap_or(Admission::Go)
    }

    /// Tells `webhook`'s breaker how an attempt ended at `done` (and notes its latency,
    /// which sizes the wait when the webhook's queue is full).
    pub(super) fn breaker_record(
        &self,
        webhook: WebhookId,
        delivery: DeliveryId,
        result: &SendResult,
        was_probe: bool,
        done: Timestamp,
    ) {
        let config = &self.config;
        let opened = {
            let mut map = self.webhooks.lock().unwrap_or_else(|p| p.into_inner());
            map.get_mut(&webhook)
                .map(|s| {
                    s.last_latency_ms = result.latency_ms;
                    s.breaker.record(
                        delivery,
                        result.is_success(),
                        was_probe,
                        done,
                        config.breaker_threshold,
                        config.breaker_cooldown,
                    )
                })
                .unwrap_or(false)
        };
        if opened {
            tracing::warn!(%webhook, cooldown = %humantime::format_duration(config.breaker_cooldown),
                "webhook failing repeatedly; circuit opened");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp(1_775_834_400_000);
    const COOL: Duration = Duration::from_secs(30);

    #[test]
    fn breaker_opens_half_opens_and_closes() {
        let mut b = Breaker::default();
        for _ in 0..4 {
            assert_eq!(b.admit(T0, Duration::from_secs(10)), Admission::Go);
            assert!(!b.record(DeliveryId::generate(), false, false, T0, 5, COOL));
        }
        assert!(
            b.record(DeliveryId::generate(), false, false, T0, 5, COOL),
            "fifth failure opens"
        );
        let reopen = T0.plus(COOL);
        use crate::CircuitState;
        assert_eq!(b.state(T0), CircuitState::Open { until: reopen });
        assert_eq!(b.state(reopen), CircuitState::HalfOpen);
        assert_eq!(
            b.admit(T0.plus(Duration::from_secs(1)), Duration::from_secs(10)),
            Admission::Defer(reopen)
        );
        // Cooldown over: exactly one probe, the rest wait for it.
        assert_eq!(b.admit(reopen, Duration::from_secs(10)), Admission::Probe);
        assert_eq!(
            b.admit(reopen, Duration::from_secs(10)),
            Admission::Defer(reopen.plus(Duration::from_secs(10)))
        );
        // The probe fails: open again for a cooldown.
        let later = reopen.plus(Duration::from_secs(2));
        assert!(b.record(DeliveryId::generate(), false, true, later, 5, COOL));
        assert_eq!(
            b.admit(later, Duration::from_secs(10)),
            Admission::Defer(later.plus(COOL))
        );
        // Next probe succeeds: closed.
        assert_eq!(
            b.admit(later.plus(COOL), Duration::from_secs(10)),
            Admission::Probe
        );
        assert!(!b.record(
            DeliveryId::generate(),
            true,
            true,
            later.plus(COOL),
            5,
            COOL
        ));
        assert!(b.is_idle());
        assert_eq!(b.state(later.plus(COOL)), CircuitState::Closed);
        assert_eq!(
            b.admit(later.plus(COOL), Duration::from_secs(10)),
            Admission::Go
        );
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let mut b = Breaker::default();
        for _ in 0..4 {
            b.record(DeliveryId::generate(), false, false, T0, 5, COOL);
        }
        b.record(DeliveryId::generate(), true, false, T0, 5, COOL);
        for _ in 0..4 {
            assert!(!b.record(DeliveryId::generate(), false, false, T0, 5, COOL));
        }
        assert_eq!(b.admit(T0, COOL), Admission::Go);
    }

    #[test]
    fn one_delivery_failing_again_and_again_never_opens_the_circuit() {
        let mut b = Breaker::default();
        let stuck = DeliveryId::generate();
        for _ in 0..50 {
            assert!(!b.record(stuck, false, false, T0, 5, COOL));
        }
        // A second delivery failing too: the endpoint looks down, the circuit opens.
        assert!(b.record(DeliveryId::generate(), false, false, T0, 5, COOL));
    }

    #[test]
    fn two_deliveries_failing_in_turn_open_it_after_the_threshold() {
        // An ordered webhook with two keys whose endpoint is down: only two heads go out.
        let mut b = Breaker::default();
        let (one, two) = (DeliveryId::generate(), DeliveryId::generate());
        for i in 0..4 {
            let d = if i % 2 == 0 { one } else { two };
            assert!(!b.record(d, false, false, T0, 5, COOL));
        }
        assert!(
            b.record(one, false, false, T0, 5, COOL),
            "fifth failed attempt opens"
        );
    }
}
