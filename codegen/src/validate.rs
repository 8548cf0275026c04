//! Rules across blocks: names, duplicates, identifier collisions, references and the settings that
//! only make sense together. Wiring (who pulls which queue) is checked in `normalize`.

use std::collections::HashMap;

use crate::ast;
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::model::{DebounceMode, SinkFormat};
use crate::name::{Name, check_env_name, rust_ident};
use crate::source::{Span, Spanned};
use crate::suggest::did_you_mean;

/// Checks `app` and records every problem in `diags`.
pub fn validate(app: &ast::Application, diags: &mut Diagnostics) {
    check_names(app, diags);
    check_references(app, diags);
    check_tasks(app, diags);
    check_observers(app, diags);
    check_envs(app, diags);
    check_queues(app, diags);
    check_autoscale(app, diags);
    check_sinks(app, diags);
}

fn headers(app: &ast::Application) -> impl Iterator<Item = &ast::Header> {
    let services = app.services.iter().map(|b| &b.header);
    let queues = app.queues.iter().map(|b| &b.header);
    let tasks = app.tasks.iter().map(|b| &b.header);
    let caches = app.kv_caches.iter().map(|b| &b.header);
    let observers = app.observers.iter().map(|b| &b.header);
    let unsupported = app.unsupported.iter().map(|b| &b.header);
    std::iter::once(&app.header)
        .chain(services)
        .chain(queues)
        .chain(tasks)
        .chain(caches)
        .chain(observers)
        .chain(unsupported)
}

fn check_names(app: &ast::Application, diags: &mut Diagnostics) {
    check_name_syntax(app, diags);
    check_duplicates(app, diags);
    check_identifiers(app, diags);
}

/// Each block name is a valid name, and each env name a valid variable name.
fn check_name_syntax(app: &ast::Application, diags: &mut Diagnostics) {
    for header in headers(app) {
        if let Err(err) = Name::parse(&header.name.value) {
            diags.push(
                Diagnostic::error(
                    "invalid-name",
                    header.name.span,
                    format!(
                        "invalid {} name `{}`: {}",
                        header.kind, header.name.value, err.reason
                    ),
                )
                .with_help(match err.suggestion {
                    Some(s) => format!("names are lowercase kebab-case or snake_case, e.g. `{s}`"),
                    None => "names are lowercase kebab-case or snake_case, e.g. `job-queue`".into(),
                }),
            );
        }
    }
    for env in &app.envs {
        if let Err(err) = check_env_name(&env.header.name.value) {
            diags.push(
                Diagnostic::error(
                    "invalid-name",
                    env.header.name.span,
                    format!(
                        "invalid env name `{}`: {}",
                        env.header.name.value, err.reason
                    ),
                )
                .with_help_opt(err.suggestion.map(|s| format!("write `{s}`"))),
            );
        }
    }
}

/// Duplicates within a kind: the same label twice.
fn check_duplicates(app: &ast::Application, diags: &mut Diagnostics) {
    let mut by_kind: HashMap<&str, HashMap<&str, Span>> = HashMap::new();
    for header in headers(app)
        .skip(1)
        .chain(app.envs.iter().map(|e| &e.header))
    {
        let seen = by_kind.entry(header.kind).or_default();
        match seen.get(header.name.value.as_str()) {
            Some(&first) => diags.push(
                Diagnostic::error(
                    "duplicate-name",
                    header.name.span,
                    format!("{} `{}` is declared twice", header.kind, header.name.value),
                )
                .with_label("declared again here")
                .with_related(first, "first declared here")
                .with_help(format!(
                    "rename one of them; names are unique among {} blocks",
                    header.kind
                )),
            ),
            None => {
                seen.insert(&header.name.value, header.name.span);
            }
        }
    }
}

