//! Errors of the engine and its stores.

use crate::job::{JobId, JobState};

/// What went wrong in the engine or a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No job has this id (or it was removed by retention).
    #[error("job {0} not found")]
    NotFound(JobId),
    /// A complete, fail, release or progress update carried a fencing token that is no longer
    /// the job's: the lease expired and the job was recovered, or it was cancelled.
    #[error("job {0}: the lease is no longer held (it expired, or the job was cancelled)")]
    LeaseLost(JobId),
    /// The operation does not apply to a job in this state.
    #[error("job {id} is {state}, which does not allow this")]
    WrongState {
        /// The job.
        id: JobId,
        /// Its current state.
        state: JobState,
    },
    /// A payload is larger than its queue accepts.
    #[error("payload of {size} bytes exceeds the limit of {limit} bytes for queue `{queue}`")]
    PayloadTooLarge {
        /// The queue.
        queue: String,
        /// The payload's size.
        size: usize,
        /// The queue's `max_message_size`.
        limit: u64,
    },
    /// A payload or result is not valid JSON.
    #[error("invalid JSON: {0}")]
    InvalidJson(#[from] serde_json::Error),
    /// A queue, kv_cache or task that the application does not declare.
    #[error("no {kind} named `{name}` is declared")]
    Unknown {
        /// What was looked up (`queue`, `kv_cache`, `task`).
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// The manifest could not be read, or has errors (rendered compiler-style).
    #[error(transparent)]
    Manifest(#[from] crate::manifest::Error),
    /// A setting is missing or invalid at startup.
    #[error("configuration: {0}")]
    Config(String),
    /// The store failed; the message says which operation and why.
    #[error("store: {0}")]
    Store(String),
}

/// `Result` with the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(feature = "sqlite")]
impl From<rusqlite::Error> for Error {
    fn from(err: rusqlite::Error) -> Self {
        Error::Store(err.to_string())
    }
}

impl From<crate::job::UnknownState> for Error {
    fn from(err: crate::job::UnknownState) -> Self {
        Error::Store(err.to_string())
    }
}
