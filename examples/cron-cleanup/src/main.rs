//! A scheduled task: every five minutes (UTC), delete the files in `CLEANUP_DIR` older than
//! `MAX_AGE_MINUTES`. With several processes running, each tick fires in exactly one of them.
//!
//! ```sh
//! cargo run -p example-cron-cleanup
//! CLEANUP_DIR=/tmp/scratch MAX_AGE_MINUTES=10 cargo run -p example-cron-cleanup
//! ```
//!
//! A failed run is logged and waits for the next tick (the task has no `max_attempts`).

use std::path::Path;
use std::time::{Duration, SystemTime};

use raindrop::prelude::*;

raindrop::app!();

#[raindrop::task]
async fn cleanup(event: ScheduledEvent, env: Env) -> Result<(), TaskError> {
    let minutes: u64 = env
        .max_age_minutes
        .parse()
        .map_err(|e| TaskError::abort(format!("MAX_AGE_MINUTES: {e}")))?;
    let removed = remove_older_than(
        Path::new(&env.cleanup_dir),
        Duration::from_secs(minutes * 60),
        SystemTime::now(),
    )
    .await?;
    tracing::info!(tick = %event.scheduled_time, removed, dir = %env.cleanup_dir, "cleanup done");
    Ok(())
}

/// Deletes the files in `dir` last modified more than `max_age` before `now`; a missing
/// directory has nothing to delete.
async fn remove_older_than(
    dir: &Path,
    max_age: Duration,
    now: SystemTime,
) -> std::io::Result<usize> {
    let mut entries = match tokio::fs::read_dir(dir).await {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(err) => return Err(err),
    };
    let mut removed = 0;
    while let Some(entry) = entries.next_entry().await? {
        let metadata = entry.metadata().await?;
        let age = now.duration_since(metadata.modified()?).unwrap_or_default();
        if metadata.is_file() && age > max_age {
            tokio::fs::remove_file(entry.path()).await?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[raindrop::main]
fn main() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_files_older_than_the_limit_go() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), b"a").unwrap();
        std::fs::write(dir.path().join("b"), b"b").unwrap();
        std::fs::create_dir(dir.path().join("nested")).unwrap();
        let later = SystemTime::now() + Duration::from_secs(3600);
        assert_eq!(
            remove_older_than(dir.path(), Duration::from_secs(7200), later)
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            remove_older_than(dir.path(), Duration::from_secs(60), later)
                .await
                .unwrap(),
            2
        );
        assert!(dir.path().join("nested").exists(), "directories stay");
        assert_eq!(
            remove_older_than(&dir.path().join("missing"), Duration::ZERO, later)
                .await
                .unwrap(),
            0
        );
    }
}
