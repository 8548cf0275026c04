use raindrop::prelude::*;

raindrop::app!();

#[raindrop::task]
async fn nightly(_event: ScheduledEvent) -> Result<(), TaskError> {
    Ok(())
}

#[raindrop::task]
fn worker(_job: JobContext) -> Result<(), TaskError> {
    Ok(())
}

#[raindrop::observer]
async fn sender(_batch: MessageBatch) -> Result<(), TaskError> {
    Ok(())
}

#[raindrop::main]
fn main() {}
