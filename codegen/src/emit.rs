//! The normalized model written back as a manifest: `raindrop inspect --format hcl`.
//!
//! Every default is spelled out and every inferred wire is written as the attribute that would
//! ask for it (`queue` on a worker task, `queues` on a service and a monitor, `status_cache` on
//! each service), so the output compiles to the same [`Application`] it was printed from. What
//! the model does not keep (comments, a bucket rule's `prefix`/`suffix`, the service an `env`
//! was declared in) is not printed. Built and formatted with hcl-rs.

use hcl::format::Format;
use hcl::{Block, Body, Expression};

use crate::model::{
    Alert, Application, Auth, DebounceMode, Domain, KvCache, LimitKey, Observer, ObserverRole,
    Queue, Service, Sink, SinkAuth, SinkFormat, Task, TaskRole, UniqueBy, UniqueState, Visibility,
};
use crate::name::Name;

/// The application as a manifest, every setting written out.
pub fn to_hcl(app: &Application) -> String {
    let mut application = Block::builder("application").add_label(app.name.as_str());
    if let Some(addr) = app.metrics_listen {
        application = application.add_attribute(("metrics_listen", addr.to_string()));
    }
    for s in &app.services {
        application = application.add_block(service(s, app.status_cache.as_ref()));
    }
    for q in &app.queues {
        application = application.add_block(queue(q));
    }
    for t in &app.tasks {
        application = application.add_block(task(t));
    }
    for c in &app.kv_caches {
        application = application.add_block(kv_cache(c));
    }
    for o in &app.observers {
        application = application.add_block(observer(o));
    }
    for e in &app.env {
        let mut env = Block::builder("env")
            .add_label(e.name.as_str())
            .add_attribute(("secret", e.secret));
        if let Some(default) = &e.default {
            env = env.add_attribute(("default", default.as_str()));
        }
        application = application.add_block(env.build());
    }
    for u in &app.unsupported {
        application = application.add_block(
            Block::builder(u.kind.as_str())
                .add_label(u.name.as_str())
                .build(),
        );
    }
    let body = Body::builder().add_block(application.build()).build();
    let mut formatter = hcl::format::Formatter::builder()
        .compact_arrays(true)
        .build_vec();
    // Formatting into memory cannot fail (hcl-rs fails only on I/O).
    let text = body.format_string(&mut formatter).unwrap_or_default();
    // hcl-rs writes an empty block body as `{  }`; a string cannot hold the newline after it.
    text.replace("{  }\n", "{}\n")
}

fn names(list: &[Name]) -> Expression {
    Expression::from(list.iter().map(Name::as_str).collect::<Vec<_>>())
}

fn service(s: &Service, status_cache: Option<&Name>) -> Block {
    let visibility = Visibility::ALL
        .iter()
        .find(|(_, v)| *v == s.visibility)
        .map_or("public", |(n, _)| n);
    let mut b = Block::builder("service")
        .add_label(s.name.as_str())
        .add_attribute(("listen", s.listen.to_string()))
        .add_attribute(("visibility", visibility))
        .add_attribute(("max_body", s.max_body.to_string()))
        .add_attribute(("queues", names(&s.queues)))
        .add_attribute(("behind_proxy", s.behind_proxy));
    b = match &s.auth {
        Auth::None => b.add_attribute(("auth", "none")),
        Auth::ApiKey { keys_env } => b
            .add_attribute(("auth", "api_key"))
            .add_attribute(("api_keys_env", keys_env.as_str())),
    };
    if let Some(cache) = status_cache {
        b = b.add_attribute(("status_cache", cache.as_str()));
    }
    if let Some(domain) = &s.domain {
        let (key, value) = match domain {
            Domain::Cname(v) => ("cname", v),
            Domain::Fqdn(v) => ("fqdn", v),
        };
        b = b.add_block(
            Block::builder("domain")
                .add_attribute((key, value.as_str()))
                .build(),
        );
    }
    if let Some(rate) = &s.rate_limit {
        b = b.add_block(
            Block::builder("rate_limit")
                .add_attribute(("requests", rate.requests))
                .add_attribute(("per", rate.per.to_string()))
                .add_attribute(("burst", rate.burst))
                .build(),
        );
    }
    if let Some(quota) = &s.quota {
        let mut q = Block::builder("quota");
        for (key, value) in [
            ("max_queued", quota.max_queued.map(Expression::from)),
            ("max_running", quota.max_running.map(Expression::from)),
            (
                "max_payload",
                quota.max_payload.map(|v| v.to_string().into()),
            ),
            ("min_priority", quota.min_priority.map(Expression::from)),
            ("max_priority", quota.max_priority.map(Expression::from)),
        ] {
            if let Some(value) = value {
                q = q.add_attribute((key, value));
            }
        }
        b = b.add_block(q.build());
    }
    b.add_block(
        Block::builder("streams")
            .add_attribute(("per_key", s.streams.per_key))
            .add_attribute(("total", s.streams.total))
            .add_attribute(("lifetime", s.streams.lifetime.to_string()))
            .build(),
    )
    .build()
}