/// Different names, one Rust identifier. Resources and env values share the `Env` struct;
/// handler kinds each have their own namespace.
fn check_identifiers(app: &ast::Application, diags: &mut Diagnostics) {
    let bindings = app
        .queues
        .iter()
        .map(|b| &b.header)
        .chain(app.kv_caches.iter().map(|b| &b.header))
        .chain(app.envs.iter().map(|b| &b.header));
    check_collisions(bindings, "a field of `Env`", diags);
    for (kind, namespace) in [
        (
            "task",
            app.tasks.iter().map(|b| &b.header).collect::<Vec<_>>(),
        ),
        (
            "observer",
            app.observers.iter().map(|b| &b.header).collect(),
        ),
        ("service", app.services.iter().map(|b| &b.header).collect()),
    ] {
        check_collisions(
            namespace.into_iter(),
            &format!("the {kind} handler name"),
            diags,
        );
    }
}

fn check_collisions<'a>(
    headers: impl Iterator<Item = &'a ast::Header>,
    what: &str,
    diags: &mut Diagnostics,
) {
    let mut seen: HashMap<String, &ast::Header> = HashMap::new();
    for header in headers {
        let ident = rust_ident(&header.name.value);
        match seen.get(&ident) {
            // Same kind and same label is a duplicate, reported above.
            Some(first) if first.kind == header.kind && first.name.value == header.name.value => {}
            Some(first) => diags.push(
                Diagnostic::error(
                    "identifier-collision",
                    header.name.span,
                    format!(
                        "{} `{}` and {} `{}` both become `{ident}`, {what}",
                        header.kind, header.name.value, first.kind, first.name.value
                    ),
                )
                .with_related(first.name.span, "also maps to that identifier")
                .with_help("rename one of them; `-` and `_` map to the same identifier"),
            ),
            None => {
                seen.insert(ident, header);
            }
        }
    }
}

/// Reports a name that does not refer to a declared block of the expected kind.
fn check_reference(
    diags: &mut Diagnostics,
    reference: &Spanned<String>,
    what: &str,
    declared: &[&str],
    help_declare: &str,
) {
    if declared.contains(&reference.value.as_str()) {
        return;
    }
    let help = did_you_mean(&reference.value, declared.iter().copied())
        .unwrap_or_else(|| help_declare.replace("NAME", &reference.value));
    diags.push(
        Diagnostic::error(
            "undeclared-reference",
            reference.span,
            format!("no {what} named `{}` is declared", reference.value),
        )
        .with_help(help),
    );
}

fn check_references(app: &ast::Application, diags: &mut Diagnostics) {
    let queues: Vec<&str> = app
        .queues
        .iter()
        .map(|q| q.header.name.value.as_str())
        .collect();
    let caches: Vec<&str> = app
        .kv_caches
        .iter()
        .map(|c| c.header.name.value.as_str())
        .collect();
    let buckets: Vec<&str> = app
        .unsupported
        .iter()
        .filter(|b| matches!(b.header.kind, "bucket" | "smartbucket"))
        .map(|b| b.header.name.value.as_str())
        .collect();
    let declare_queue = "declare it with `queue \"NAME\" {}`";
    for task in &app.tasks {
        if let Some(queue) = &task.queue {
            check_reference(diags, queue, "queue", &queues, declare_queue);
        }
    }
    for service in &app.services {
        for queue in service.queues.iter().flatten() {
            check_reference(diags, queue, "queue", &queues, declare_queue);
        }
        if let Some(cache) = &service.status_cache {
            check_reference(
                diags,
                cache,
                "kv_cache",
                &caches,
                "declare it with `kv_cache \"NAME\" {}`",
            );
        }
    }
    for observer in &app.observers {
        for queue in observer.queues.iter().flatten() {
            check_reference(diags, queue, "queue", &queues, declare_queue);
        }
        if let Some(source) = &observer.source {
            if let Some(queue) = &source.queue {
                check_reference(diags, queue, "queue", &queues, declare_queue);
            }
            if let Some(bucket) = &source.bucket {
                check_reference(
                    diags,
                    bucket,
                    "bucket or smartbucket",
                    &buckets,
                    "declare it with `bucket \"NAME\" {}` or `smartbucket \"NAME\" {}`",
                );
            }
        }
    }
}

