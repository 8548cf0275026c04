//! The job status document in the status kv_cache: one read answers "how is my job?". The
//! view that reads it over any store is `crate::kv::StatusView`.

use serde::{Deserialize, Serialize};

use super::{KvEntry, KvKey, StatusCache};
use crate::job::{Attempt, Job, JobError, JobId, JobState, Payload, Progress, Timestamp};

/// A job's status, progress, attempts and outcome — everything but its payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobStatus {
    #[schema(value_type = String, format = Uuid)]
    pub id: JobId,
    pub queue: String,
    pub kind: String,
    /// Who submitted it, when the service authenticates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub state: JobState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    pub attempt: u32,
    pub max_attempts: u32,
    pub attempts: Vec<Attempt>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<Payload>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub run_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<Timestamp>,
    /// The key its queue's `concurrency_limit` counts it under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_key: Option<String>,
    /// The key its queue's `unique` rule (or its `unique_key`) gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_key: Option<String>,
    /// The key of its debounce burst.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debounce_key: Option<String>,
    /// Times its handler snoozed it (absent: never).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub snoozes: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl JobStatus {
    /// The status of `job`.
    pub fn of(job: &Job) -> Self {
        Self {
            id: job.id,
            queue: job.queue.clone(),
            kind: job.kind.clone(),
            tenant: job.tenant.clone(),
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
            limit_key: job.limit_key.clone(),
            unique_key: job.unique_key.clone(),
            debounce_key: job.debounce_key.clone(),
            snoozes: job.snoozes,
        }
    }

    /// When the document of `job` expires in `cache`: never while the job runs, then the
    /// cache's TTL after it finished.
    fn expires_at(job: &Job, cache: &StatusCache) -> Option<Timestamp> {
        match (job.finished_at, cache.ttl) {
            (Some(finished), Some(ttl)) => Some(super::after(finished, ttl)),
            _ => None,
        }
    }

    /// The kv entry of `job` in `cache` at `now`; `None` once it expired.
    pub(crate) fn entry(job: &Job, cache: &StatusCache, now: Timestamp) -> Option<KvEntry> {
        let expires_at = Self::expires_at(job, cache);
        if expires_at.is_some_and(|at| at <= now) {
            return None;
        }
        Some(KvEntry {
            // Serializing plain data into a Vec cannot fail.
            value: serde_json::to_vec(&StatusView::of(job)).unwrap_or_default(),
            metadata: None,
            expires_at,
        })
    }

    /// The listing key of `job` in `cache` at `now`; `None` once it expired.
    pub(crate) fn key(job: &Job, cache: &StatusCache, now: Timestamp) -> Option<KvKey> {
        let expires_at = Self::expires_at(job, cache);
        (expires_at.is_none_or(|at| at > now)).then(|| KvKey {
            name: job.id.to_string(),
            expires_at,
            metadata: None,
        })
    }
}

/// [`JobStatus`] borrowed from a job, to serialize the document without copying the job.
#[derive(Serialize)]
struct StatusView<'a> {
    id: JobId,
    queue: &'a str,
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<&'a str>,
    state: JobState,
    #[serde(skip_serializing_if = "Option::is_none")]
    progress: Option<&'a Progress>,
    attempt: u32,
    max_attempts: u32,
    attempts: &'a [Attempt],
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a Payload>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a JobError>,
    created_at: Timestamp,
    run_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unique_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    debounce_key: Option<&'a str>,
    #[serde(skip_serializing_if = "is_zero")]
    snoozes: u32,
}

impl<'a> StatusView<'a> {
    fn of(job: &'a Job) -> Self {
        Self {
            id: job.id,
            queue: &job.queue,
            kind: &job.kind,
            tenant: job.tenant.as_deref(),
            state: job.state,
            progress: job.progress.as_ref(),
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            attempts: &job.attempts,
            result: job.result.as_ref(),
            error: job.error.as_ref(),
            created_at: job.created_at,
            run_at: job.run_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
            limit_key: job.limit_key.as_deref(),
            unique_key: job.unique_key.as_deref(),
            debounce_key: job.debounce_key.as_deref(),
            snoozes: job.snoozes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{NewJob, now};

    #[test]
    fn the_borrowed_view_reads_back_as_the_owned_status() {
        let mut job = Job::from_new(
            NewJob::new("q", "k", Payload::from_json("[1]").unwrap()),
            now(),
        );
        job.progress = Some(Progress {
            percent: 5,
            message: "x".into(),
        });
        job.result = Some(Payload::from_json(r#"{"a":1}"#).unwrap());
        job.limit_key = Some("customer 42".into());
        job.unique_key = Some("u".into());
        job.debounce_key = Some("d".into());
        job.snoozes = 3;
        let bytes = serde_json::to_vec(&StatusView::of(&job)).unwrap();
        let read: JobStatus = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(read, JobStatus::of(&job));
    }
}