fn queue(q: &Queue) -> Block {
    let mut b = Block::builder("queue")
        .add_label(q.name.as_str())
        .add_attribute(("max_attempts", q.max_attempts))
        .add_attribute(("visibility_timeout", q.visibility_timeout.to_string()))
        .add_attribute(("max_message_size", q.max_message_size.to_string()))
        .add_attribute(("max_snoozes", q.max_snoozes))
        .add_block(
            Block::builder("backoff")
                .add_attribute(("initial", q.backoff.initial.to_string()))
                .add_attribute(("max", q.backoff.max.to_string()))
                .add_attribute(("multiplier", q.backoff.multiplier))
                .add_attribute(("jitter", q.backoff.jitter))
                .build(),
        )
        .add_block(
            Block::builder("retention")
                .add_attribute(("succeeded", q.retention.succeeded.to_string()))
                .add_attribute(("failed", q.retention.failed.to_string()))
                .add_attribute(("dead", q.retention.dead.to_string()))
                .build(),
        );
    if let Some(rate) = &q.rate_limit {
        b = b.add_block(
            Block::builder("rate_limit")
                .add_attribute(("jobs", rate.jobs))
                .add_attribute(("per", rate.per.to_string()))
                .add_attribute(("burst", rate.burst))
                .build(),
        );
    }
    if let Some(limit) = &q.concurrency_limit {
        let mut c = Block::builder("concurrency_limit").add_attribute(("max", limit.max));
        if let Some(key) = &limit.key {
            c = c.add_attribute(("key", limit_key(key)));
        }
        b = b.add_block(c.build());
    }
    if let Some(unique) = &q.unique {
        let states: Vec<&str> = unique.states.iter().map(|s| unique_state(*s)).collect();
        let by: Vec<String> = unique
            .by
            .iter()
            .map(|part| match part {
                UniqueBy::Kind => "kind".to_owned(),
                UniqueBy::Payload => "payload".to_owned(),
                UniqueBy::PayloadField(field) => format!("payload.{field}"),
                UniqueBy::Header(name) => format!("header.{name}"),
            })
            .collect();
        b = b.add_block(
            Block::builder("unique")
                .add_attribute(("for", unique.window.to_string()))
                .add_attribute(("states", Expression::from(states)))
                .add_attribute(("by", Expression::from(by)))
                .build(),
        );
    }
    if let Some(debounce) = &q.debounce {
        let mode = match debounce.mode {
            DebounceMode::Trailing => "trailing",
            DebounceMode::Leading => "leading",
        };
        let mut d = Block::builder("debounce")
            .add_attribute(("key", limit_key(&debounce.key)))
            .add_attribute(("window", debounce.window.to_string()))
            .add_attribute(("mode", mode));
        if let Some(max_wait) = debounce.max_wait {
            d = d.add_attribute(("max_wait", max_wait.to_string()));
        }
        b = b.add_block(d.build());
    }
    b.build()
}

/// A `concurrency_limit` or `debounce` key as the manifest spells it.
fn limit_key(key: &LimitKey) -> String {
    match key {
        LimitKey::Header(name) => format!("header.{name}"),
        LimitKey::Payload(field) => format!("payload.{field}"),
    }
}

/// A `unique` state as the manifest spells it.
fn unique_state(state: UniqueState) -> &'static str {
    match state {
        UniqueState::Waiting => "waiting",
        UniqueState::Running => "running",
        UniqueState::Succeeded => "succeeded",
        UniqueState::Dead => "dead",
        UniqueState::Cancelled => "cancelled",
    }
}

