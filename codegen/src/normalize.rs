//! Defaults and inferred wiring, in one place: turns the checked [`ast::Application`] into the
//! [`model::Application`] the runtime runs.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use crate::ast;
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::model::{
    self, Auth, AuthMode, Consumer, DebounceMode, ObserverRole, TaskRole, UniqueBy, UniqueState,
    Visibility,
};
use crate::name::Name;
use crate::source::Span;
use crate::value::{ByteSize, Duration};

/// Every default a manifest leaves out.
pub mod defaults {
    use super::*;

    /// `service.listen`.
    pub const LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));
    /// `service.visibility`.
    pub const VISIBILITY: Visibility = Visibility::Public;
    /// `service.max_body`.
    pub const MAX_BODY: ByteSize = ByteSize::mib(1);
    /// `service.rate_limit.per`.
    pub const RATE_LIMIT_PER: Duration = Duration::from_secs(1);
    /// `service.streams.per_key`.
    pub const STREAMS_PER_KEY: u32 = 100;
    /// `service.streams.total`.
    pub const STREAMS_TOTAL: u32 = 10_000;
    /// `service.streams.lifetime`.
    pub const STREAM_LIFETIME: Duration = Duration::from_secs(15 * 60);
    /// `queue.max_attempts`.
    pub const MAX_ATTEMPTS: u32 = 5;
    /// `queue.backoff.initial`.
    pub const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
    /// `queue.backoff.max`.
    pub const BACKOFF_MAX: Duration = Duration::from_secs(10 * 60);
    /// `queue.backoff.multiplier`.
    pub const BACKOFF_MULTIPLIER: f64 = 2.0;
    /// `queue.backoff.jitter`.
    pub const BACKOFF_JITTER: f64 = 0.2;
    /// `queue.visibility_timeout`.
    pub const VISIBILITY_TIMEOUT: Duration = Duration::from_secs(30);
    /// `queue.retention.succeeded`.
    pub const RETAIN_SUCCEEDED: Duration = Duration::from_secs(86_400);
    /// `queue.retention.failed`.
    pub const RETAIN_FAILED: Duration = Duration::from_secs(7 * 86_400);
    /// `queue.retention.dead`.
    pub const RETAIN_DEAD: Duration = Duration::from_secs(14 * 86_400);
    /// `queue.max_message_size` (Raindrop's limit).
    pub const MAX_MESSAGE_SIZE: ByteSize = ByteSize::kib(128);
    /// `task.concurrency`.
    pub const CONCURRENCY: u32 = 10;
    /// `task.timeout` (Raindrop's limit for a run).
    pub const TIMEOUT: Duration = Duration::from_secs(5 * 60);
    /// `task.max_attempts` of a cron task: a failed run waits for the next tick.
    pub const CRON_MAX_ATTEMPTS: u32 = 1;
    /// `observer.source.batch_size`.
    pub const BATCH_SIZE: u32 = 10;
    /// `alert.window`.
    pub const ALERT_WINDOW: Duration = Duration::from_secs(5 * 60);
    /// `task.autoscale.min`.
    pub const AUTOSCALE_MIN: u32 = 1;
    /// `task.autoscale.target_wait`.
    pub const AUTOSCALE_TARGET_WAIT: Duration = Duration::from_secs(1);
    /// `queue.unique.for`: only a job in `states` makes a new one its duplicate.
    pub const UNIQUE_WINDOW: Duration = Duration::from_secs(0);
    /// `queue.unique.states`.
    pub const UNIQUE_STATES: [UniqueState; 2] = [UniqueState::Waiting, UniqueState::Running];
    /// `queue.unique.by`.
    pub const UNIQUE_BY: [UniqueBy; 2] = [UniqueBy::Kind, UniqueBy::Payload];
    /// `queue.debounce.mode`.
    pub const DEBOUNCE_MODE: DebounceMode = DebounceMode::Trailing;
}

