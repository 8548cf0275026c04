//! Rate limits as a generic cell rate algorithm (GCRA): a token bucket kept as one timestamp per
//! key, the "theoretical arrival time" of the next request. Every store decides with the same
//! arithmetic; the Redis store runs it in a script so the limit holds across processes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::job::Timestamp;

/// A token bucket: `requests` per `per`, bursting up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Requests refilled per `per`.
    pub requests: u32,
    /// The refill period.
    pub per: Duration,
    /// The bucket's size: requests allowed at once after a quiet spell.
    pub burst: u32,
}

impl Limit {
    /// Microseconds between two refills (at least one).
    pub(crate) fn interval_us(&self) -> i64 {
        let per = i64::try_from(self.per.as_micros()).unwrap_or(i64::MAX);
        (per / i64::from(self.requests.max(1))).max(1)
    }
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may go ahead (a token was taken).
    pub allowed: bool,
    /// The bucket's size.
    pub limit: u32,
    /// Requests that would be allowed right now after this one.
    pub remaining: u32,
    /// Until the bucket is full again.
    pub reset: Duration,
    /// When refused: how long until a request would be allowed.
    pub retry_after: Duration,
}

fn micros(d: i64) -> Duration {
    Duration::from_micros(u64::try_from(d).unwrap_or(0))
}

/// Decides a request at `now_us` for a key whose theoretical arrival time is `tat_us` (`None`
/// for a key not seen yet). Returns the decision and, when allowed, the key's new arrival time.
pub(crate) fn gcra(tat_us: Option<i64>, now_us: i64, limit: &Limit) -> (Decision, Option<i64>) {
    let interval = limit.interval_us();
    let burst = i64::from(limit.burst.max(1));
    let tat = tat_us.unwrap_or(now_us).max(now_us);
    let next = tat.saturating_add(interval);
    let allow_at = next.saturating_sub(burst.saturating_mul(interval));
    if now_us < allow_at {
        let decision = Decision {
            allowed: false,
            limit: limit.burst,
            remaining: 0,
            reset: micros(tat - now_us),
            retry_after: micros(allow_at - now_us),
        };
        return (decision, None);
    }
    let decision = Decision {
        allowed: true,
        limit: limit.burst,
        remaining: u32::try_from((now_us - allow_at) / interval).unwrap_or(u32::MAX),
        reset: micros(next - now_us),
        retry_after: Duration::ZERO,
    };
    (decision, Some(next))
}

/// How many tokens (up to `burst`) the bucket of a key whose theoretical arrival time is
/// `tat_us` holds at `now_us`: how many jobs a claim may start at once.
pub(crate) fn available(tat_us: Option<i64>, now_us: i64, limit: &Limit) -> usize {
    let interval = limit.interval_us();
    let burst = i64::from(limit.burst.max(1));
    let tat = tat_us.unwrap_or(now_us).max(now_us);
    let free = now_us
        .saturating_add(burst.saturating_mul(interval))
        .saturating_sub(tat)
        / interval;
    usize::try_from(free.clamp(0, burst)).unwrap_or(0)
}

/// The theoretical arrival time after `n` tokens were taken at `now_us` (no more than
/// [`available`] said).
pub(crate) fn spend(tat_us: Option<i64>, now_us: i64, n: usize, limit: &Limit) -> i64 {
    let n = i64::try_from(n).unwrap_or(i64::MAX);
    tat_us
        .unwrap_or(now_us)
        .max(now_us)
        .saturating_add(n.saturating_mul(limit.interval_us()))
}

pub(crate) fn micros_of(at: Timestamp) -> i64 {
    at.timestamp_micros()
}

/// Buckets kept in this process (memory and SQLite stores).
#[derive(Debug, Default)]
pub(crate) struct LocalBuckets {
    arrivals: Mutex<HashMap<String, i64>>,
}

/// Keys kept before full buckets (arrival time in the past) are dropped.
const KEPT: usize = 10_000;

impl LocalBuckets {
    pub(crate) fn take(&self, key: &str, limit: &Limit, now: Timestamp) -> Decision {
        let now = micros_of(now);
        let mut arrivals = self.arrivals.lock().unwrap_or_else(|p| p.into_inner());
        let (decision, next) = gcra(arrivals.get(key).copied(), now, limit);
        if let Some(next) = next {
            if arrivals.len() >= KEPT {
                arrivals.retain(|_, tat| *tat > now);
            }
            arrivals.insert(key.to_owned(), next);
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i64 = 1_000_000;

    fn limit() -> Limit {
        Limit {
            requests: 10,
            per: Duration::from_secs(1),
            burst: 3,
        }
    }

    #[test]
    fn a_claim_takes_what_the_bucket_holds_and_it_refills_at_the_rate() {
        let limit = limit();
        assert_eq!(available(None, 0, &limit), 3, "a new bucket is full");
        let tat = spend(None, 0, 2, &limit);
        assert_eq!(available(Some(tat), 0, &limit), 1);
        let tat = spend(Some(tat), 0, 1, &limit);
        assert_eq!(available(Some(tat), 0, &limit), 0);
        assert_eq!(available(Some(tat), SECOND / 10 - 1, &limit), 0);
        assert_eq!(available(Some(tat), SECOND / 10, &limit), 1);
        assert_eq!(
            available(Some(tat), 10 * SECOND, &limit),
            3,
            "never more than a burst"
        );
    }

    #[test]
    fn a_burst_is_allowed_then_requests_wait_for_refills() {
        let limit = limit();
        let mut tat = None;
        let mut remaining = Vec::new();
        for _ in 0..3 {
            let (decision, next) = gcra(tat, 0, &limit);
            assert!(decision.allowed);
            remaining.push(decision.remaining);
            tat = next;
        }
        assert_eq!(remaining, [2, 1, 0]);
        let (refused, next) = gcra(tat, 0, &limit);
        assert!(!refused.allowed);
        assert_eq!(next, None, "a refusal takes no token");
        assert_eq!(refused.retry_after, Duration::from_millis(100));
        assert_eq!(refused.reset, Duration::from_millis(300));
        // One refill later, one more request.
        let (allowed, _) = gcra(tat, SECOND / 10, &limit);
        assert!(allowed.allowed);
        assert_eq!(allowed.remaining, 0);
    }

    #[test]
    fn a_quiet_key_is_full_again() {
        let limit = limit();
        let (_, tat) = gcra(None, 0, &limit);
        let (decision, _) = gcra(tat, 10 * SECOND, &limit);
        assert_eq!(decision.remaining, 2);
    }
}
