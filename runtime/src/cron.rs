//! Scheduled tasks: each tick fires exactly once across every process sharing the store.
//!
//! A scheduler computes the next tick of the task's 5-field UTC schedule, sleeps until it,
//! then claims the tick by its id in the store; the one process that wins runs the handler.
//! After downtime, missed ticks are skipped, not replayed: a process that starts computes the
//! next tick from now. A failed run is logged and waits for the next tick unless the task
//! allows more attempts (`max_attempts`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use raindrop_codegen::value::CronSchedule;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::job::{JobError, Timestamp, now};
use crate::retry::RetryPolicy;
use crate::store::{KvEntry, Store};
use crate::task::{Retry, TaskError};

/// The kv namespace where the last run of each cron task is recorded.
pub const CRON_RUNS_NAMESPACE: &str = "__raindrop_cron";

/// The scheduled event a cron handler receives.
#[derive(Debug, Clone)]
pub struct ScheduledEvent {
    /// The task's name.
    pub task: String,
    /// Its cron expression.
    pub cron: String,
    /// The tick this run is for.
    pub scheduled_time: Timestamp,
    /// This run's attempt, 1 for the first.
    pub attempt: u32,
    /// Fires when the run times out or the process shuts down.
    pub cancellation: CancellationToken,
}

/// Runs a cron task's ticks.
#[async_trait]
pub trait CronHandler: Send + Sync + 'static {
    /// Runs the task for one tick.
    async fn call(&self, event: ScheduledEvent) -> Result<(), TaskError>;
}

/// A [`CronHandler`] from an async function of the event.
pub fn cron_fn<F, Fut>(f: F) -> impl CronHandler
where
    F: Fn(ScheduledEvent) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), TaskError>> + Send + 'static,
{
    struct FnCron<F>(F);

    #[async_trait]
    impl<F, Fut> CronHandler for FnCron<F>
    where
        F: Fn(ScheduledEvent) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), TaskError>> + Send + 'static,
    {
        async fn call(&self, event: ScheduledEvent) -> Result<(), TaskError> {
            (self.0)(event).await
        }
    }

    FnCron(f)
}

/// A task's schedule, as the manifest compiler checked and parsed it.
#[derive(Debug, Clone)]
pub struct Schedule(CronSchedule);

impl Schedule {
    /// Parses a 5-field expression (or an `@` alias), as the manifest compiler does.
    pub fn parse(expression: &str) -> Result<Self> {
        CronSchedule::parse(expression).map(Self).map_err(|e| {
            Error::Config(format!(
                "invalid cron expression `{expression}`: {}",
                e.message
            ))
        })
    }

    /// The first tick strictly after `after`.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        self.0.cron().find_next_occurrence(&after, false).ok()
    }

    /// The expression.
    pub fn expression(&self) -> &str {
        self.0.as_str()
    }
}

impl From<CronSchedule> for Schedule {
    fn from(checked: CronSchedule) -> Self {
        Self(checked)
    }
}

/// The last run of a cron task, as recorded for dashboards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CronRun {
    /// The tick.
    pub scheduled_time: Timestamp,
    /// When the run ended.
    pub finished_at: Timestamp,
    /// Attempts made.
    pub attempts: u32,
    /// `succeeded` or `failed`.
    pub outcome: String,
    /// The last error, if it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
}

/// One cron task's settings.
#[derive(Debug, Clone)]
pub struct CronConfig {
    /// The task's name.
    pub task: String,
    /// Its schedule.
    pub schedule: Schedule,
    /// Longest a run may take.
    pub timeout: Duration,
    /// Attempts per tick.
    pub max_attempts: u32,
}

