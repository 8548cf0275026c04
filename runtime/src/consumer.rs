//! Raindrop-style queue consumers (`observer { source { queue batch_size } }`): the handler gets
//! a batch of messages; returning normally acknowledges them, an error retries them, and
//! `ack()` / `retry(delay)` on a message (or `ack_all()` / `retry_all(delay)` on the batch) win
//! over the outcome. Delivery is at least once: a handler must be idempotent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::job::{Job, JobId, Payload, Timestamp};
use crate::task::TaskError;

/// What the handler decided for one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    Ack,
    /// Retry, not before the delay if given (else per the queue's backoff).
    Retry(Option<Duration>),
}

/// One message of a batch.
#[derive(Debug, Clone)]
pub struct Message {
    id: JobId,
    timestamp: Timestamp,
    body: Payload,
    attempts: u32,
    decision: Arc<Mutex<Option<Decision>>>,
}

impl Message {
    pub(crate) fn of(job: &Job) -> Self {
        Self {
            id: job.id,
            timestamp: job.created_at,
            body: job.payload.clone(),
            attempts: job.attempt,
            decision: Arc::default(),
        }
    }

    /// The message's id.
    pub fn id(&self) -> JobId {
        self.id
    }

    /// When it was sent.
    pub fn timestamp(&self) -> Timestamp {
        self.timestamp
    }

    /// Its body as JSON text.
    pub fn body(&self) -> &Payload {
        &self.body
    }

    /// Its body, deserialized.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        Ok(self.body.parse()?)
    }

    /// Deliveries so far, this one included (starts at 1).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Acknowledges it, whatever the handler returns.
    pub fn ack(&self) {
        self.decide(Decision::Ack);
    }

    /// Retries it, not before `delay` (none: per the queue's backoff), whatever the handler
    /// returns.
    pub fn retry(&self, delay: Option<Duration>) {
        self.decide(Decision::Retry(delay));
    }

    fn decide(&self, decision: Decision) {
        *self.decision.lock().unwrap_or_else(|p| p.into_inner()) = Some(decision);
    }

    pub(crate) fn decision(&self) -> Option<Decision> {
        *self.decision.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The messages a consumer receives at once (up to the source's `batch_size`).
#[derive(Debug, Clone)]
pub struct MessageBatch {
    queue: String,
    messages: Vec<Message>,
}

impl MessageBatch {
    pub(crate) fn new(queue: String, messages: Vec<Message>) -> Self {
        Self { queue, messages }
    }

    /// The queue they come from.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The messages, oldest first within a priority.
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// Acknowledges every message.
    pub fn ack_all(&self) {
        self.messages.iter().for_each(Message::ack);
    }

    /// Retries every message, not before `delay` (none: per the queue's backoff).
    pub fn retry_all(&self, delay: Option<Duration>) {
        for message in &self.messages {
            message.retry(delay);
        }
    }
}

/// Consumes batches of a queue's messages.
#[async_trait]
pub trait BatchHandler: Send + Sync + 'static {
    /// Handles one batch.
    async fn call(&self, batch: MessageBatch) -> Result<(), TaskError>;
}

/// A [`BatchHandler`] from an async function of the batch.
pub fn consumer_fn<F, Fut>(f: F) -> impl BatchHandler
where
    F: Fn(MessageBatch) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), TaskError>> + Send + 'static,
{
    struct FnConsumer<F>(F);

    #[async_trait]
    impl<F, Fut> BatchHandler for FnConsumer<F>
    where
        F: Fn(MessageBatch) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), TaskError>> + Send + 'static,
    {
        async fn call(&self, batch: MessageBatch) -> Result<(), TaskError> {
            (self.0)(batch).await
        }
    }

    FnConsumer(f)
}
