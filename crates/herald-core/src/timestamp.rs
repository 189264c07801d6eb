//! Milliseconds since the Unix epoch: what the store keeps and the clock returns,
//! shown on the wire as RFC 3339 UTC (`2026-04-10T15:20:00Z`).

use std::time::Duration;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    pub fn plus(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_add(d.as_millis().min(i64::MAX as u128) as i64),
        )
    }

    pub fn minus(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_sub(d.as_millis().min(i64::MAX as u128) as i64),
        )
    }

    /// How long from `self` until `later` (zero if `later` has passed).
    pub fn until(self, later: Timestamp) -> Duration {
        Duration::from_millis(later.0.saturating_sub(self.0).max(0) as u64)
    }

    /// The instants RFC 3339 can write: years 0001 to 9999. A time outside is shown as
    /// the nearest of those (never as another time, such as the epoch).
    const RFC3339_MIN_MS: i64 = -62_135_596_800_000;
    const RFC3339_MAX_MS: i64 = 253_402_300_799_999;

    fn clamped_ms(self) -> i64 {
        self.0.clamp(Self::RFC3339_MIN_MS, Self::RFC3339_MAX_MS)
    }

    /// RFC 3339 with millisecond precision, e.g. `2026-04-10T15:20:00.123Z`.
    pub fn to_rfc3339(self) -> String {
        let dt = OffsetDateTime::from_unix_timestamp_nanos(self.clamped_ms() as i128 * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let dt = dt
            .replace_nanosecond((dt.millisecond() as u32) * 1_000_000)
            .unwrap_or(dt);
        dt.format(&Rfc3339).unwrap_or_default()
    }

    /// RFC 3339 to the whole second (`2026-04-10T15:20:00Z`), as webhook headers carry it.
    pub fn to_rfc3339_seconds(self) -> String {
        let dt = OffsetDateTime::from_unix_timestamp(self.clamped_ms().div_euclid(1000))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        dt.format(&Rfc3339).unwrap_or_default()
    }

    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        let dt = OffsetDateTime::parse(text, &Rfc3339).ok()?;
        Some(Self((dt.unix_timestamp_nanos() / 1_000_000) as i64))
    }

    pub fn unix_seconds(self) -> i64 {
        self.0.div_euclid(1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses() {
        let t = Timestamp(1_775_834_400_000); // 2026-04-10T15:20:00Z
        assert_eq!(t.to_rfc3339_seconds(), "2026-04-10T15:20:00Z");
        assert_eq!(Timestamp::parse_rfc3339("2026-04-10T15:20:00Z"), Some(t));
        let t2 = Timestamp(1_775_834_400_123);
        assert_eq!(Timestamp::parse_rfc3339(&t2.to_rfc3339()), Some(t2));
    }
}

#[cfg(test)]
mod rfc3339_range_tests {
    use super::Timestamp;

    #[test]
    fn times_past_year_9999_show_as_its_end_not_as_the_epoch() {
        assert_eq!(
            Timestamp(9_469_076_156_363_582).to_rfc3339(),
            "9999-12-31T23:59:59.999Z"
        );
        assert_eq!(
            Timestamp(i64::MAX).to_rfc3339_seconds(),
            "9999-12-31T23:59:59Z"
        );
        assert_eq!(Timestamp(i64::MIN).to_rfc3339(), "0001-01-01T00:00:00Z");
    }
}
