//! A webhook's `rate_limit`: how many of its deliveries may start per second, evenly, one
//! every `1/rate` seconds (so no second ever holds more); the excess is deferred, each to
//! its own later turn, never dropped.

use herald_core::Timestamp;

/// The pace of one webhook, in microseconds since the epoch.
#[derive(Debug, Clone, Default)]
pub(super) struct Pace {
    /// When the next start may be.
    tat: i64,
    /// The last turn handed to a deferred delivery: the next deferred one gets the turn after.
    booked: i64,
}

impl Pace {
    /// Admits one start at `now` under `rate` per second (advancing the pace), or answers
    /// the later instant it is deferred to (booking that turn).
    pub(super) fn admit(&mut self, rate: u32, now: Timestamp) -> Result<(), Timestamp> {
        let interval = 1_000_000 / i64::from(rate.max(1));
        let now = now.0.saturating_mul(1000);
        if self.tat <= now {
            self.tat = now + interval;
            return Ok(());
        }
        self.booked = (self.booked + interval).max(self.tat);
        // Rounded up to the millisecond, so it is never early.
        Err(Timestamp((self.booked + 999) / 1000))
    }

    /// Whether the pace says nothing any more at `now` (the state may be forgotten).
    pub(super) fn is_idle(&self, now: Timestamp) -> bool {
        let now = now.0.saturating_mul(1000);
        self.tat <= now && self.booked <= now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp(1_775_834_400_000);

    fn at(ms: i64) -> Timestamp {
        Timestamp(T0.0 + ms)
    }

    #[test]
    fn evenly_and_each_deferred_to_its_own_turn() {
        let mut pace = Pace::default();
        assert_eq!(pace.admit(2, T0), Ok(()));
        assert_eq!(pace.admit(2, T0), Err(at(500)));
        assert_eq!(pace.admit(2, T0), Err(at(1000)));
        assert_eq!(pace.admit(2, at(100)), Err(at(1500)));
        assert!(!pace.is_idle(at(1000)));
        // Each comes back at its turn and goes.
        assert_eq!(pace.admit(2, at(500)), Ok(()));
        assert_eq!(pace.admit(2, at(1000)), Ok(()));
        assert_eq!(pace.admit(2, at(1500)), Ok(()));
        assert!(!pace.is_idle(at(1999)));
        assert!(pace.is_idle(at(2000)));
        // Quiet for a while: the next goes at once, the one after waits its interval.
        let later = at(10_000);
        assert_eq!(pace.admit(2, later), Ok(()));
        assert_eq!(pace.admit(2, later), Err(at(10_500)));
        // A turn never comes early, even when 1/rate is not a whole millisecond.
        let mut fast = Pace::default();
        assert_eq!(fast.admit(3000, T0), Ok(()));
        assert_eq!(fast.admit(3000, T0), Err(at(1)));
    }

    #[test]
    fn no_second_holds_more_than_the_rate() {
        // Starts at every millisecond someone asks: count them per second window.
        let mut pace = Pace::default();
        let mut starts = Vec::new();
        for ms in 0..5000 {
            let now = at(ms);
            if pace.admit(10, now).is_ok() {
                starts.push(ms);
            }
        }
        for w in 0..4000 {
            let n = starts.iter().filter(|&&s| s >= w && s < w + 1000).count();
            assert!(n <= 10, "{n} starts in the second from {w} ms");
        }
        assert_eq!(starts.len(), 50);
    }
}
