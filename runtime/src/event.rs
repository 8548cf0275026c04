//! Lifecycle events: every state and progress change of every job, in order.

use serde::{Deserialize, Serialize};

use crate::job::{JobId, JobState, Timestamp};

/// What happened to a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Accepted into its queue.
    Enqueued,
    /// A worker started an attempt.
    Started,
    /// The running job reported progress.
    Progress,
    /// Finished with a result.
    Succeeded,
    /// An attempt failed; `Retrying` or `DeadLettered` follows.
    Failed,
    /// Waiting for its next attempt.
    Retrying,
    /// Out of attempts, or failed with an error that must not be retried.
    DeadLettered,
    /// Cancelled.
    Cancelled,
    /// Its worker's lease lapsed and the job was taken back.
    Recovered,
    /// Back in its queue from the dead letters, or released by a worker shutting down.
    Requeued,
    /// Its handler asked to run it again later, without spending an attempt.
    Snoozed,
    /// A later job of its debounce burst replaced its payload; it runs later.
    Debounced,
}

impl EventKind {
    /// The name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Enqueued => "enqueued",
            EventKind::Started => "started",
            EventKind::Progress => "progress",
            EventKind::Succeeded => "succeeded",
            EventKind::Failed => "failed",
            EventKind::Retrying => "retrying",
            EventKind::DeadLettered => "dead_lettered",
            EventKind::Cancelled => "cancelled",
            EventKind::Recovered => "recovered",
            EventKind::Requeued => "requeued",
            EventKind::Snoozed => "snoozed",
            EventKind::Debounced => "debounced",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        use EventKind::*;
        [
            Enqueued,
            Started,
            Progress,
            Succeeded,
            Failed,
            Retrying,
            DeadLettered,
            Cancelled,
            Recovered,
            Requeued,
            Snoozed,
            Debounced,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// One lifecycle event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the store's feed; increases by at least one per event.
    pub seq: u64,
    /// When it happened.
    pub at: Timestamp,
    /// What happened.
    pub kind: EventKind,
    /// To which job.
    pub job: JobId,
    /// In which queue.
    pub queue: String,
    /// The job's state afterwards.
    pub state: JobState,
    /// The attempt it concerns (0 before the first).
    pub attempt: u32,
    /// The error, progress message or other detail, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}