fn name(header: &ast::Header) -> Option<Name> {
    Name::parse(&header.name.value).ok()
}

fn names(list: &[crate::source::Spanned<String>]) -> Vec<Name> {
    list.iter()
        .filter_map(|n| Name::parse(&n.value).ok())
        .collect()
}

/// Builds the normalized application, reporting wiring that cannot be inferred. Blocks whose
/// names are invalid are left out (their errors are already reported).
pub fn normalize(app: &ast::Application, diags: &mut Diagnostics) -> Option<model::Application> {
    let all_queues: Vec<Name> = app.queues.iter().filter_map(|q| name(&q.header)).collect();
    // Inferring who pulls what counts blocks; with a block unread or misnamed that count is
    // wrong, and any inference error would only echo the first mistake.
    let certain = !app.incomplete && all_queues.len() == app.queues.len();

    let tasks: Vec<model::Task> = app
        .tasks
        .iter()
        .filter_map(|t| task(t, &all_queues, certain, diags))
        .collect();
    let observers: Vec<model::Observer> = app
        .observers
        .iter()
        .filter_map(|o| observer(o, &all_queues, diags))
        .collect();
    let consumers = consumers(app, &tasks, &observers, diags);
    let queues = queues(app, &consumers, diags);

    let status_cache = status_cache(app, diags);
    let services = app
        .services
        .iter()
        .filter_map(|s| service(s, &all_queues, &queues, diags))
        .collect();

    let application = model::Application {
        name: name(&app.header)?,
        services,
        queues,
        tasks,
        kv_caches: kv_caches(app),
        observers,
        env: env(app),
        status_cache,
        unsupported: unsupported(app),
        metrics_listen: app.metrics_listen.as_ref().map(|v| v.value),
    };
    Some(application)
}

/// The one consumer of each queue (a worker task or a consumer observer), reporting a queue
/// that two of them would pull.
fn consumers<'m>(
    app: &ast::Application,
    tasks: &'m [model::Task],
    observers: &'m [model::Observer],
    diags: &mut Diagnostics,
) -> BTreeMap<&'m Name, (Consumer, Span)> {
    let mut consumers: BTreeMap<&Name, (Consumer, Span)> = BTreeMap::new();
    let task_consumers = tasks
        .iter()
        .zip(&app.tasks)
        .filter_map(|(t, ast)| match &t.role {
            TaskRole::Worker { queue, .. } => {
                Some((queue, Consumer::Task(t.name.clone()), ast.header.name.span))
            }
            TaskRole::Cron { .. } => None,
        });
    let observer_consumers =
        observers
            .iter()
            .zip(&app.observers)
            .filter_map(|(o, ast)| match &o.role {
                ObserverRole::Consumer { queue, .. } => Some((
                    queue,
                    Consumer::Observer(o.name.clone()),
                    ast.header.name.span,
                )),
                _ => None,
            });
    for (queue, consumer, span) in task_consumers.chain(observer_consumers) {
        if let Some((first, first_span)) = consumers.get(queue) {
            diags.push(
                Diagnostic::error(
                    "duplicate-consumer",
                    span,
                    format!(
                        "queue `{queue}` already has a consumer, {}",
                        describe(first)
                    ),
                )
                .with_label(format!("{} would also pull `{queue}`", describe(&consumer)))
                .with_related(*first_span, "first consumer")
                .with_help("each queue has one consumer: give this one its own queue"),
            );
        } else {
            consumers.insert(queue, (consumer, span));
        }
    }
    consumers
}

