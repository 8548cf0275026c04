//! When a failed job runs again: exponential backoff with jitter, up to a number of attempts.

use std::time::Duration;

use raindrop_codegen::model;

/// The retry policy of a queue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts before a job is dead-lettered, the first run included.
    pub max_attempts: u32,
    /// Delay after the first failure.
    pub initial: Duration,
    /// Longest delay.
    pub max: Duration,
    /// Growth per attempt.
    pub multiplier: f64,
    /// Each delay varies by up to this fraction either way, so failures do not retry in step.
    pub jitter: f64,
}

impl RetryPolicy {
    /// The policy of a queue declared in the manifest.
    pub fn of(queue: &model::Queue) -> Self {
        Self {
            max_attempts: queue.max_attempts,
            initial: queue.backoff.initial.get(),
            max: queue.backoff.max.get(),
            multiplier: queue.backoff.multiplier,
            jitter: queue.backoff.jitter,
        }
    }

    /// The delay before the attempt after attempt `failed` (1 for the first run), without jitter.
    pub fn base_delay(&self, failed: u32) -> Duration {
        let exponent = i32::try_from(failed.saturating_sub(1)).unwrap_or(i32::MAX);
        let secs = self.initial.as_secs_f64() * self.multiplier.powi(exponent);
        Duration::try_from_secs_f64(secs).map_or(self.max, |d| d.min(self.max))
    }

    /// The delay before the attempt after attempt `failed`, with jitter: within
    /// `base × (1 ± jitter)`, and never above `max`.
    pub fn delay(&self, failed: u32) -> Duration {
        let base = self.base_delay(failed).as_secs_f64();
        let factor = 1.0 + self.jitter * (fastrand::f64() * 2.0 - 1.0);
        Duration::try_from_secs_f64(base * factor).map_or(self.max, |d| d.min(self.max))
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(600),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_up_to_the_cap() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            multiplier: 3.0,
            jitter: 0.0,
        };
        let delays: Vec<u128> = (1..=5).map(|n| policy.delay(n).as_millis()).collect();
        assert_eq!(delays, vec![100, 300, 900, 1000, 1000]);
    }

    #[test]
    fn jittered_delays_stay_within_their_bounds() {
        let policy = RetryPolicy {
            jitter: 0.25,
            ..RetryPolicy::default()
        };
        for failed in 1..=12 {
            let base = policy.base_delay(failed).as_secs_f64();
            let (low, high) = (base * 0.75, (base * 1.25).min(policy.max.as_secs_f64()));
            let mut seen = Vec::new();
            for _ in 0..500 {
                let d = policy.delay(failed).as_secs_f64();
                assert!(
                    d >= low - 1e-9 && d <= high + 1e-9,
                    "attempt {failed}: {d} not in [{low}, {high}]"
                );
                seen.push(d);
            }
            let spread = seen.iter().cloned().fold(f64::MIN, f64::max)
                - seen.iter().cloned().fold(f64::MAX, f64::min);
            if base * 1.25 < policy.max.as_secs_f64() {
                assert!(spread > 0.0, "jitter varies the delay");
            }
        }
    }

    #[test]
    fn huge_attempt_numbers_saturate_at_the_cap() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.base_delay(u32::MAX), policy.max);
    }
}
