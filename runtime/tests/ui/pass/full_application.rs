//! Every kind of handler, every extractor, and the generated bindings.
use std::sync::Arc;

use raindrop::prelude::*;
use serde::Deserialize;

raindrop::app!();

#[derive(Deserialize)]
struct Order {
    id: u64,
}

#[raindrop::task]
async fn worker(job: Job<Order>, ctx: JobContext, env: Env) -> Result<String, TaskError> {
    ctx.progress(50, "half").await?;
    env.outbox.send(&job.payload.id).await?;
    let _: &raindrop::KvCache = &env.status;
    Ok(format!("{} in {}", job.payload.id, env.region))
}

#[raindrop::task(name = "nightly")]
async fn every_night(event: ScheduledEvent, _env: Env) -> Result<(), std::io::Error> {
    let _ = event.scheduled_time;
    Ok(())
}

#[raindrop::observer]
async fn monitor(observed: Observed, _env: Env) {
    match observed {
        Observed::Event(event) => {
            let _ = event.kind;
        }
        Observed::Alert(alert) => {
            let _: (bool, &str) = (alert.firing, &alert.name);
        }
    }
}

#[raindrop::observer]
async fn sender(batch: MessageBatch, _env: Env) -> Result<(), TaskError> {
    for message in batch.messages() {
        if message.attempts() > 3 {
            message.ack();
        }
    }
    Ok(())
}

#[raindrop::service]
fn api(service: Service) -> Service {
    service.validate("jobs", raindrop::service::validate_as::<Order>()).route(
        "/hello",
        raindrop::axum::routing::get(|| async { "hi" }),
    )
}

// The body runs before the application starts; exiting here keeps the compiled case from
// serving forever when trybuild runs it.
#[raindrop::main]
fn main() {
    let _ = Arc::new(());
    std::process::exit(0);
}