/// The queues with their consumers, warning about a queue nothing pulls.
fn queues(
    app: &ast::Application,
    consumers: &BTreeMap<&Name, (Consumer, Span)>,
    diags: &mut Diagnostics,
) -> Vec<model::Queue> {
    app.queues
        .iter()
        .filter_map(|q| {
            let queue = queue(q)?;
            let consumer = consumers.get(&queue.name).map(|(c, _)| c.clone());
            if let Some((Consumer::Observer(observer), observer_span)) = consumers.get(&queue.name)
            {
                limits_on_observer_queue(q, observer, *observer_span, diags);
            }
            // Only worth saying once the manifest is otherwise right: before that, a missing
            // consumer is usually the echo of an error.
            if consumer.is_none() && !diags.has_errors() {
                diags.push(
                    Diagnostic::warning("unconsumed-queue", q.header.name.span, format!("nothing pulls jobs from queue `{}`", queue.name))
                        .with_help(format!("add `task \"worker\" {{ queue = \"{}\" }}` or an observer with `source {{ queue = \"{}\" }}`", queue.name, queue.name)),
                );
            }
            Some(model::Queue { consumer, ..queue })
        })
        .collect()
}

/// A queue an observer consumes takes no `rate_limit` or `concurrency_limit`: the runtime
/// applies them when a worker task claims a job, and an observer claims none that way.
/// (`unique` and `debounce` apply when a job is sent, so any queue may have them.)
fn limits_on_observer_queue(
    q: &ast::Queue,
    observer: &Name,
    observer_span: Span,
    diags: &mut Diagnostics,
) {
    let limits = [
        ("rate_limit", q.rate_limit.as_ref().map(|r| r.span)),
        (
            "concurrency_limit",
            q.concurrency_limit.as_ref().map(|c| c.span),
        ),
    ];
    for (key, span) in limits {
        let Some(span) = span else { continue };
        diags.push(
            Diagnostic::error(
                "conflicting-settings",
                span,
                format!(
                    "`{key}` on queue `{}`, which observer `{observer}` consumes: limits apply to worker tasks only",
                    q.header.name.value
                ),
            )
            .with_related(observer_span, "consumes the queue")
            .with_help(format!(
                "remove `{key}`, or pull the queue with a worker `task` instead of the observer"
            )),
        );
    }
}

fn kv_caches(app: &ast::Application) -> Vec<model::KvCache> {
    app.kv_caches
        .iter()
        .filter_map(|c| {
            Some(model::KvCache {
                name: name(&c.header)?,
                ttl: c.ttl.as_ref().map(|t| t.value),
            })
        })
        .collect()
}

fn env(app: &ast::Application) -> Vec<model::EnvVar> {
    app.envs
        .iter()
        .map(|e| model::EnvVar {
            name: e.header.name.value.clone(),
            secret: e.secret.as_ref().is_some_and(|s| s.value),
            default: e.default.as_ref().map(|d| d.value.clone()),
        })
        .collect()
}

fn unsupported(app: &ast::Application) -> Vec<model::UnsupportedBlock> {
    app.unsupported
        .iter()
        .map(|u| model::UnsupportedBlock {
            kind: u.header.kind.to_owned(),
            name: u.header.name.value.clone(),
        })
        .collect()
}

fn describe(consumer: &Consumer) -> String {
    match consumer {
        Consumer::Task(name) => format!("task `{name}`"),
        Consumer::Observer(name) => format!("observer `{name}`"),
    }
}