/// Fires the tick at `tick` if this process wins it (exactly one caller across processes does):
/// runs the handler with the task's timeout and attempts, and records the run. Returns whether
/// this process ran it.
pub async fn fire(
    store: &Arc<dyn Store>,
    handler: &Arc<dyn CronHandler>,
    config: &CronConfig,
    tick: Timestamp,
    stop: &CancellationToken,
) -> Result<bool> {
    if !store.claim_tick(&config.task, tick, now()).await? {
        return Ok(false);
    }
    let policy = RetryPolicy {
        max_attempts: config.max_attempts,
        ..RetryPolicy::default()
    };
    let mut attempt = 0;
    let outcome = loop {
        attempt += 1;
        let result = attempt_once(handler, config, tick, attempt, stop).await;
        match result {
            Ok(()) => {
                tracing::info!(task = %config.task, tick = %tick, attempt, "cron run succeeded");
                break Ok(());
            }
            Err((retry, error)) => {
                tracing::warn!(task = %config.task, tick = %tick, attempt, error = %error.message, "cron run failed");
                if attempt >= config.max_attempts || retry == Retry::Never || stop.is_cancelled() {
                    break Err(error);
                }
                // A cron run has no job to snooze: a snooze is a retry after its delay.
                let delay = match retry {
                    Retry::After(delay) | Retry::Snooze(delay) => delay,
                    _ => policy.delay(attempt),
                };
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stop.cancelled() => break Err(error),
                }
            }
        }
    };
    record(store, config, tick, attempt, outcome).await?;
    Ok(true)
}

/// Runs attempt `attempt` of the tick at `tick` with the task's timeout; a panic or a timeout
/// is the attempt's error.
async fn attempt_once(
    handler: &Arc<dyn CronHandler>,
    config: &CronConfig,
    tick: Timestamp,
    attempt: u32,
    stop: &CancellationToken,
) -> std::result::Result<(), (Retry, JobError)> {
    let cancellation = stop.child_token();
    let event = ScheduledEvent {
        task: config.task.clone(),
        cron: config.schedule.expression().to_owned(),
        scheduled_time: tick,
        attempt,
        cancellation: cancellation.clone(),
    };
    let handler = handler.clone();
    let mut run = tokio::spawn(async move { handler.call(event).await });
    tokio::select! {
        joined = &mut run => match joined {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(error.into_parts()),
            Err(join) => Err((Retry::Backoff, JobError::new(format!("the handler panicked: {join}")))),
        },
        () = tokio::time::sleep(config.timeout) => {
            cancellation.cancel();
            run.abort();
            Err((Retry::Backoff, JobError::new(format!("timed out after {}s", config.timeout.as_secs()))))
        }
    }
}

/// Records how the tick at `tick` ended after `attempt` attempts: the last run in the cron
/// runs namespace, and the runs counter.
async fn record(
    store: &Arc<dyn Store>,
    config: &CronConfig,
    tick: Timestamp,
    attempt: u32,
    outcome: std::result::Result<(), JobError>,
) -> Result<()> {
    let run = CronRun {
        scheduled_time: tick,
        finished_at: now(),
        attempts: attempt,
        outcome: if outcome.is_ok() {
            "succeeded"
        } else {
            "failed"
        }
        .into(),
        error: outcome.err(),
    };
    let label = [
        ("task", config.task.clone()),
        ("outcome", run.outcome.clone()),
    ];
    metrics::counter!("raindrop_cron_runs_total", &label).increment(1);
    let entry = KvEntry {
        value: serde_json::to_vec(&run)?,
        metadata: None,
        expires_at: None,
    };
    store.kv_put(CRON_RUNS_NAMESPACE, &config.task, entry).await
}

/// The scheduler of one cron task: runs until `stop`.
pub(crate) async fn run(
    store: Arc<dyn Store>,
    handler: Arc<dyn CronHandler>,
    config: CronConfig,
    stop: CancellationToken,
) {
    tracing::info!(task = %config.task, cron = %config.schedule.expression(), "cron scheduler started");
    loop {
        let Some(tick) = config.schedule.next_after(now()) else {
            tracing::warn!(task = %config.task, "the schedule has no next tick; the scheduler stops");
            return;
        };
        let wait = (tick - now()).to_std().unwrap_or_default();
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => return,
        }
        if let Err(err) = fire(&store, &handler, &config, tick, &stop).await {
            tracing::error!(task = %config.task, tick = %tick, error = %err, "cron tick could not be claimed or recorded");
        }
    }
}
