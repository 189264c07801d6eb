//! Publishing: one broker delivery through its route's publisher, bounded by the
//! timeout, and what becomes of it: published, refused for good (dead-lettered), or
//! retried after a capped exponential backoff while the broker is unavailable.

use super::{BrokerDispatcher, BrokerRoute, OutboxConfig};
use crate::brokers::{BrokerMessage, PublishError};
use herald_core::ids::AttemptId;
use herald_store::{Attempt, AttemptOutcome, AttemptRecord, BrokerJob};
use std::time::{Duration, Instant};

impl BrokerDispatcher {
    /// Publishes one delivery and says what becomes of it.
    pub(super) async fn publish(&self, job: BrokerJob) -> AttemptRecord {
        let at = self.clock.now();
        let started = Instant::now();
        let result = match self.routes.get(&job.route) {
            None => Err(PublishError::Unavailable(format!(
                "route `{}` is not in the config; the delivery waits until it is",
                job.route
            ))),
            Some(route) => match self.publishers.get(&route.broker) {
                None => Err(PublishError::Unavailable(format!(
                    "broker {} is not configured",
                    route.broker
                ))),
                Some(publisher) => {
                    let message = message_for(&job, route);
                    match tokio::time::timeout(self.config.timeout, publisher.publish(&message))
                        .await
                    {
                        Ok(r) => r,
                        Err(_) => Err(PublishError::Unavailable(format!(
                            "{} did not acknowledge within {}",
                            route.broker,
                            humantime::format_duration(self.config.timeout)
                        ))),
                    }
                }
            },
        };
        let latency_ms = started.elapsed().as_millis() as u64;
        let done = self.clock.now();
        if let (Some(observer), Some(route)) = (&self.observer, self.routes.get(&job.route)) {
            let outcome = match &result {
                Ok(()) => "published",
                Err(PublishError::Refused(_)) => "refused",
                Err(PublishError::Unavailable(_)) => "unavailable",
            };
            observer.publish_judged(route.broker.as_str(), outcome);
        }
        let (outcome, error) = match result {
            Ok(()) => (AttemptOutcome::Succeeded, None),
            Err(PublishError::Refused(e)) => {
                tracing::warn!(delivery = %job.delivery.id, route = %job.route, error = %e, "broker refused the message; dead-lettered");
                (AttemptOutcome::Failed, Some(e))
            }
            Err(PublishError::Unavailable(e)) => {
                let wait = backoff(
                    &self.config,
                    job.delivery.window_attempts,
                    rand::random::<f64>(),
                );
                tracing::debug!(delivery = %job.delivery.id, route = %job.route, error = %e, "publish failed; will retry");
                (AttemptOutcome::RetryAt(done.plus(wait)), Some(e))
            }
        };
        AttemptRecord {
            delivery_id: job.delivery.id,
            attempt: Some(Attempt {
                id: AttemptId::generate(),
                delivery_id: job.delivery.id,
                at,
                status_code: None,
                latency_ms,
                error,
                response_excerpt: None,
            }),
            outcome,
            disable_webhook: None,
        }
    }
}

/// The message for a job: the event JSON, keyed by the delivery's ordering key.
pub fn message_for(job: &BrokerJob, route: &BrokerRoute) -> BrokerMessage {
    BrokerMessage {
        topic: route.topic.clone(),
        key: job.delivery.ordering_key.clone(),
        event_id: job.event.id.to_string(),
        event_type: job.event.event_type.clone(),
        traceparent: crate::webhooks::send::traceparent_for(
            job.event.id,
            job.delivery.id,
            job.delivery.attempts + 1,
        ),
        payload: job.event.body_bytes(),
    }
}

/// The wait before the next try after `failures` earlier ones in this window:
/// `min * 2^failures`, capped, with up to 20 % jitter off (`jitter` in `[0, 1)`).
pub(crate) fn backoff(config: &OutboxConfig, failures: u32, jitter: f64) -> Duration {
    let base = config
        .min_backoff
        .saturating_mul(1u32.checked_shl(failures.min(20)).unwrap_or(u32::MAX))
        .min(config.max_backoff);
    base.mul_f64(1.0 - 0.2 * jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let c = OutboxConfig {
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            ..Default::default()
        };
        assert_eq!(backoff(&c, 0, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(&c, 3, 0.0), Duration::from_secs(4));
        assert_eq!(backoff(&c, 50, 0.0), Duration::from_secs(30));
        assert!(backoff(&c, 50, 0.99) >= Duration::from_secs(24));
    }
}