fn queue(q: &ast::Queue) -> Option<model::Queue> {
    let backoff = q.backoff.clone().unwrap_or_default();
    let retention = q.retention.clone().unwrap_or_default();
    Some(model::Queue {
        name: name(&q.header)?,
        max_attempts: q
            .max_attempts
            .as_ref()
            .map_or(defaults::MAX_ATTEMPTS, |m| m.value),
        backoff: model::Backoff {
            initial: backoff
                .initial
                .map_or(defaults::BACKOFF_INITIAL, |v| v.value),
            max: backoff.max.map_or(defaults::BACKOFF_MAX, |v| v.value),
            multiplier: backoff
                .multiplier
                .map_or(defaults::BACKOFF_MULTIPLIER, |v| v.value),
            jitter: backoff.jitter.map_or(defaults::BACKOFF_JITTER, |v| v.value),
        },
        visibility_timeout: q
            .visibility_timeout
            .as_ref()
            .map_or(defaults::VISIBILITY_TIMEOUT, |v| v.value),
        retention: model::Retention {
            succeeded: retention
                .succeeded
                .map_or(defaults::RETAIN_SUCCEEDED, |v| v.value),
            failed: retention
                .failed
                .map_or(defaults::RETAIN_FAILED, |v| v.value),
            dead: retention.dead.map_or(defaults::RETAIN_DEAD, |v| v.value),
        },
        max_message_size: q
            .max_message_size
            .as_ref()
            .map_or(defaults::MAX_MESSAGE_SIZE, |v| v.value),
        consumer: None,
        // Without `jobs` or `per` (or `max`) the block is already reported.
        rate_limit: q.rate_limit.as_ref().and_then(|r| {
            let jobs = r.jobs.as_ref()?.value;
            Some(model::QueueRateLimit {
                jobs,
                per: r.per.as_ref()?.value,
                burst: r.burst.as_ref().map_or(jobs, |v| v.value),
            })
        }),
        concurrency_limit: q.concurrency_limit.as_ref().and_then(|c| {
            Some(model::ConcurrencyLimit {
                max: c.max.as_ref()?.value,
                key: c.key.as_ref().map(|k| k.value.clone()),
            })
        }),
        max_snoozes: q
            .max_snoozes
            .as_ref()
            .map_or(model::DEFAULT_MAX_SNOOZES, |v| v.value),
        unique: q.unique.as_ref().map(|u| model::Unique {
            window: u
                .window
                .as_ref()
                .map_or(defaults::UNIQUE_WINDOW, |v| v.value),
            states: u
                .states
                .as_ref()
                .map_or_else(|| defaults::UNIQUE_STATES.to_vec(), |v| v.value.clone()),
            by: u
                .by
                .as_ref()
                .map_or_else(|| defaults::UNIQUE_BY.to_vec(), |v| v.value.clone()),
        }),
        // Without `key` or `window` the block is already reported.
        debounce: q.debounce.as_ref().and_then(|d| {
            Some(model::Debounce {
                key: d.key.as_ref()?.value.clone(),
                window: d.window.as_ref()?.value,
                mode: d.mode.as_ref().map_or(defaults::DEBOUNCE_MODE, |v| v.value),
                max_wait: d.max_wait.as_ref().map(|v| v.value),
            })
        }),
    })
}

