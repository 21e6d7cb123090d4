//! The retry delay every hand-written retry loop uses (the AWS clients use the SDK's
//! own standard mode, configured once in the binary).

use std::time::Duration;

/// The wait before retry number `attempt` (1 for the first retry): `base` doubled per
/// attempt up to `max`, with equal jitter — half of the step fixed, half scaled by
/// `unit_random` (a uniform draw from `[0, 1)`, passed in so the rule is testable). A
/// fleet of throttled workers then spreads out instead of retrying in lockstep, and
/// each still waits at least half its step.
pub fn backoff(attempt: u32, base: Duration, max: Duration, unit_random: f64) -> Duration {
    let step = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20)).min(max);
    let r = if unit_random.is_finite() { unit_random.clamp(0.0, 1.0) } else { 0.0 };
    step / 2 + step.mul_f64(r / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_from_base_and_stops_at_max() {
        let at = |n| backoff(n, 100 * MS, 2_000 * MS, 1.0);
        assert_eq!([at(1), at(2), at(3), at(5), at(6), at(40)], [100 * MS, 200 * MS, 400 * MS, 1_600 * MS, 2_000 * MS, 2_000 * MS]);
    }

    #[test]
    fn jitter_spans_the_upper_half_of_the_step() {
        assert_eq!(backoff(3, 100 * MS, 10_000 * MS, 0.0), 200 * MS);
        assert_eq!(backoff(3, 100 * MS, 10_000 * MS, 0.5), 300 * MS);
        assert_eq!(backoff(3, 100 * MS, 10_000 * MS, f64::NAN), 200 * MS);
        assert_eq!(backoff(0, 100 * MS, 10_000 * MS, 1.0), 100 * MS, "attempt 0 is treated as the first");
    }
}
