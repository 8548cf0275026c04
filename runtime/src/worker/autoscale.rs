//! An autoscaled worker pool's concurrency: how it follows the backlog
//! (`autoscale { min max target_wait }`), and the loop that moves it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::job::now;

/// How often an autoscaled pool looks at its backlog.
pub(crate) const SCALE_EVERY: Duration = Duration::from_secs(1);
/// How long slots must sit idle, with no job waiting past the target, before the pool shrinks.
pub(crate) const SHRINK_AFTER: Duration = Duration::from_secs(30);

/// `autoscale { min max target_wait }` of a worker task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Autoscale {
    pub(crate) min: usize,
    pub(crate) max: usize,
    pub(crate) target_wait: Duration,
}

impl Autoscale {
    /// The concurrency after `current`, given the pool's `free` slots, how long the oldest
    /// ready job has `waited` (none: nothing waits) and how long slots have sat idle: doubles
    /// (up to `max`) while every slot is busy and a job has waited past the target; halves
    /// (down to `min`, never below the slots in use) once slots have been idle for
    /// [`SHRINK_AFTER`].
    pub(crate) fn next(
        self,
        current: usize,
        free: usize,
        waited: Option<Duration>,
        idle_for: Option<Duration>,
    ) -> usize {
        if free == 0 && waited.is_some_and(|w| w > self.target_wait) {
            return (current * 2).clamp(current, self.max.max(current));
        }
        if idle_for.is_some_and(|idle| idle >= SHRINK_AFTER) {
            let busy = current.saturating_sub(free);
            return (current / 2).max(busy).max(self.min).min(current);
        }
        current
    }
}

/// Moves an autoscaled pool's concurrency with its backlog, every [`SCALE_EVERY`], until
/// `shutdown`; publishes it as `raindrop_worker_concurrency`.
pub(super) async fn scale_loop(
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    autoscale: Autoscale,
    shutdown: CancellationToken,
) {
    use std::sync::atomic::Ordering;
    let gauge = metrics::gauge!(
        "raindrop_worker_concurrency",
        "queue" => shared.config.queue.clone(),
        "task" => shared.config.task.clone()
    );
    let mut current = shared.concurrency.load(Ordering::Relaxed);
    gauge.set(current as f64);
    let mut idle_since: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep(SCALE_EVERY) => {}
            () = shutdown.cancelled() => break,
        }
        let at = now();
        let waited = match shared.store.oldest_ready(&shared.config.queue, at).await {
            Ok(oldest) => oldest.map(|due| (at - due).to_std().unwrap_or_default()),
            Err(err) => {
                tracing::debug!(task = %shared.config.task, error = %err, "reading the backlog failed; concurrency unchanged");
                continue;
            }
        };
        let free = permits.available_permits();
        let backlog = waited.is_some_and(|w| w > autoscale.target_wait);
        if free > 0 && !backlog {
            idle_since.get_or_insert_with(tokio::time::Instant::now);
        } else {
            idle_since = None;
        }
        let idle_for = idle_since.map(|since| since.elapsed());
        let next = autoscale.next(current, free, waited, idle_for);
        if next > current {
            permits.add_permits(next - current);
        }
        if next < current {
            // Only free slots are taken away; a running job keeps its own.
            let mut removed = 0;
            while current - removed > next {
                match permits.try_acquire() {
                    Ok(permit) => {
                        permit.forget();
                        removed += 1;
                    }
                    Err(_) => break,
                }
            }
            if removed == 0 {
                continue;
            }
            let next = current - removed;
            tracing::info!(task = %shared.config.task, from = current, to = next, "slots sat idle; worker pool shrinks");
            current = next;
        } else if next > current {
            tracing::info!(task = %shared.config.task, from = current, to = next, waited_ms = waited.unwrap_or_default().as_millis() as u64, "jobs wait past the target; worker pool grows");
            current = next;
        } else {
            continue;
        }
        shared.concurrency.store(current, Ordering::Relaxed);
        gauge.set(current as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: Autoscale = Autoscale {
        min: 2,
        max: 16,
        target_wait: Duration::from_secs(1),
    };
    const LATE: Option<Duration> = Some(Duration::from_secs(5));

    #[test]
    fn a_saturated_pool_with_late_jobs_doubles_up_to_max() {
        assert_eq!(RULE.next(2, 0, LATE, None), 4);
        assert_eq!(RULE.next(12, 0, LATE, None), 16);
        assert_eq!(RULE.next(16, 0, LATE, None), 16);
    }

    #[test]
    fn free_slots_or_jobs_within_target_do_not_grow_the_pool() {
        assert_eq!(RULE.next(4, 1, LATE, None), 4);
        assert_eq!(RULE.next(4, 0, Some(Duration::from_millis(500)), None), 4);
        assert_eq!(RULE.next(4, 0, None, None), 4);
    }

    #[test]
    fn idle_slots_halve_the_pool_after_the_delay_never_below_min_or_busy() {
        assert_eq!(RULE.next(16, 10, None, Some(SHRINK_AFTER / 2)), 16);
        assert_eq!(RULE.next(16, 10, None, Some(SHRINK_AFTER)), 8);
        assert_eq!(RULE.next(16, 4, None, Some(SHRINK_AFTER)), 12);
        assert_eq!(RULE.next(3, 3, None, Some(SHRINK_AFTER)), 2);
    }
}