fn task(
    t: &ast::Task,
    queues: &[Name],
    certain: bool,
    diags: &mut Diagnostics,
) -> Option<model::Task> {
    let task_name = name(&t.header)?;
    let timeout = t.timeout.as_ref().map_or(defaults::TIMEOUT, |v| v.value);
    let role = if let Some(cron) = &t.cron {
        TaskRole::Cron {
            // An invalid schedule is already reported; nothing more to infer.
            schedule: cron.value.clone()?,
            max_attempts: t
                .max_attempts
                .as_ref()
                .map_or(defaults::CRON_MAX_ATTEMPTS, |v| v.value),
        }
    } else if t.cron_type.is_some() {
        return None;
    } else {
        let queue = match &t.queue {
            Some(queue) => Name::parse(&queue.value)
                .ok()
                .filter(|q| queues.contains(q))?,
            None => match queues {
                [only] if certain => only.clone(),
                _ if !certain => return None,
                [] => {
                    diags.push(
                        Diagnostic::error(
                            "ambiguous-wiring",
                            t.header.name.span,
                            format!("task `{task_name}` has no queue to pull"),
                        )
                        .with_help(
                            "declare `queue \"jobs\" {}`, or give the task a `cron` schedule",
                        ),
                    );
                    return None;
                }
                several => {
                    let list = several
                        .iter()
                        .map(|q| format!("`{q}`"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    diags.push(
                        Diagnostic::error(
                            "ambiguous-wiring",
                            t.header.name.span,
                            format!(
                                "task `{task_name}` could pull any of {} queues",
                                several.len()
                            ),
                        )
                        .with_help(format!(
                            "add `queue = \"{}\"` to say which (queues: {list})",
                            several[0]
                        )),
                    );
                    return None;
                }
            },
        };
        let autoscale = t.autoscale.as_ref().and_then(|a| {
            let max = a.max.as_ref()?.value;
            Some(model::Autoscale {
                min: a.min.as_ref().map_or(defaults::AUTOSCALE_MIN, |v| v.value),
                max,
                target_wait: a
                    .target_wait
                    .as_ref()
                    .map_or(defaults::AUTOSCALE_TARGET_WAIT, |v| v.value),
            })
        });
        TaskRole::Worker {
            queue,
            concurrency: match (&autoscale, &t.concurrency) {
                (Some(a), _) => a.min,
                (None, Some(v)) => v.value,
                (None, None) => defaults::CONCURRENCY,
            },
            autoscale,
        }
    };
    Some(model::Task {
        name: task_name,
        timeout,
        role,
    })
}

fn observer(
    o: &ast::Observer,
    queues: &[Name],
    diags: &mut Diagnostics,
) -> Option<model::Observer> {
    let role = match &o.source {
        Some(source) => match (&source.queue, &source.bucket) {
            (Some(queue), None) => ObserverRole::Consumer {
                queue: Name::parse(&queue.value)
                    .ok()
                    .filter(|q| queues.contains(q))?,
                batch_size: source
                    .batch_size
                    .as_ref()
                    .map_or(defaults::BATCH_SIZE, |v| v.value),
            },
            (None, Some(bucket)) => {
                diags.push(
                    Diagnostic::warning(
                        "unsupported-kind",
                        source.span,
                        format!("bucket observer `{}` is not run by this runtime", o.header.name.value),
                    )
                    .with_help("the block is kept for Raindrop compatibility; no bucket events are delivered"),
                );
                ObserverRole::Bucket {
                    bucket: Name::parse(&bucket.value).ok()?,
                    actions: source.actions.iter().map(|a| a.value).collect(),
                }
            }
            // Both or neither: reported by validation.
            _ => return None,
        },
        None => ObserverRole::Monitor {
            queues: o.queues.as_deref().map_or_else(|| queues.to_vec(), names),
            alerts: o
                .alerts
                .iter()
                .filter_map(|a| {
                    Some(model::Alert {
                        name: Name::parse(&a.name.value).ok()?,
                        metric: a.metric.as_ref()?.value,
                        comparison: a.comparison.as_ref().map(|v| v.value).unwrap_or_default(),
                        threshold: a.threshold.as_ref()?.value,
                        window: a
                            .window
                            .as_ref()
                            .map_or(defaults::ALERT_WINDOW, |v| v.value),
                        pending_for: a.pending_for.as_ref().map(|v| v.value),
                        severity: a.severity.as_ref().map(|v| v.value).unwrap_or_default(),
                    })
                })
                .collect(),
            sinks: o
                .sinks
                .iter()
                .filter_map(|s| {
                    Some(model::Sink {
                        name: Name::parse(&s.name.value).ok()?,
                        url: s.url.as_ref()?.value.clone(),
                        format: s.format.as_ref().map(|v| v.value).unwrap_or_default(),
                        secret_env: s.secret_env.as_ref().map(|v| v.value.clone()),
                        auth: s.auth.as_ref().map(|v| v.value).unwrap_or_default(),
                    })
                })
                .collect(),
        },
    };
    Some(model::Observer {
        name: name(&o.header)?,
        role,
    })
}

fn service(
    s: &ast::Service,
    all_queues: &[Name],
    queues: &[model::Queue],
    diags: &mut Diagnostics,
) -> Option<model::Service> {
    let served = s
        .queues
        .as_deref()
        .map_or_else(|| all_queues.to_vec(), names);
    let max_body = s.max_body.as_ref().map_or(defaults::MAX_BODY, |v| v.value);
    for queue in queues.iter().filter(|q| served.contains(&q.name)) {
        if queue.max_message_size > max_body {
            diags.push(
                Diagnostic::warning(
                    "body-limit-below-message-size",
                    s.max_body.as_ref().map_or(s.header.name.span, |m| m.span),
                    format!(
                        "service `{}` accepts bodies up to {max_body}, but queue `{}` accepts messages up to {}",
                        s.header.name.value, queue.name, queue.max_message_size
                    ),
                )
                .with_help("raise `max_body` so large messages can be submitted over HTTP"),
            );
        }
    }
    let auth = match s.auth.as_ref().map(|a| a.value) {
        None | Some(AuthMode::None) => Auth::None,
        Some(AuthMode::ApiKey) => Auth::ApiKey {
            keys_env: s.api_keys_env.as_ref().map_or_else(
                || model::DEFAULT_API_KEYS_ENV.to_owned(),
                |e| e.value.clone(),
            ),
        },
    };
    Some(model::Service {
        name: name(&s.header)?,
        listen: s.listen.as_ref().map_or(defaults::LISTEN, |v| v.value),
        visibility: s
            .visibility
            .as_ref()
            .map_or(defaults::VISIBILITY, |v| v.value),
        domain: s.domain.as_ref().map(|d| d.value.clone()),
        auth,
        rate_limit: s.rate_limit.as_ref().and_then(|r| {
            let requests = r.value.requests.as_ref()?.value;
            Some(model::RateLimit {
                requests,
                per: r
                    .value
                    .per
                    .as_ref()
                    .map_or(defaults::RATE_LIMIT_PER, |v| v.value),
                burst: r.value.burst.as_ref().map_or(requests, |v| v.value),
            })
        }),
        quota: s.quota.as_ref().map(|q| model::Quota {
            max_queued: q.value.max_queued.as_ref().map(|v| v.value),
            max_running: q.value.max_running.as_ref().map(|v| v.value),
            max_payload: q.value.max_payload.as_ref().map(|v| v.value),
            min_priority: q.value.min_priority.as_ref().map(|v| v.value),
            max_priority: q.value.max_priority.as_ref().map(|v| v.value),
        }),
        streams: {
            let given = s.streams.as_ref().map(|s| &s.value);
            let total = given
                .and_then(|s| s.total.as_ref())
                .map_or(defaults::STREAMS_TOTAL, |v| v.value);
            model::Streams {
                // Only `total` given, and below the default per key: one key may use them all.
                per_key: given
                    .and_then(|s| s.per_key.as_ref())
                    .map_or(defaults::STREAMS_PER_KEY.min(total), |v| v.value),
                total,
                lifetime: given
                    .and_then(|s| s.lifetime.as_ref())
                    .map_or(defaults::STREAM_LIFETIME, |v| v.value),
            }
        },
        max_body,
        queues: served,
        behind_proxy: s.behind_proxy.as_ref().is_some_and(|b| b.value),
    })
}

/// The kv_cache that holds job status: the one a service names, else the only one; with
/// several and none named, none: the store keeps job status, which needs no decision (the user
/// names a cache with `status_cache` to keep it in one).
fn status_cache(app: &ast::Application, diags: &mut Diagnostics) -> Option<Name> {
    let named: Vec<_> = app
        .services
        .iter()
        .filter_map(|s| s.status_cache.as_ref())
        .collect();
    if let Some((first, rest)) = named.split_first() {
        for other in rest.iter().filter(|o| o.value != first.value) {
            diags.push(
                Diagnostic::error(
                    "ambiguous-wiring",
                    other.span,
                    "services name different status caches",
                )
                .with_related(first.span, "the first names this one")
                .with_help("job status lives in one kv_cache: name the same one in every service"),
            );
        }
        return Name::parse(&first.value).ok();
    }
    match app.kv_caches.as_slice() {
        [only] => name(&only.header),
        _ => None,
    }
}
