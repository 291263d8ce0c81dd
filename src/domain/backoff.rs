//! Retry schedule for outbox delivery: exponential backoff with jitter (SPEC §10: 1 s doubling
//! to 5 min).

use std::time::Duration;

/// Delay before the next attempt after `failures` failed attempts (1-based), doubling from
/// `base` up to `max`. "Equal jitter": half of the delay is fixed, the other half scaled by
/// `jitter` (0.0..=1.0, drawn by the caller), so retries spread out but never collapse to 0.
pub fn retry_delay(failures: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let doublings = failures.saturating_sub(1).min(32);
    let exponential = base.saturating_mul(1u32 << doublings.min(31)).min(max);
    let half = exponential / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(300);

    #[test]
    fn doubles_from_base_to_max() {
        let full = |n| retry_delay(n, BASE, MAX, 1.0);
        assert_eq!(full(1), Duration::from_secs(1));
        assert_eq!(full(2), Duration::from_secs(2));
        assert_eq!(full(3), Duration::from_secs(4));
        assert_eq!(full(9), Duration::from_secs(256));
        assert_eq!(full(10), MAX);
        assert_eq!(full(1_000), MAX);
    }

    #[test]
    fn jitter_keeps_at_least_half() {
        assert_eq!(retry_delay(3, BASE, MAX, 0.0), Duration::from_secs(2));
        assert_eq!(retry_delay(3, BASE, MAX, 0.5), Duration::from_secs(3));
        assert_eq!(
            retry_delay(3, BASE, MAX, 7.0),
            Duration::from_secs(4),
            "jitter is clamped"
        );
        assert_eq!(retry_delay(0, BASE, MAX, 1.0), BASE);
    }
}
