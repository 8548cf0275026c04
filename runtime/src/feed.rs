//! Following the lifecycle event feed: every later event, in order, as it is appended; and
//! one reader of it shared by the followers of single jobs ([`EventHub`]).
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

/// Events read from the feed at once by a [`EventHub`].
const HUB_BATCH: usize = 256;
/// Events a subscriber may have waiting; one more and it is dropped as lagging.
const SUBSCRIBER_BUFFER: usize = 64;
/// The longest a hub waits before it reads the feed again after a failed read.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One reader of the event feed for many followers of single jobs: it reads each event once
/// and hands it to the subscribers of its job, so a thousand followers cost the store what one
/// does. It reads only while someone subscribes, starting from the feed's end when the first
/// one does and stopping at its next wake-up after the last one leaves.
///
/// Each subscriber has a buffer of a few events; one that lets it fill falls behind, and the
/// hub drops it rather than wait or buffer without bound ([`Subscription::recv`] answers
/// `None`). A failed read is retried with backoff, subscribers keep waiting, and the outage
/// logs one line when it starts and one when it ends.
#[derive(Clone)]
pub struct EventHub {
    inner: Arc<Hub>,
}

struct Hub {
    store: Arc<dyn Store>,
    poll: Duration,
    state: std::sync::Mutex<HubState>,
}

#[derive(Default)]
struct HubState {
    /// Every event up to here has been handed out (while `running`).
    cursor: u64,
    /// Whether the reader task runs.
    running: bool,
    /// Names subscriptions, so one can remove itself.
    next_id: u64,
    subscribers: std::collections::HashMap<crate::job::JobId, Vec<Subscriber>>,
}

struct Subscriber {
    id: u64,
    sender: tokio::sync::mpsc::Sender<Event>,
}

impl std::fmt::Debug for EventHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.inner.lock();
        f.debug_struct("EventHub")
            .field("running", &state.running)
            .field("jobs", &state.subscribers.len())
            .finish_non_exhaustive()
    }
}

impl EventHub {
    /// A hub over `store`'s feed; it reads nothing until someone subscribes.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            inner: Arc::new(Hub {
                store,
                poll: Duration::from_millis(250),
                state: std::sync::Mutex::default(),
            }),
        }
    }

    /// Follows the events of `job` that come after [`Subscription::after`].
    pub async fn subscribe(&self, job: crate::job::JobId) -> Result<Subscription> {
        let mut start = None;
        loop {
            {
                let mut state = self.inner.lock();
                if !state.running
                    && let Some(seq) = start
                {
                    state.cursor = seq;
                    state.running = true;
                    tokio::spawn(read(self.inner.clone()));
                }
                if state.running {
                    let (sender, receiver) = tokio::sync::mpsc::channel(SUBSCRIBER_BUFFER);
                    let id = state.next_id;
                    state.next_id += 1;
                    state
                        .subscribers
                        .entry(job)
                        .or_default()
                        .push(Subscriber { id, sender });
                    return Ok(Subscription {
                        hub: self.inner.clone(),
                        job,
                        id,
                        after: state.cursor,
                        receiver,
                    });
                }
            }
            // Not running: start from the feed's end (read without holding the lock).
            start = Some(self.inner.store.last_event_seq().await?);
        }
    }
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        // A panic while holding the lock leaves the map consistent: every change is one step.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The hub's reader: reads the feed after the cursor and hands each event to its job's
/// subscribers, until none is left.
async fn read(hub: Arc<Hub>) {
    /// Whichever way the reader ends — no subscriber left, a panic, its task dropped at
    /// shutdown — the hub hears of it: it is marked stopped and its subscribers are let go
    /// (their streams end with a hint to reconnect), so the next subscriber starts a reader
    /// instead of waiting on one that is gone.
    struct Stopped {
        hub: Arc<Hub>,
        /// Cleared when the reader stops by itself, having marked the hub stopped: by then
        /// another reader may have started, which this one must leave be.
        armed: bool,
    }
    impl Drop for Stopped {
        fn drop(&mut self) {
            if self.armed {
                let mut state = self.hub.lock();
                state.running = false;
                state.subscribers.clear();
            }
        }
    }
    let mut stopped = Stopped {
        hub: hub.clone(),
        armed: true,
    };
    let notify = hub.store.event_notify();
    let mut backoff = Duration::from_millis(100);
    let mut failing = false;
    loop {
        // Register for the wake-up before reading, so an event appended in between is not
        // missed.
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let cursor = {
            let mut state = hub.lock();
            if state.subscribers.is_empty() {
                state.running = false;
                stopped.armed = false;
                return;
            }
            state.cursor
        };
        match hub.store.events_after(cursor, HUB_BATCH).await {
            Ok(events) => {
                if std::mem::take(&mut failing) {
                    tracing::info!("reading the event feed works again; event streams go on");
                }
                backoff = Duration::from_millis(100);
                let more = events.len() >= HUB_BATCH;
                if let Some(last) = events.last().map(|e| e.seq) {
                    let mut state = hub.lock();
                    for event in events {
                        hand_out(&mut state, event);
                    }
                    state.cursor = last;
                }
                if more {
                    continue;
                }
            }
            Err(err) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(error = %err, "reading the event feed failed; event streams wait while it is retried");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        }
        tokio::select! {
            () = notified => {}
            () = tokio::time::sleep(hub.poll) => {}
        }
    }
}

/// Gives `event` to each subscriber of its job; drops those whose buffer is full or gone.
fn hand_out(state: &mut HubState, event: Event) {
    let std::collections::hash_map::Entry::Occupied(mut entry) = state.subscribers.entry(event.job)
    else {
        return;
    };
    entry
        .get_mut()
        .retain(|subscriber| subscriber.sender.try_send(event.clone()).is_ok());
    if entry.get().is_empty() {
        entry.remove();
    }
}

/// The events of one job, from an [`EventHub`]; unsubscribes when dropped.
pub struct Subscription {
    hub: Arc<Hub>,
    job: crate::job::JobId,
    id: u64,
    after: u64,
    receiver: tokio::sync::mpsc::Receiver<Event>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("job", &self.job)
            .field("after", &self.after)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// The feed position it starts after: every later event of the job arrives, none earlier.
    pub fn after(&self) -> u64 {
        self.after
    }

    /// The job's next event; `None` once the subscriber fell behind and was dropped (the events
    /// it had waiting come first).
    pub async fn recv(&mut self) -> Option<Event> {
        self.receiver.recv().await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut state = self.hub.lock();
        if let std::collections::hash_map::Entry::Occupied(mut entry) =
            state.subscribers.entry(self.job)
        {
            entry.get_mut().retain(|s| s.id != self.id);
            if entry.get().is_empty() {
                entry.remove();
            }
        }
    }
}

/// The events of `job` after `after` up to `upto`, read from the feed (a reconnecting stream
/// catches up with them); `None` when that takes more than `max_reads` reads of the feed.
pub async fn events_of(
    store: &dyn Store,
    job: crate::job::JobId,
    after: u64,
    upto: u64,
    max_reads: usize,
) -> Result<Option<Vec<Event>>> {
    let mut found = Vec::new();
    let mut cursor = after;
    for _ in 0..max_reads {
        if cursor >= upto {
            return Ok(Some(found));
        }
        let events = store.events_after(cursor, HUB_BATCH).await?;
        let Some(last) = events.last().map(|e| e.seq) else {
            return Ok(Some(found));
        };
        found.extend(events.into_iter().filter(|e| e.job == job && e.seq <= upto));
        cursor = last;
    }
    Ok((cursor >= upto).then_some(found))
}