fn check_tasks(app: &ast::Application, diags: &mut Diagnostics) {
    for task in &app.tasks {
        let name = &task.header.name.value;
        match (&task.cron, task.cron_type) {
            (None, Some(type_span)) => diags.push(
                Diagnostic::error(
                    "missing-attribute",
                    type_span,
                    format!("cron task `{name}` has no `cron` schedule"),
                )
                .with_help("add e.g. `cron = \"0 2 * * *\"` (5 fields, UTC)"),
            ),
            (Some(cron), _) => {
                let misplaced = [
                    (
                        "queue",
                        task.queue.as_ref().map(|q| q.span),
                        "a cron task runs on its schedule and pulls no queue",
                    ),
                    (
                        "concurrency",
                        task.concurrency.as_ref().map(|c| c.span),
                        "a cron task runs once per tick; `concurrency` is for worker tasks",
                    ),
                ];
                for (key, span, why) in misplaced {
                    if let Some(span) = span {
                        diags.push(
                            Diagnostic::error(
                                "conflicting-settings",
                                span,
                                format!("`{key}` on cron task `{name}`: {why}"),
                            )
                            .with_related(cron.span, "scheduled here")
                            .with_help(format!(
                                "remove `{key}`, or remove `cron` to make it a worker"
                            )),
                        );
                    }
                }
            }
            (None, None) => {
                if let Some(max) = &task.max_attempts {
                    let queue = task
                        .queue
                        .as_ref()
                        .map_or("the queue".to_owned(), |q| format!("queue `{}`", q.value));
                    diags.push(
                        Diagnostic::error(
                            "conflicting-settings",
                            max.span,
                            format!("`max_attempts` on worker task `{name}`: a job's attempts are set by its queue"),
                        )
                        .with_help(format!("move `max_attempts` to {queue}")),
                    );
                }
            }
        }
    }
}

fn check_observers(app: &ast::Application, diags: &mut Diagnostics) {
    for observer in &app.observers {
        let name = &observer.header.name.value;
        let Some(source) = &observer.source else {
            continue;
        };
        match (&source.queue, &source.bucket) {
            (Some(_), Some(bucket)) => diags.push(
                Diagnostic::error("source-exclusive", bucket.span, format!("the source of observer `{name}` names both a queue and a bucket"))
                    .with_help("an observer consumes one source: keep `queue` or `bucket`, and split the other into its own observer"),
            ),
            (None, None) => diags.push(
                Diagnostic::error("source-exclusive", source.span, format!("the source of observer `{name}` names neither a queue nor a bucket"))
                    .with_help("add `queue = \"…\"` to consume a queue, or remove `source` to make a monitor"),
            ),
            (Some(queue), None) if !source.actions.is_empty() => diags.push(
                Diagnostic::error("conflicting-settings", queue.span, format!("observer `{name}` has bucket `rule`s but a queue source"))
                    .with_help("`rule { actions }` applies to bucket sources only"),
            ),
            _ => {}
        }
        if let Some(queues) = observer.queues.as_ref().and_then(|q| q.first()) {
            diags.push(
                Diagnostic::error("conflicting-settings", queues.span, format!("observer `{name}` has a `source` and monitors `queues`"))
                    .with_related(source.span, "consumes this source")
                    .with_help("an observer is either a consumer (`source`) or a monitor (`queues`); split it in two"),
            );
        }
        if let Some(sink) = observer.sinks.first() {
            diags.push(
                Diagnostic::error(
                    "conflicting-settings",
                    sink.span,
                    format!("observer `{name}` has a `source` and alert sinks"),
                )
                .with_help("sinks belong to monitor observers (without `source`)"),
            );
        }
        if let Some(alert) = observer.alerts.first() {
            diags.push(
                Diagnostic::error(
                    "conflicting-settings",
                    alert.span,
                    format!("observer `{name}` has a `source` and alert rules"),
                )
                .with_help("alerts belong to monitor observers (without `source`)"),
            );
        }
    }
}

