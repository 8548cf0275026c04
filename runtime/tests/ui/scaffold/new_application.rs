//! A Raindrop application: `raindrop.manifest` declares it, the functions below handle its jobs.
//! Run it with `cargo run`, then submit a job:
//! `curl -X POST localhost:8080/v1/jobs -d '{"payload": {"name": "Ada"}}'`

use raindrop::prelude::*;
use serde::Deserialize;

raindrop::app!();

#[derive(Debug, Deserialize)]
struct Greeting {
    name: String,
}

/// Pulls jobs from the `jobs` queue; what it returns becomes the job's result.
#[raindrop::task]
async fn worker(job: Job<Greeting>, ctx: JobContext) -> Result<String, TaskError> {
    ctx.progress(50, "greeting").await?;
    Ok(format!("Hello, {}!", job.payload.name))
}

#[raindrop::main]
fn main() {
    std::process::exit(0);
}
