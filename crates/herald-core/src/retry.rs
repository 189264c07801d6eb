//! A retry schedule as plain data: the wait before each attempt, the first usually
//! zero. Jitter spreads retries of many deliveries that failed together.

use std::time::Duration;

/// Waits before attempt 1, 2, 3, …; once every entry is used the delivery is dead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetrySchedule(Vec<Duration>);

/// Jitter is ±10 % of each wait.
pub const JITTER: f64 = 0.10;

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
}
