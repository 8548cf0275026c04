//! Lifecycle events: every state and progress change of every job, in order.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::job::{JobId, JobState, Timestamp};
use crate::store::Store;

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

/// Follows the event feed from a position: yields every later event, in order, waiting for new
/// ones. Events of this process arrive at once; other processes' within a poll interval.
pub struct EventFollower {
    store: Arc<dyn Store>,
    cursor: u64,
    buffer: VecDeque<Event>,
    poll: Duration,
}

impl std::fmt::Debug for EventFollower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventFollower")
            .field("cursor", &self.cursor)
            .finish_non_exhaustive()
    }
}

impl EventFollower {
    /// Follows events after `seq` (0: from the oldest kept).
    pub fn after(store: Arc<dyn Store>, seq: u64) -> Self {
        Self {
            store,
            cursor: seq,
            buffer: VecDeque::new(),
            poll: Duration::from_millis(250),
        }
    }

    /// Follows events from now on.
    pub async fn from_now(store: Arc<dyn Store>) -> Result<Self> {
        let seq = store.last_event_seq().await?;
        Ok(Self::after(store, seq))
    }

    /// The next event, waiting for it if need be.
    pub async fn next(&mut self) -> Result<Event> {
        let notify = self.store.event_notify();
        loop {
            if let Some(event) = self.buffer.pop_front() {
                return Ok(event);
            }
            // Register for the wake-up before reading, so an event appended in between is not
            // missed.
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let events = self.store.events_after(self.cursor, 256).await?;
            if let Some(last) = events.last() {
                self.cursor = last.seq;
                self.buffer.extend(events);
                continue;
            }
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep(self.poll) => {}
            }
        }
    }

    /// Waits for the first event that `matches`, skipping the others.
    pub async fn wait_for(&mut self, mut matches: impl FnMut(&Event) -> bool) -> Result<Event> {
        loop {
            let event = self.next().await?;
            if matches(&event) {
                return Ok(event);
            }
        }
    }
}
