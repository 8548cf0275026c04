//! From the checked model to what a process runs: one configuration per worker pool, queue
//! consumer, schedule and monitor, each built once, for the roles the process has.
//!
//! Everything here was validated by the manifest compiler; nothing is parsed again.

use std::collections::BTreeMap;

use raindrop_codegen::model::{Application, ObserverRole, TaskRole};
use raindrop_codegen::name::Name;

use crate::cron::{CronConfig, Schedule};
use crate::observer::MonitorConfig;
use crate::retry::RetryPolicy;
use crate::settings::Settings;
use crate::store::{ClaimLimits, RetentionPolicy, StatusCache};
use crate::worker::WorkerConfig;

/// What a worker pool runs its jobs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PoolKind {
    /// A worker `task`: one handler call per job.
    Task,
    /// An `observer` with `source { queue }`: batches of messages.
    Consumer {
        /// Most messages per batch.
        batch_size: usize,
    },
}

/// A worker pool to start.
#[derive(Debug, Clone)]
pub(crate) struct Pool {
    pub(crate) kind: PoolKind,
    pub(crate) config: WorkerConfig,
}

/// Everything a process with `settings.roles` starts, in start order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Plan {
    /// Worker pools of worker tasks, then of queue consumers.
    pub(crate) pools: Vec<Pool>,
    /// Cron schedulers.
    pub(crate) crons: Vec<CronConfig>,
    /// Monitors.
    pub(crate) monitors: Vec<MonitorConfig>,
}

impl Plan {
    /// The components `app` has for the roles in `settings`.
    pub(crate) fn of(app: &Application, settings: &Settings) -> Self {
        let mut plan = Plan::default();
        if settings.roles.workers {
            plan.pools = task_pools(app, settings)
                .chain(consumer_pools(app, settings))
                .collect();
        }
        if settings.roles.scheduler {
            plan.crons = crons(app).collect();
        }
        if settings.roles.observer {
            plan.monitors = monitors(app, settings);
        }
        plan
    }
}

fn task_pools<'a>(app: &'a Application, settings: &'a Settings) -> impl Iterator<Item = Pool> + 'a {
    app.tasks.iter().filter_map(move |task| {
        let TaskRole::Worker {
            queue,
            concurrency,
            autoscale,
        } = &task.role
        else {
            return None;
        };
        let config = worker_config(app, settings, &task.name, queue)?;
        Some(Pool {
            kind: PoolKind::Task,
            config: WorkerConfig {
                concurrency: *concurrency as usize,
                timeout: task.timeout.get(),
                autoscale: autoscale.map(|a| crate::worker::Autoscale {
                    min: a.min as usize,
                    max: a.max as usize,
                    target_wait: a.target_wait.get(),
                }),
                ..config
            },
        })
    })
}

fn consumer_pools<'a>(
    app: &'a Application,
    settings: &'a Settings,
) -> impl Iterator<Item = Pool> + 'a {
    app.observers.iter().filter_map(move |observer| {
        let ObserverRole::Consumer { queue, batch_size } = &observer.role else {
            return None;
        };
        // One batch at a time, so messages are handled in the order they are claimed.
        let config = worker_config(app, settings, &observer.name, queue)?;
        Some(Pool {
            kind: PoolKind::Consumer {
                batch_size: *batch_size as usize,
            },
            config: WorkerConfig {
                concurrency: 1,
                timeout: settings.consumer_timeout,
                ..config
            },
        })
    })
}

/// A pool named `name` pulling `queue`, with the queue's lease, retries and claim limits; one
/// job at a time under the settings' consumer timeout until the caller says otherwise.
fn worker_config(
    app: &Application,
    settings: &Settings,
    name: &Name,
    queue: &Name,
) -> Option<WorkerConfig> {
    let policy = app.queue(queue)?;
    Some(WorkerConfig {
        task: name.to_string(),
        queue: queue.to_string(),
        concurrency: 1,
        timeout: settings.consumer_timeout,
        lease: policy.visibility_timeout.get(),
        retry: RetryPolicy::of(policy),
        idle_poll: settings.idle_poll,
        grace: settings.grace,
        limits: claim_limits(app, queue.as_str()),
        max_snoozes: policy.max_snoozes,
        autoscale: None,
    })
}

fn crons(app: &Application) -> impl Iterator<Item = CronConfig> + '_ {
    app.tasks.iter().filter_map(|task| {
        let TaskRole::Cron {
            schedule,
            max_attempts,
        } = &task.role
        else {
            return None;
        };
        Some(CronConfig {
            task: task.name.to_string(),
            schedule: Schedule::from(schedule.clone()),
            timeout: task.timeout.get(),
            max_attempts: *max_attempts,
        })
    })
}

fn monitors(app: &Application, settings: &Settings) -> Vec<MonitorConfig> {
    let retention = retention(app);
    app.observers
        .iter()
        .filter_map(|observer| {
            let ObserverRole::Monitor {
                queues,
                alerts,
                sinks,
            } = &observer.role
            else {
                return None;
            };
            Some(MonitorConfig {
                name: observer.name.to_string(),
                queues: queues.iter().map(ToString::to_string).collect(),
                alerts: alerts.clone(),
                sinks: sinks.clone(),
                tick: settings.observer_tick,
                retention_every: settings.retention_every,
                retention: retention.clone(),
                event_horizon: settings.event_horizon,
                limits: queues
                    .iter()
                    .map(|q| (q.to_string(), claim_limits(app, q.as_str())))
                    .filter(|(_, limits)| {
                        limits.limits_flow() || limits.running_per_tenant.is_some()
                    })
                    .collect(),
            })
        })
        .collect()
}

