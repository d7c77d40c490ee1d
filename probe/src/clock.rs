//! Timestamps: unix milliseconds derived from one wall-clock reading at start plus the monotonic
//! clock, so durations between events are exact even if the wall clock is stepped meanwhile.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

static ANCHOR: OnceLock<(Instant, u128)> = OnceLock::new();

fn anchor() -> (Instant, u128) {
    *ANCHOR.get_or_init(|| {
        let now = Instant::now();
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0);
        (now, wall)
    })
}

/// Fixes the anchor (call first thing in `main`; later calls are no-ops).
pub fn init() {
    anchor();
}

/// Unix time in milliseconds of a monotonic instant (instants before the anchor map to it).
pub fn unix_ms(at: Instant) -> u64 {
    let (i0, wall_us) = anchor();
    let us = wall_us + at.saturating_duration_since(i0).as_micros();
    u64::try_from(us / 1000).unwrap_or(u64::MAX)
}

/// Unix time in milliseconds now.
pub fn now_ms() -> u64 {
    unix_ms(Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn monotonic_and_close_to_wall_clock() {
        init();
        let a = Instant::now();
        let b = a + Duration::from_millis(1500);
        assert_eq!(unix_ms(b) - unix_ms(a), 1500);
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(now_ms().abs_diff(wall) < 1000);
    }
}