fn check_envs(app: &ast::Application, diags: &mut Diagnostics) {
    for env in &app.envs {
        let secret = env.secret.as_ref().is_some_and(|s| s.value);
        if let (true, Some(default)) = (secret, &env.default) {
            diags.push(
                Diagnostic::error(
                    "secret-with-default",
                    default.span,
                    format!("secret env `{}` has a default value", env.header.name.value),
                )
                .with_help("a secret is supplied at run time, never written in the manifest: remove `default`"),
            );
        }
    }
    for service in &app.services {
        let Some(keys_env) = &service.api_keys_env else {
            continue;
        };
        if let Some(env) = app
            .envs
            .iter()
            .find(|e| e.header.name.value == keys_env.value)
            && !env.secret.as_ref().is_some_and(|s| s.value)
        {
            {
                diags.push(
                    Diagnostic::error(
                        "conflicting-settings",
                        env.header.name.span,
                        format!("env `{}` holds API keys but is not secret", keys_env.value),
                    )
                    .with_related(keys_env.span, "named as the API key source here")
                    .with_help("add `secret = true` so the keys are never logged or shown"),
                );
            }
        }
    }
}

fn check_queues(app: &ast::Application, diags: &mut Diagnostics) {
    for queue in &app.queues {
        check_debounce(queue, diags);
        let Some(backoff) = &queue.backoff else {
            continue;
        };
        if let (Some(initial), Some(max)) = (&backoff.initial, &backoff.max)
            && initial.value > max.value
        {
            {
                diags.push(
                    Diagnostic::error(
                        "conflicting-settings",
                        initial.span,
                        format!(
                            "backoff of queue `{}` starts above its maximum",
                            queue.header.name.value
                        ),
                    )
                    .with_related(max.span, "maximum")
                    .with_help("`initial` must not exceed `max`"),
                );
            }
        }
    }
}

/// A queue's `debounce`: `max_wait` only with a trailing debounce, and no shorter than `window`;
/// and not beside `unique`.
fn check_debounce(queue: &ast::Queue, diags: &mut Diagnostics) {
    let Some(debounce) = &queue.debounce else {
        return;
    };
    let name = &queue.header.name.value;
    if let Some(unique) = &queue.unique {
        diags.push(
            Diagnostic::error(
                "conflicting-settings",
                debounce.span,
                format!("queue `{name}` has both `debounce` and `unique`: a job could be dropped by one and merged by the other"),
            )
            .with_related(unique.span, "unique here")
            .with_help("keep one: `debounce` collapses the jobs sent in a burst, `unique` merges a job into one already there"),
        );
    }
    let Some(max_wait) = &debounce.max_wait else {
        return;
    };
    match (&debounce.mode, &debounce.window) {
        (Some(mode), _) if mode.value == DebounceMode::Leading => diags.push(
            Diagnostic::error(
                "conflicting-settings",
                max_wait.span,
                format!("debounce of queue `{name}` is leading: `max_wait` applies to trailing debounce only"),
            )
            .with_related(mode.span, "leading here")
            .with_help("remove `max_wait` (a leading debounce runs the first job of a burst at once), or set `mode = \"trailing\"`"),
        ),
        (_, Some(window)) if max_wait.value < window.value => diags.push(
            Diagnostic::error(
                "conflicting-settings",
                max_wait.span,
                format!("debounce of queue `{name}` has `max_wait` below `window`"),
            )
            .with_related(window.span, "window")
            .with_help("`max_wait` must be at least `window`"),
        ),
        _ => {}
    }
}

