use raindrop::prelude::*;

raindrop::app!();

#[raindrop::task]
async fn nightly(_event: ScheduledEvent) -> Result<(), TaskError> {
    Ok(())
}

struct Opaque;

#[raindrop::task]
async fn worker(_job: Job<Opaque>) -> Result<(), TaskError> {
    Ok(())
}

#[raindrop::observer]
async fn sender(_batch: MessageBatch) -> Result<(), TaskError> {
    Ok(())
}

#[raindrop::main]
fn main() {}
