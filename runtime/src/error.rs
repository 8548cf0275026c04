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
    /// A job is larger than its queue accepts: its payload, kind, headers and idempotency key
    /// together.
    #[error(
        "a job of {size} bytes (payload, kind, headers and idempotency key) exceeds the limit of {limit} bytes for queue `{queue}`"
    )]
    PayloadTooLarge {
        /// The queue.
        queue: String,
        /// The job's size: payload, kind, headers and idempotency key.
        size: usize,
        /// The queue's `max_message_size`.
        limit: u64,
    },
    /// A tenant would have more jobs waiting in a queue than its quota allows
    /// ([`NewJob::max_waiting`](crate::job::NewJob::max_waiting)); nothing was added.
    #[error("this tenant has {waiting} jobs waiting in `{queue}` and may have at most {max}")]
    QuotaQueued {
        /// The queue.
        queue: String,
        /// How many of the tenant's jobs wait there now.
        waiting: u64,
        /// The quota.
        max: u64,
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
    /// A store operation failed; [`StoreError::kind`] tells an outage from a refusal.
    #[error("store {op} failed: {source}")]
    Store {
        /// What the store was doing (`claim`, `kv get`, `open` …).
        op: &'static str,
        /// Why, with the backend's own error.
        #[source]
        source: StoreError,
    },
}

impl Error {
    /// A failure of the store operation `op`.
    pub fn store(
        op: &'static str,
        kind: StoreErrorKind,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::Store {
            op,
            source: StoreError {
                kind,
                source: source.into(),
            },
        }
    }

    /// How the store failed, when this is a store failure.
    pub fn store_kind(&self) -> Option<StoreErrorKind> {
        match self {
            Error::Store { source, .. } => Some(source.kind),
            _ => None,
        }
    }
}

/// `Result` with the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a store operation failed, for callers that react to each differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The store cannot be reached: connection refused or lost, the file cannot be opened.
    /// Retrying later may succeed.
    Unavailable,
    /// The store did not answer in time (busy or timed out). Retrying may succeed.
    Timeout,
    /// The store answered and refused: a script or constraint error, read-only, out of memory.
    Refused,
    /// What the store holds or answered cannot be read back (a corrupt record, a reply of the
    /// wrong shape).
    Corrupt,
    /// The store's own machinery failed (its writer thread stopped).
    Internal,
}

/// A store's failure: its kind, and the backend's error as the source.
#[derive(Debug)]
pub struct StoreError {
    kind: StoreErrorKind,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl StoreError {
    /// How the store failed.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.source.fmt(f)
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.source()
    }
}

impl From<crate::job::UnknownState> for Error {
    fn from(err: crate::job::UnknownState) -> Self {
        Error::store("read", StoreErrorKind::Corrupt, err)
    }
}
