//! Following the lifecycle event feed: every later event, in order, as it is appended.
//!
//! The event model ([`crate::event`]) knows no store; this follower reads a store's
//! [`EventLog`](crate::store::EventLog).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::event::Event;
use crate::store::Store;

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
