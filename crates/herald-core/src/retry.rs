//! A retry schedule as plain data: the wait before each attempt, the first usually
//! zero. Jitter spreads retries of many deliveries that failed together. And the pure
//! decision after an attempt ([`RetrySchedule::decide`]): delivered, retry at a time,
//! dead, or dead with its webhook disabled.

use crate::Timestamp;
use std::time::Duration;

/// Waits before attempt 1, 2, 3, …; once every entry is used the delivery is dead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetrySchedule(Vec<Duration>);

/// Jitter is ±10 % of each wait.
pub const JITTER: f64 = 0.10;
/// The longest wait a `Retry-After` can ask for.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Why a webhook is disabled when its endpoint answers `410 Gone`.
pub const GONE_REASON: &str = "endpoint answered 410 Gone";

/// What an attempt came to, as far as the retry decision is concerned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttemptResult {
    /// A 2xx whose response arrived whole (up to the excerpt) within the timeout.
    pub succeeded: bool,
    pub status_code: Option<u16>,
    /// A `Retry-After` that came with a 429 or 503.
    pub retry_after: Option<Duration>,
}

/// What becomes of a delivery after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryDecision {
    Succeeded,
    /// Failed; the next attempt is due at this time.
    RetryAt(Timestamp),
    /// Failed, and the retry window is used up: the delivery is dead.
    Dead,
    /// The endpoint is gone: the delivery is dead and its webhook disabled for this reason.
    Disabled(String),
}

impl Default for RetrySchedule {
    /// immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h (about 3 days in all).
    fn default() -> Self {
        let s = |n: u64| Duration::from_secs(n);
        Self(vec![
            s(0),
            s(5),
            s(300),
            s(1800),
            s(7200),
            s(5 * 3600),
            s(10 * 3600),
            s(14 * 3600),
            s(20 * 3600),
            s(24 * 3600),
        ])
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a retry schedule needs between 1 and 50 entries")]
pub struct ScheduleError;

impl RetrySchedule {
    pub fn new(waits: Vec<Duration>) -> Result<Self, ScheduleError> {
        if waits.is_empty() || waits.len() > 50 {
            return Err(ScheduleError);
        }
        Ok(Self(waits))
    }

    pub fn waits(&self) -> &[Duration] {
        &self.0
    }

    pub fn max_attempts(&self) -> u32 {
        self.0.len() as u32
    }

    /// The wait before the next attempt when `attempts_made` have failed, or `None`
    /// when the schedule is used up. `jitter_unit` in `[0, 1)` picks the point in
    /// the ±10 % band (callers pass a random number; tests pass a fixed one).
    pub fn next_wait(&self, attempts_made: u32, jitter_unit: f64) -> Option<Duration> {
        let base = *self.0.get(attempts_made as usize)?;
        let factor = 1.0 + JITTER * (2.0 * jitter_unit.clamp(0.0, 1.0) - 1.0);
        Some(base.mul_f64(factor))
    }

    /// The whole window: the sum of every wait.
    pub fn window(&self) -> Duration {
        self.0.iter().sum()
    }

    /// Decides a delivery's fate after an attempt. `window_attempts` counts attempts made
    /// before this one; `now` is when the attempt ended; `jitter` is in `[0, 1)`.
    pub fn decide(
        &self,
        result: &AttemptResult,
        window_attempts: u32,
        now: Timestamp,
        jitter: f64,
    ) -> RetryDecision {
        if result.succeeded {
            return RetryDecision::Succeeded;
        }
        if result.status_code == Some(410) {
            return RetryDecision::Disabled(GONE_REASON.to_owned());
        }
        let Some(mut wait) = self.next_wait(window_attempts.saturating_add(1), jitter) else {
            return RetryDecision::Dead;
        };
        if matches!(result.status_code, Some(429 | 503)) {
            if let Some(asked) = result.retry_after {
                wait = wait.max(asked).min(MAX_RETRY_AFTER);
            }
        }
        RetryDecision::RetryAt(now.plus(wait))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schedule_has_ten_attempts_and_jitter_stays_in_band() {
        let s = RetrySchedule::default();
        assert_eq!(s.max_attempts(), 10);
        assert_eq!(s.next_wait(0, 0.7), Some(Duration::ZERO));
        let low = s.next_wait(1, 0.0).unwrap();
        let high = s.next_wait(1, 0.999).unwrap();
        assert!(low >= Duration::from_millis(4500) && high <= Duration::from_millis(5500));
        assert!(low < high);
        assert_eq!(s.next_wait(10, 0.5), None);
        assert!(RetrySchedule::new(vec![]).is_err());
    }

    const T0: Timestamp = Timestamp(1_775_834_400_000); // 2026-04-10T15:20:00Z

    fn status(code: u16, retry_after: Option<u64>) -> AttemptResult {
        AttemptResult {
            succeeded: (200..300).contains(&code),
            status_code: Some(code),
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    #[test]
    fn decisions() {
        let s = RetrySchedule::default();
        let decide = |r: &AttemptResult, made: u32| s.decide(r, made, T0, 0.5);
        assert_eq!(decide(&status(204, None), 0), RetryDecision::Succeeded);
        assert_eq!(
            decide(&status(410, None), 0),
            RetryDecision::Disabled("endpoint answered 410 Gone".into())
        );
        // After the first attempt (0 made before it) the wait is the schedule's second entry.
        assert_eq!(
            decide(&status(500, None), 0),
            RetryDecision::RetryAt(T0.plus(Duration::from_secs(5)))
        );
        // A timeout: no status at all.
        assert_eq!(
            decide(&AttemptResult::default(), 1),
            RetryDecision::RetryAt(T0.plus(Duration::from_secs(300)))
        );
        // The tenth attempt failed: the window is used up.
        assert_eq!(decide(&status(500, None), 9), RetryDecision::Dead);
        // Retry-After on 429/503 lengthens the wait, capped at 24 h; ignored on other statuses.
        assert_eq!(
            decide(&status(429, Some(60)), 0),
            RetryDecision::RetryAt(T0.plus(Duration::from_secs(60)))
        );
        assert_eq!(
            decide(&status(503, Some(1)), 0),
            RetryDecision::RetryAt(T0.plus(Duration::from_secs(5)))
        );
        assert_eq!(
            decide(&status(503, Some(10 * 86_400)), 0),
            RetryDecision::RetryAt(T0.plus(MAX_RETRY_AFTER))
        );
        assert_eq!(
            decide(&status(500, Some(60)), 0),
            RetryDecision::RetryAt(T0.plus(Duration::from_secs(5)))
        );
        assert_eq!(decide(&status(429, Some(60)), 9), RetryDecision::Dead);
        // A 3xx is a failure too.
        assert!(matches!(
            decide(&status(301, None), 0),
            RetryDecision::RetryAt(_)
        ));
        // A 2xx whose body broke is not a success: it is retried.
        let broken = AttemptResult {
            succeeded: false,
            ..status(200, None)
        };
        assert!(matches!(decide(&broken, 0), RetryDecision::RetryAt(_)));
    }
}