fn check_autoscale(app: &ast::Application, diags: &mut Diagnostics) {
    for task in &app.tasks {
        let Some(autoscale) = &task.autoscale else {
            continue;
        };
        let name = &task.header.name.value;
        if let Some(cron) = &task.cron {
            diags.push(
                Diagnostic::error(
                    "conflicting-settings",
                    autoscale.span,
                    format!("cron task `{name}` has `autoscale`"),
                )
                .with_related(cron.span, "runs on this schedule")
                .with_help("a cron task runs once per tick; `autoscale` is for worker tasks"),
            );
        }
        if let Some(concurrency) = &task.concurrency {
            diags.push(
                Diagnostic::error(
                    "conflicting-settings",
                    concurrency.span,
                    format!("task `{name}` sets both `concurrency` and `autoscale`"),
                )
                .with_related(autoscale.span, "autoscale sets the concurrency")
                .with_help("remove `concurrency`: with `autoscale` the pool runs between `min` and `max` jobs at once"),
            );
        }
        if let (Some(min), Some(max)) = (&autoscale.min, &autoscale.max)
            && min.value > max.value
        {
            diags.push(
                Diagnostic::error(
                    "conflicting-settings",
                    min.span,
                    format!("autoscale of task `{name}` has `min` above `max`"),
                )
                .with_related(max.span, "maximum")
                .with_help("`min` must not exceed `max`"),
            );
        }
    }
}

fn check_sinks(app: &ast::Application, diags: &mut Diagnostics) {
    let envs: Vec<&str> = app
        .envs
        .iter()
        .map(|e| e.header.name.value.as_str())
        .collect();
    for observer in &app.observers {
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for sink in &observer.sinks {
            let name = &sink.name.value;
            if let Some(&first) = seen.get(name.as_str()) {
                diags.push(
                    Diagnostic::error(
                        "duplicate-name",
                        sink.name.span,
                        format!(
                            "sink `{name}` is declared twice in observer `{}`",
                            observer.header.name.value
                        ),
                    )
                    .with_related(first, "first declared here")
                    .with_help("rename one of them"),
                );
            }
            seen.insert(name, sink.name.span);
            let format = sink.format.as_ref().map(|f| f.value).unwrap_or_default();
            match &sink.secret_env {
                Some(env_name) => {
                    check_reference(
                        diags,
                        env_name,
                        "env",
                        &envs,
                        "declare it with `env \"NAME\" { secret = true }`",
                    );
                    if let Some(env) = app
                        .envs
                        .iter()
                        .find(|e| e.header.name.value == env_name.value)
                        && !env.secret.as_ref().is_some_and(|s| s.value)
                    {
                        diags.push(
                            Diagnostic::error(
                                "conflicting-settings",
                                env.header.name.span,
                                format!("env `{}` holds the secret of sink `{name}` but is not secret", env_name.value),
                            )
                            .with_related(env_name.span, "named as the sink's secret here")
                            .with_help("add `secret = true` so the secret is never logged or shown"),
                        );
                    }
                }
                None if format == SinkFormat::Pagerduty => diags.push(
                    Diagnostic::error(
                        "missing-attribute",
                        sink.span,
                        format!("pagerduty sink `{name}` needs `secret_env`"),
                    )
                    .with_help("name the secret env holding the PagerDuty integration's routing key, e.g. `secret_env = \"PAGERDUTY_ROUTING_KEY\"`"),
                ),
                None => {}
            }
            if let Some(auth) = &sink.auth {
                if format != SinkFormat::Json {
                    diags.push(
                        Diagnostic::error(
                            "conflicting-settings",
                            auth.span,
                            format!("sink `{name}` sets `auth` but is not a `json` sink"),
                        )
                        .with_help("`auth` says how a `json` sink sends its secret; slack sinks carry theirs in the url, pagerduty sinks in the body"),
                    );
                } else if sink.secret_env.is_none() {
                    diags.push(
                        Diagnostic::error(
                            "missing-attribute",
                            auth.span,
                            format!("sink `{name}` sets `auth` but has no `secret_env`"),
                        )
                        .with_help("add `secret_env = \"NAME\"` naming a secret env"),
                    );
                }
            }
        }
    }
}
