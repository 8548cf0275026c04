//! Two queues with their own retry policies, and two worker pools of different concurrency.
//! Priorities order the jobs within a queue.
//!
//! ```sh
//! cargo run -p example-multi-queue
//! curl -s -X POST localhost:8080/v1/jobs \
//!      -d '{"queue": "emails", "priority": 10, "payload": {"to": "ada@example.com", "subject": "urgent"}}'
//! curl -s -X POST localhost:8080/v1/jobs -d '{"queue": "reports", "payload": {"rows": 100000}}'
//! curl -s localhost:8080/v1/queues
//! ```

use std::time::Duration;

use raindrop::prelude::*;
use raindrop::service::validate_as;
use serde::Deserialize;

raindrop::app!();

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Email {
    to: String,
    subject: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Report {
    rows: u64,
}

/// Sends an email (simulated); a delivery failure retries per the `emails` policy.
#[raindrop::task]
async fn email_sender(job: Job<Email>) -> Result<String, TaskError> {
    if !job.payload.to.contains('@') {
        return Err(TaskError::abort(format!(
            "`{}` is not an address",
            job.payload.to
        )));
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    Ok(format!(
        "sent `{}` to {}",
        job.payload.subject, job.payload.to
    ))
}

/// Builds a report over `rows` rows, reporting progress as it goes.
#[raindrop::task]
async fn report_builder(job: Job<Report>, ctx: JobContext) -> Result<u64, TaskError> {
    let mut checksum = 0u64;
    for chunk in 0..10u64 {
        for row in chunk * job.payload.rows / 10..(chunk + 1) * job.payload.rows / 10 {
            checksum = checksum.wrapping_mul(31).wrapping_add(row);
        }
        ctx.progress(
            ((chunk + 1) * 10) as u8,
            format!("chunk {} of 10", chunk + 1),
        )
        .await?;
        tokio::task::yield_now().await;
    }
    Ok(checksum)
}

/// Each queue checks its own payload.
#[raindrop::service]
fn api(service: Service) -> Service {
    service
        .validate("emails", validate_as::<Email>())
        .validate("reports", validate_as::<Report>())
}

#[raindrop::main]
fn main() {}
