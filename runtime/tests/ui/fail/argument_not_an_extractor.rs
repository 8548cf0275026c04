use raindrop::prelude::*;

raindrop::app!();

#[raindrop::task]
async fn nightly(_event: ScheduledEvent) -> Result<(), TaskError> {
    Ok(())
}

#[raindrop::task]
async fn worker(_job: JobContext, count: u32) -> Result<u32, TaskError> {
    Ok(count)
}

#[raindrop::observer]
async fn sender(_batch: MessageBatch) -> Result<(), TaskError> {
    Ok(())
}

#[raindrop::main]
fn main() {}
