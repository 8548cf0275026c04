//! The seed application: background job processing declared in `raindrop.manifest`.
//!
//! `cargo run` starts the job API on 127.0.0.1:8080, the `job_worker` pool and the
//! `job_monitor` observer against an SQLite file under `.raindrop/`. `--role
//! service|worker|observer|scheduler` splits them over processes that share one store; `--help`
//! lists every flag.

mod work;

use std::sync::Arc;

use raindrop::event::EventKind;
use raindrop::prelude::*;

raindrop::app!();

/// `job_monitor`: says what people on call want to know about. (Recovery, retention, metrics and
/// alert rules run whether or not a monitor has a handler.)
#[raindrop::observer]
async fn job_monitor(event: Event) {
    if event.kind == EventKind::DeadLettered {
        tracing::warn!(job.id = %event.job, queue = %event.queue, error = event.detail.as_deref().unwrap_or(""), "job dead-lettered");
    }
}

/// `job_api`: submissions to `job_queue` are checked field by field before they are queued,
/// and each job's kind is its `type` (`report`, `notify`, `flaky`, `sleep`).
#[raindrop::service]
fn job_api(service: Service) -> Service {
    service
        .validate("job_queue", Arc::new(work::validate))
        .kind_from("job_queue", "type")
}

#[raindrop::main]
fn main() {}
