//! Wall-clock moments for the domain's deadlines (idle TTL, relay-tree waits).
//!
//! The registry's state may be shared by several nodes (cluster mode keeps it in Redis), so its
//! moments must mean the same on every node and survive serialization: a monotonic `Instant`
//! does neither. A [`Moment`] is milliseconds since the Unix epoch; operations saturate, so a
//! clock stepping backwards shortens or lengthens a deadline but never panics.

use std::ops::{Add, AddAssign};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A point in wall-clock time, in milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Moment(u64);

impl Moment {
    /// The current wall-clock time.
    pub fn now() -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        Self(u64::try_from(ms).unwrap_or(u64::MAX))
    }

    pub fn from_millis(ms: u64) -> Self {
        Self(ms)
    }

    pub fn as_millis(self) -> u64 {
        self.0
    }

    /// Seconds since the Unix epoch, the protocol's timestamp format.
    pub fn as_unix_secs(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    /// Time elapsed from `earlier` to `self`; zero when `earlier` is later.
    pub fn duration_since(self, earlier: Moment) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Moment {
    type Output = Moment;

    fn add(self, rhs: Duration) -> Moment {
        let ms = u64::try_from(rhs.as_millis()).unwrap_or(u64::MAX);
        Moment(self.0.saturating_add(ms))
    }
}

impl AddAssign<Duration> for Moment {
    fn add_assign(&mut self, rhs: Duration) {
        *self = *self + rhs;
    }
}

/// Unix time in seconds as a float, the protocol's timestamp format.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_and_orders() {
        let t = Moment::from_millis(1_000);
        assert_eq!(t + Duration::from_millis(500), Moment::from_millis(1_500));
        assert_eq!(
            t.duration_since(Moment::from_millis(400)),
            Duration::from_millis(600)
        );
        assert_eq!(Moment::from_millis(400).duration_since(t), Duration::ZERO);
        assert_eq!(
            Moment::from_millis(u64::MAX) + Duration::from_secs(1),
            Moment::from_millis(u64::MAX)
        );
        assert!(Moment::now() > t);
        assert_eq!(t.as_unix_secs(), 1.0);
    }
}
