//! A Mermaid flowchart of an application: client → service → queue → workers → kv cache,
//! observers and dead letters, cron schedules.

use std::fmt::Write;

use crate::model::{Application, Observer, ObserverRole, Service, Task, TaskRole};
use crate::name::rust_ident;

/// The application as a Mermaid `flowchart LR`.
pub fn mermaid(app: &Application) -> String {
    let mut chart = Chart(String::from("flowchart LR\n"));
    chart.line(format!("%% application {}", app.name));
    if !app.services.is_empty() {
        chart.line("client([Client])".into());
    }
    for service in &app.services {
        chart.service(app, service);
    }
    for queue in &app.queues {
        let q = id("queue", queue.name.as_str());
        chart.line(format!("{q}[[\"queue {}\"]]", queue.name));
        chart.line(format!(
            "{}[(\"dead letters {}\")]",
            id("dlq", queue.name.as_str()),
            queue.name
        ));
    }
    for cache in &app.kv_caches {
        chart.line(format!(
            "{}[(\"kv_cache {}\")]",
            id("kv", cache.name.as_str()),
            cache.name
        ));
    }
    for task in &app.tasks {
        chart.task(app, task);
    }
    for observer in &app.observers {
        chart.observer(observer);
    }
    chart.0
}

/// The node id of the block `name` of a kind (`prefix`).
fn id(prefix: &str, name: &str) -> String {
    format!("{prefix}_{}", rust_ident(name))
}

/// The flowchart being written, one line at a time.
struct Chart(String);

impl Chart {
    fn line(&mut self, text: String) {
        // Writing to a String cannot fail.
        let _ = writeln!(self.0, "    {text}");
    }

    /// A service, what it enqueues and the status cache it reads.
    fn service(&mut self, app: &Application, service: &Service) {
        let s = id("service", service.name.as_str());
        self.line(format!(
            "{s}[\"service {}<br/>{}\"]",
            service.name, service.listen
        ));
        self.line(format!("client -->|HTTP /v1/jobs| {s}"));
        for queue in &service.queues {
            self.line(format!("{s} -->|enqueue| {}", id("queue", queue.as_str())));
        }
        if let Some(cache) = &app.status_cache {
            self.line(format!(
                "{s} -.->|status, results| {}",
                id("kv", cache.as_str())
            ));
        }
    }

    /// A worker task and the queue it pulls, or a cron task and its clock.
    fn task(&mut self, app: &Application, task: &Task) {
        let t = id("task", task.name.as_str());
        match &task.role {
            TaskRole::Worker {
                queue, concurrency, ..
            } => {
                self.line(format!(
                    "{t}[\"task {}<br/>{concurrency} workers\"]",
                    task.name
                ));
                self.line(format!("{} -->|pull| {t}", id("queue", queue.as_str())));
                if let Some(cache) = &app.status_cache {
                    self.line(format!(
                        "{t} -->|status, results| {}",
                        id("kv", cache.as_str())
                    ));
                }
            }
            TaskRole::Cron { schedule, .. } => {
                let clock = id("cron", task.name.as_str());
                self.line(format!("{clock}((\"cron {schedule}\"))"));
                self.line(format!("{t}[\"task {}\"]", task.name));
                self.line(format!("{clock} -->|tick| {t}"));
            }
        }
    }

    /// An observer and what it watches, consumes or would listen to.
    fn observer(&mut self, observer: &Observer) {
        let o = id("observer", observer.name.as_str());
        match &observer.role {
            ObserverRole::Monitor { queues, .. } => {
                self.line(format!(
                    "{o}{{{{\"observer {}<br/>monitor\"}}}}",
                    observer.name
                ));
                for queue in queues {
                    self.line(format!(
                        "{o} -.->|watches, recovers| {}",
                        id("queue", queue.as_str())
                    ));
                    self.line(format!("{o} -->|exhausted| {}", id("dlq", queue.as_str())));
                }
            }
            ObserverRole::Consumer { queue, batch_size } => {
                self.line(format!(
                    "{o}[\"observer {}<br/>batches of {batch_size}\"]",
                    observer.name
                ));
                self.line(format!("{} -->|consume| {o}", id("queue", queue.as_str())));
            }
            ObserverRole::Bucket { bucket, .. } => {
                self.line(format!("{o}[\"observer {}<br/>not run\"]", observer.name));
                self.line(format!(
                    "bucket_{}[(\"bucket {bucket}\")] -.-> {o}",
                    rust_ident(bucket.as_str())
                ));
            }
        }
    }
}
