//! A Mermaid flowchart of an application: client → service → queue → workers → kv cache,
//! observers and dead letters, cron schedules.

use std::fmt::Write;

use crate::model::{Application, ObserverRole, TaskRole};
use crate::name::rust_ident;

/// The application as a Mermaid `flowchart LR`.
pub fn mermaid(app: &Application) -> String {
    let id = |prefix: &str, name: &str| format!("{prefix}_{}", rust_ident(name));
    let mut out = String::from("flowchart LR\n");
    let mut line = |text: String| {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "    {text}");
    };
    line(format!("%% application {}", app.name));
    if !app.services.is_empty() {
        line("client([Client])".into());
    }
    for service in &app.services {
        let s = id("service", service.name.as_str());
        line(format!(
            "{s}[\"service {}<br/>{}\"]",
            service.name, service.listen
        ));
        line(format!("client -->|HTTP /v1/jobs| {s}"));
        for queue in &service.queues {
            line(format!("{s} -->|enqueue| {}", id("queue", queue.as_str())));
        }
        if let Some(cache) = &app.status_cache {
            line(format!(
                "{s} -.->|status, results| {}",
                id("kv", cache.as_str())
            ));
        }
    }
    for queue in &app.queues {
        let q = id("queue", queue.name.as_str());
        line(format!("{q}[[\"queue {}\"]]", queue.name));
        line(format!(
            "{}[(\"dead letters {}\")]",
            id("dlq", queue.name.as_str()),
            queue.name
        ));
    }
    for cache in &app.kv_caches {
        line(format!(
            "{}[(\"kv_cache {}\")]",
            id("kv", cache.name.as_str()),
            cache.name
        ));
    }
    for task in &app.tasks {
        let t = id("task", task.name.as_str());
        match &task.role {
            TaskRole::Worker { queue, concurrency } => {
                line(format!(
                    "{t}[\"task {}<br/>{concurrency} workers\"]",
                    task.name
                ));
                line(format!("{} -->|pull| {t}", id("queue", queue.as_str())));
                if let Some(cache) = &app.status_cache {
                    line(format!(
                        "{t} -->|status, results| {}",
                        id("kv", cache.as_str())
                    ));
                }
            }
            TaskRole::Cron { schedule, .. } => {
                let clock = id("cron", task.name.as_str());
                line(format!("{clock}((\"cron {schedule}\"))"));
                line(format!("{t}[\"task {}\"]", task.name));
                line(format!("{clock} -->|tick| {t}"));
            }
        }
    }
    for observer in &app.observers {
        let o = id("observer", observer.name.as_str());
        match &observer.role {
            ObserverRole::Monitor { queues, .. } => {
                line(format!(
                    "{o}{{{{\"observer {}<br/>monitor\"}}}}",
                    observer.name
                ));
                for queue in queues {
                    line(format!(
                        "{o} -.->|watches, recovers| {}",
                        id("queue", queue.as_str())
                    ));
                    line(format!("{o} -->|exhausted| {}", id("dlq", queue.as_str())));
                }
            }
            ObserverRole::Consumer { queue, batch_size } => {
                line(format!(
                    "{o}[\"observer {}<br/>batches of {batch_size}\"]",
                    observer.name
                ));
                line(format!("{} -->|consume| {o}", id("queue", queue.as_str())));
            }
            ObserverRole::Bucket { bucket, .. } => {
                line(format!("{o}[\"observer {}<br/>not run\"]", observer.name));
                line(format!(
                    "bucket_{}[(\"bucket {bucket}\")] -.-> {o}",
                    rust_ident(bucket.as_str())
                ));
            }
        }
    }
    out
}
