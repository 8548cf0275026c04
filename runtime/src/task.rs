//! What a task handler receives and returns.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::job::Job as JobRecord;
use crate::job::{JobError, JobId, Payload, Progress, now};
use crate::store::Store;

/// The job a handler is running, and its means to report back.
#[derive(Clone)]
pub struct JobContext {
    job: Arc<JobRecord>,
    token: u64,
    store: Arc<dyn Store>,
    cancel: CancellationToken,
}

impl fmt::Debug for JobContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobContext")
            .field("id", &self.job.id)
            .field("queue", &self.job.queue)
            .field("attempt", &self.job.attempt)
            .finish_non_exhaustive()
    }
}

impl JobContext {
    pub(crate) fn new(
        job: Arc<JobRecord>,
        token: u64,
        store: Arc<dyn Store>,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            job,
            token,
            store,
            cancel,
        }
    }

    /// The job's id.
    pub fn id(&self) -> JobId {
        self.job.id
    }

    /// The whole job record as it was when this attempt started.
    pub fn job(&self) -> &JobRecord {
        &self.job
    }

    /// This attempt's number, 1 for the first.
    pub fn attempt(&self) -> u32 {
        self.job.attempt
    }

    /// Attempts the job has in all.
    pub fn max_attempts(&self) -> u32 {
        self.job.max_attempts
    }

    /// The payload, deserialized.
    pub fn payload<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        Ok(self.job.payload.parse()?)
    }

    /// Reports progress (0–100, clamped) with a message; followers see it at once.
    pub async fn progress(&self, percent: u8, message: impl Into<String>) -> Result<()> {
        let progress = Progress {
            percent: percent.min(100),
            message: message.into(),
        };
        self.store
            .progress(self.job.id, self.token, progress, now())
            .await
    }

    /// Fires when the job is cancelled, times out, or its worker shuts down: long handlers
    /// should watch it and stop early.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Whether [`cancellation`](Self::cancellation) has fired.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

/// The typed payload of the job a handler runs (the `Job<T>` extractor).
#[derive(Debug, Clone)]
pub struct Job<T> {
    /// The job's id.
    pub id: JobId,
    /// Its payload.
    pub payload: T,
}

impl<T> Job<T> {
    /// A job's id and payload.
    pub fn new(id: JobId, payload: T) -> Self {
        Self { id, payload }
    }
}

/// How a failed handler wants its job treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Retry per the queue's backoff policy (the default for any error).
    Backoff,
    /// Retry, not before this long from now.
    After(Duration),
    /// Do not retry: the job becomes a dead letter now.
    Never,
    /// Run again after this long without spending an attempt (a snooze): for a job that finds
    /// it cannot go on yet (a resource busy, a window not open). Snoozes count toward the
    /// queue's `max_snoozes`; past it, the snooze fails the attempt and the job retries after
    /// the delay. A queue consumer's snooze is a retry after the delay.
    Snooze(Duration),
}

/// A handler's failure: the error, and whether to retry.
///
/// Any `std::error::Error` converts into one that retries per policy, so `?` works in handlers;
/// [`TaskError::retry_after`] and [`TaskError::abort`] steer it.
pub struct TaskError {
    retry: Retry,
    error: JobError,
}

impl TaskError {
    /// Retry per the queue's policy.
    pub fn retry(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::with(Retry::Backoff, error)
    }

    /// Retry, not before `delay` from now.
    pub fn retry_after(
        delay: Duration,
        error: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::with(Retry::After(delay), error)
    }

    /// Run the job again after `delay`, without spending an attempt ([`Retry::Snooze`]); the
    /// snooze is recorded in its history as a `snoozed` event.
    pub fn snooze(delay: Duration) -> Self {
        Self {
            retry: Retry::Snooze(delay),
            error: JobError::new(format!("snoozed for {}", crate::job::humanize(delay))),
        }
    }

    /// Do not retry: dead-letter the job now (e.g. its input can never work).
    pub fn abort(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::with(Retry::Never, error)
    }

    fn with(retry: Retry, error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        let error: Box<dyn std::error::Error + Send + Sync> = error.into();
        Self {
            retry,
            error: job_error(&*error),
        }
    }

    /// How the job is to be retried.
    pub fn retry_policy(&self) -> Retry {
        self.retry
    }

    /// The error as recorded on the job.
    pub fn error(&self) -> &JobError {
        &self.error
    }

    pub(crate) fn into_parts(self) -> (Retry, JobError) {
        (self.retry, self.error)
    }
}

impl fmt::Debug for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskError")
            .field("retry", &self.retry)
            .field("error", &self.error)
            .finish()
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.error.message)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for TaskError {
    fn from(error: E) -> Self {
        Self {
            retry: Retry::Backoff,
            error: job_error(&error),
        }
    }
}

/// An error and its chain of sources, as stored on a job.
pub(crate) fn job_error(error: &(dyn std::error::Error + 'static)) -> JobError {
    let mut chain = Vec::new();
    let mut source = error.source();
    while let Some(cause) = source {
        chain.push(cause.to_string());
        source = cause.source();
    }
    JobError {
        message: error.to_string(),
        chain,
    }
}

/// Runs jobs of a worker task.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Runs one attempt; the `Ok` payload becomes the job's result.
    async fn call(&self, ctx: JobContext) -> Result<Payload, TaskError>;
}

/// A [`Handler`] from an async function of the context.
pub fn handler_fn<F, Fut, R>(f: F) -> impl Handler
where
    F: Fn(JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, TaskError>> + Send + 'static,
    R: Serialize + Send + 'static,
{
    struct FnHandler<F>(F);

    #[async_trait]
    impl<F, Fut, R> Handler for FnHandler<F>
    where
        F: Fn(JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, TaskError>> + Send + 'static,
        R: Serialize + Send + 'static,
    {
        async fn call(&self, ctx: JobContext) -> Result<Payload, TaskError> {
            let value = (self.0)(ctx).await?;
            Payload::from_value(&value)
                .map_err(|e| TaskError::abort(format!("cannot serialize the result: {e}")))
        }
    }

    FnHandler(f)
}
