//! What a process runs and its tunables: the roles and the settings with production defaults.

use std::time::Duration;

/// Which components this process runs. Every process may produce jobs; the roles say what
/// else it does, so each can be scaled on its own against one store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// Worker pools of worker tasks.
    pub workers: bool,
    /// Cron schedulers.
    pub scheduler: bool,
    /// Monitors: recovery, retention, metrics, alerts, observer handlers.
    pub observer: bool,
}

impl Roles {
    /// Every role.
    pub const ALL: Roles = Roles {
        workers: true,
        scheduler: true,
        observer: true,
    };
    /// None: produce and read only (e.g. a service-only process).
    pub const NONE: Roles = Roles {
        workers: false,
        scheduler: false,
        observer: false,
    };
}

/// Tunables with production defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Which components run here.
    pub roles: Roles,
    /// How long running jobs may finish after shutdown starts.
    pub grace: Duration,
    /// Longest pause between claims of an idle worker pool.
    pub idle_poll: Duration,
    /// How often monitors recover leases and refresh metrics.
    pub observer_tick: Duration,
    /// How often monitors apply retention.
    pub retention_every: Duration,
    /// How long lifecycle events are kept.
    pub event_horizon: Duration,
    /// Longest a queue consumer's batch may take before it is cancelled and fails.
    pub consumer_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            roles: Roles::ALL,
            grace: Duration::from_secs(30),
            idle_poll: Duration::from_millis(250),
            observer_tick: Duration::from_secs(1),
            retention_every: Duration::from_secs(60),
            event_horizon: Duration::from_secs(86_400),
            consumer_timeout: Duration::from_secs(5 * 60),
        }
    }
}