/// How long each queue keeps its finished jobs.
fn retention(app: &Application) -> BTreeMap<String, RetentionPolicy> {
    app.queues
        .iter()
        .map(|q| {
            let policy = RetentionPolicy {
                succeeded: q.retention.succeeded.get(),
                failed: q.retention.failed.get(),
                dead: q.retention.dead.get(),
            };
            (q.name.to_string(), policy)
        })
        .collect()
}

/// Where job status documents go for `app`: its status kv_cache, with that cache's TTL.
pub fn status_cache(app: &Application) -> Option<StatusCache> {
    let name = app.status_cache.as_ref()?;
    let ttl = app
        .kv_caches
        .iter()
        .find(|c| &c.name == name)
        .and_then(|c| c.ttl)
        .map(|t| t.get());
    Some(StatusCache {
        namespace: name.to_string(),
        ttl,
    })
}

/// The most a submission to `queue` may ask for: the queue's `max_attempts`, and the longest
/// `timeout` of the tasks that work it (`None` when no task does).
pub(crate) fn submission_ceiling(app: &Application, queue: &str) -> Ceiling {
    let max_attempts = app
        .queues
        .iter()
        .find(|q| q.name.as_str() == queue)
        .map_or(1, |q| q.max_attempts);
    let timeout = app
        .tasks
        .iter()
        .filter(|t| matches!(&t.role, TaskRole::Worker { queue: q, .. } if q.as_str() == queue))
        .map(|t| t.timeout.get())
        .max();
    Ceiling {
        max_attempts,
        timeout,
    }
}

/// What one submission may ask for at most (see [`submission_ceiling`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ceiling {
    /// Attempts: the queue's `max_attempts`.
    pub(crate) max_attempts: u32,
    /// One attempt's timeout: the longest `timeout` of the queue's tasks.
    pub(crate) timeout: Option<std::time::Duration>,
}

/// What claims on `queue` observe: the queue's own `concurrency_limit` and `rate_limit`, and the
/// strictest running-jobs quota of the services that accept jobs for it (a quota belongs to a
/// service; its tenants' jobs land in these queues).
fn claim_limits(app: &Application, queue: &str) -> ClaimLimits {
    let policy = app.queues.iter().find(|q| q.name.as_str() == queue);
    let concurrency = policy.and_then(|q| q.concurrency_limit.as_ref());
    ClaimLimits {
        running: concurrency.filter(|c| c.key.is_none()).map(|c| c.max),
        running_per_key: concurrency.filter(|c| c.key.is_some()).map(|c| c.max),
        rate: policy
            .and_then(|q| q.rate_limit)
            .map(|r| crate::store::rate::Limit {
                requests: r.jobs,
                per: r.per.get(),
                burst: r.burst,
            }),
        running_per_tenant: app
            .services
            .iter()
            .filter(|s| s.queues.iter().any(|q| q.as_str() == queue))
            .filter_map(|s| s.quota.and_then(|q| q.max_running))
            .min(),
    }
}

/// The names bound to handlers that the manifest does not declare in that role, and the
/// blocks that need a handler and have none.
#[derive(Debug, Default)]
pub(crate) struct Bindings<'a> {
    pub(crate) tasks: Vec<&'a str>,
    pub(crate) crons: Vec<&'a str>,
    pub(crate) consumers: Vec<&'a str>,
    pub(crate) observers: Vec<&'a str>,
}

impl Bindings<'_> {
    /// `Err` naming every block without a handler, else the first handler bound to a name the
    /// manifest does not declare in that role.
    pub(crate) fn check(&self, app: &Application) -> crate::Result<()> {
        let bound = |names: &[&str], name: &Name| names.contains(&name.as_str());
        let mut missing = Vec::new();
        for task in &app.tasks {
            let names = match task.role {
                TaskRole::Worker { .. } => &self.tasks,
                TaskRole::Cron { .. } => &self.crons,
            };
            if !bound(names, &task.name) {
                missing.push(format!("task `{}`", task.name));
            }
        }
        for observer in &app.observers {
            if matches!(observer.role, ObserverRole::Consumer { .. })
                && !bound(&self.consumers, &observer.name)
            {
                missing.push(format!("observer `{}`", observer.name));
            }
        }
        if !missing.is_empty() {
            return Err(crate::Error::Config(format!(
                "no handler for {}: bind one to each task the manifest declares",
                missing.join(", ")
            )));
        }
        let task = |name: &str, worker: bool| {
            app.tasks.iter().any(|t| {
                t.name.as_str() == name && matches!(t.role, TaskRole::Worker { .. }) == worker
            })
        };
        let observer = |name: &str, role: fn(&ObserverRole) -> bool| {
            app.observers
                .iter()
                .any(|o| o.name.as_str() == name && role(&o.role))
        };
        known(&self.tasks, "worker task", |n| task(n, true))?;
        known(&self.crons, "cron task", |n| task(n, false))?;
        known(&self.consumers, "consumer observer", |n| {
            observer(n, |r| matches!(r, ObserverRole::Consumer { .. }))
        })?;
        known(&self.observers, "monitor observer", |n| {
            observer(n, |r| matches!(r, ObserverRole::Monitor { .. }))
        })
    }
}

/// `Err` for the first of `names` that `declared` does not know.
fn known(names: &[&str], kind: &'static str, declared: impl Fn(&str) -> bool) -> crate::Result<()> {
    match names.iter().find(|name| !declared(name)) {
        Some(name) => Err(crate::Error::Unknown {
            kind,
            name: (*name).to_owned(),
        }),
        None => Ok(()),
    }
}
