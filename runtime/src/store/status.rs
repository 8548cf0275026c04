//! The job status document kept in the status kv_cache: one read answers "how is my job?".

use serde::{Deserialize, Serialize};

use super::{KvEntry, StatusCache};
use crate::job::{Attempt, Job, JobError, JobId, JobState, Payload, Progress, Timestamp};

/// A job's status, progress, attempts and outcome — everything but its payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    pub id: JobId,
    pub queue: String,
    pub kind: String,
    pub state: JobState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    pub attempt: u32,
    pub max_attempts: u32,
    pub attempts: Vec<Attempt>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Payload>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
    pub created_at: Timestamp,
    pub run_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
}

impl JobStatus {
    /// The status of `job`.
    pub fn of(job: &Job) -> Self {
        Self {
            id: job.id,
            queue: job.queue.clone(),
            kind: job.kind.clone(),
            state: job.state,
            progress: job.progress.clone(),
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            attempts: job.attempts.clone(),
            result: job.result.clone(),
            error: job.error.clone(),
            created_at: job.created_at,
            run_at: job.run_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
        }
    }

    /// The kv entry for `job` in `cache`: live while the job is, then for the cache's TTL.
    pub(crate) fn entry(job: &Job, cache: &StatusCache) -> KvEntry {
        let expires_at = match (job.finished_at, cache.ttl) {
            (Some(finished), Some(ttl)) => chrono::Duration::from_std(ttl)
                .ok()
                .map(|ttl| finished + ttl),
            _ => None,
        };
        KvEntry {
            // Serializing plain data into a Vec cannot fail.
            value: serde_json::to_vec(&Self::of(job)).unwrap_or_default(),
            metadata: None,
            expires_at,
        }
    }
}