fn task(t: &Task) -> Block {
    let b = Block::builder("task")
        .add_label(t.name.as_str())
        .add_attribute(("timeout", t.timeout.to_string()));
    match &t.role {
        TaskRole::Worker {
            queue,
            concurrency,
            autoscale,
        } => {
            let b = b.add_attribute(("queue", queue.as_str()));
            match autoscale {
                // With autoscale the pool starts at `min`; `concurrency` is not written.
                Some(a) => b.add_block(
                    Block::builder("autoscale")
                        .add_attribute(("min", a.min))
                        .add_attribute(("max", a.max))
                        .add_attribute(("target_wait", a.target_wait.to_string()))
                        .build(),
                ),
                None => b.add_attribute(("concurrency", *concurrency)),
            }
        }
        TaskRole::Cron {
            schedule,
            max_attempts,
        } => b
            .add_attribute(("cron", schedule.as_str()))
            .add_attribute(("max_attempts", *max_attempts)),
    }
    .build()
}

fn kv_cache(c: &KvCache) -> Block {
    let mut b = Block::builder("kv_cache").add_label(c.name.as_str());
    if let Some(ttl) = c.ttl {
        b = b.add_attribute(("ttl", ttl.to_string()));
    }
    b.build()
}

fn observer(o: &Observer) -> Block {
    let b = Block::builder("observer").add_label(o.name.as_str());
    match &o.role {
        ObserverRole::Monitor {
            queues,
            alerts,
            sinks,
        } => {
            let mut b = b.add_attribute(("queues", names(queues)));
            for a in alerts {
                b = b.add_block(alert(a));
            }
            for s in sinks {
                b = b.add_block(sink(s));
            }
            b
        }
        ObserverRole::Consumer { queue, batch_size } => b.add_block(
            Block::builder("source")
                .add_attribute(("queue", queue.as_str()))
                .add_attribute(("batch_size", *batch_size))
                .build(),
        ),
        ObserverRole::Bucket { bucket, actions } => {
            let actions: Vec<&str> = actions
                .iter()
                .filter_map(|a| {
                    crate::model::BucketAction::ALL
                        .iter()
                        .find(|(_, v)| v == a)
                        .map(|(n, _)| *n)
                })
                .collect();
            let mut source = Block::builder("source").add_attribute(("bucket", bucket.as_str()));
            if !actions.is_empty() {
                source = source.add_block(
                    Block::builder("rule")
                        .add_attribute(("actions", actions))
                        .build(),
                );
            }
            b.add_block(source.build())
        }
    }
    .build()
}

fn alert(a: &Alert) -> Block {
    let mut b = Block::builder("alert")
        .add_label(a.name.as_str())
        .add_attribute(("metric", a.metric.as_str()))
        .add_attribute(("comparison", a.comparison.as_str()))
        .add_attribute(("threshold", a.threshold))
        .add_attribute(("window", a.window.to_string()));
    if let Some(pending) = a.pending_for {
        b = b.add_attribute(("for", pending.to_string()));
    }
    b.add_attribute(("severity", a.severity.as_str())).build()
}

