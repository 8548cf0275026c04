use raindrop::prelude::*;

raindrop::app!();

#[raindrop::task]
async fn worker(_job: JobContext) -> Result<(), TaskError> {
    Ok(())
}

#[raindrop::task]
async fn nightly(_event: ScheduledEvent) -> Result<(), TaskError> {
    Ok(())
}

#[raindrop::service]
async fn api(service: Service) -> Service {
    service
}

#[raindrop::main]
fn main() {}