fn sink(s: &Sink) -> Block {
    let format = SinkFormat::ALL
        .iter()
        .find(|(_, f)| *f == s.format)
        .map_or("json", |(n, _)| n);
    let auth = SinkAuth::ALL
        .iter()
        .find(|(_, a)| *a == s.auth)
        .map_or("bearer", |(n, _)| n);
    let mut b = Block::builder("sink")
        .add_label(s.name.as_str())
        .add_attribute(("url", s.url.as_str()))
        .add_attribute(("format", format));
    if let Some(secret) = &s.secret_env {
        b = b.add_attribute(("secret_env", secret.as_str()));
    }
    // `auth` is a `json` sink's setting only; the others refuse it.
    if s.format == SinkFormat::Json {
        b = b.add_attribute(("auth", auth));
    }
    b.build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SourceFile, compile};

    fn round_trip(manifest: &str) -> (Application, String) {
        let source = SourceFile::new("raindrop.manifest", manifest);
        let compiled = compile(&source);
        let Some(app) = compiled.application else {
            panic!(
                "{}",
                crate::diagnostic::render(&source, &compiled.diagnostics, crate::Style::Plain)
            );
        };
        (app.clone(), to_hcl(&app))
    }

    #[test]
    fn the_seed_prints_every_default_and_its_wiring() {
        let (_, hcl) = round_trip(
            r#"application "seed" {
                 service "api" {}
                 queue "jobs" {}
                 task "worker" {}
                 kv_cache "status" {}
                 observer "monitor" {}
               }"#,
        );
        for line in [
            "listen = \"127.0.0.1:8080\"",
            "max_attempts = 5",
            "queue = \"jobs\"",
            "concurrency = 10",
            "status_cache = \"status\"",
            "queues = [\"jobs\"]",
            "multiplier = 2",
            "max_snoozes = 100",
        ] {
            assert!(hcl.contains(line), "`{line}` missing from:\n{hcl}");
        }
    }

    #[test]
    fn a_unique_block_prints_its_defaults_and_no_block_prints_nothing() {
        let (_, hcl) = round_trip(
            r#"application "demo" {
                 queue "reports" {
                   unique {}
                 }
                 queue "jobs" {}
                 task "reporter" { queue = "reports" }
                 task "worker" { queue = "jobs" }
               }"#,
        );
        for line in [
            "for = \"0s\"",
            "states = [\"waiting\", \"running\"]",
            "by = [\"kind\", \"payload\"]",
        ] {
            assert!(hcl.contains(line), "`{line}` missing from:\n{hcl}");
        }
        assert_eq!(hcl.matches("unique {").count(), 1, "{hcl}");
    }

    #[test]
    fn a_debounce_block_prints_its_default_mode_and_no_block_prints_nothing() {
        let (_, hcl) = round_trip(
            r#"application "demo" {
                 queue "refresh" {
                   debounce {
                     key    = "payload.account"
                     window = "2s"
                   }
                 }
                 queue "jobs" {}
                 task "refresher" { queue = "refresh" }
                 task "worker" { queue = "jobs" }
               }"#,
        );
        for line in [
            "key = \"payload.account\"",
            "window = \"2s\"",
            "mode = \"trailing\"",
        ] {
            assert!(hcl.contains(line), "`{line}` missing from:\n{hcl}");
        }
        assert!(!hcl.contains("max_wait"), "{hcl}");
        assert_eq!(hcl.matches("debounce {").count(), 1, "{hcl}");
    }

    #[test]
    fn what_it_prints_compiles_to_the_same_application() {
        let (app, hcl) = round_trip(
            r#"application "demo" {
                 metrics_listen = "127.0.0.1:9500"
                 service "api" {
                   auth = "api_key"
                   rate_limit { requests = 5 }
                   quota { max_payload = "64KiB" }
                   domain { fqdn = "api.example.com" }
                 }
                 queue "jobs" {
                   backoff { jitter = 0.35 }
                   max_snoozes = 0
                   rate_limit {
                     jobs = 10
                     per  = "1m 30s"
                   }
                   concurrency_limit {
                     max = 2
                     key = "header.X-Customer_id"
                   }
                 }
                 queue "calls" {
                   rate_limit {
                     jobs  = 3
                     per   = "1500us"
                     burst = 1
                   }
                   concurrency_limit { max = 1 }
                 }
                 queue "events" {
                   concurrency_limit {
                     max = 4
                     key = "payload.account id"
                   }
                 }
                 queue "reports" {
                   unique {}
                 }
                 queue "exports" {
                   unique {
                     for    = "30d"
                     states = ["succeeded", "waiting", "dead", "cancelled", "running"]
                     by     = ["header.X-Tenant_id", "payload.account id", "kind"]
                   }
                 }
                 queue "refresh" {
                   debounce {
                     key      = "header.X-Account_id"
                     window   = "1500ms"
                     max_wait = "1m 30s"
                   }
                 }
                 queue "pings" {
                   debounce {
                     key    = "payload.device id"
                     window = "1d"
                     mode   = "leading"
                   }
                 }
                 task "worker" {
                   queue = "jobs"
                   autoscale { max = 40 }
                 }
                 task "caller" { queue = "calls" }
                 task "handler" { queue = "events" }
                 task "reporter" { queue = "reports" }
                 task "exporter" { queue = "exports" }
                 task "refresher" { queue = "refresh" }
                 task "pinger" { queue = "pings" }
                 task "nightly" { cron = "0 2 * * *" }
                 observer "monitor" {
                   alert "backlog" {
                     metric    = "queue_depth"
                     threshold = 1.5
                     for       = "90s"
                   }
                   sink "ops" {
                     url        = "http://relay:9000/x"
                     format     = "slack"
                     secret_env = "HOOK"
                   }
                 }
                 env "HOOK" { secret = true }
                 actor "counter" {}
               }"#,
        );
        let printed = SourceFile::new("inspect.hcl", hcl.clone());
        let again = compile(&printed);
        let rendered = crate::diagnostic::render(&printed, &again.diagnostics, crate::Style::Plain);
        assert!(!again.has_errors(), "{hcl}\n{rendered}");
        assert_eq!(again.application.as_ref(), Some(&app), "{hcl}");
    }
}
