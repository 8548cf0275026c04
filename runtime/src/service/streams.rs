//! `GET /v1/jobs/{id}/events`: a job's events as Server-Sent Events, all streams of a service
//! fed by one reader of the event feed ([`crate::feed::EventHub`]), counted per API key and in total, and
//! ended after their lifetime with a `retry:` hint so the client reconnects with
//! `Last-Event-ID` and misses nothing.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{Path, State as Extract};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};

use super::jobs::parse_id;
use super::{ApiError, Caller, ErrorCode, Scope, State};
use crate::event::{Event, EventKind};
use crate::feed::{Subscription, events_of};
use crate::job::JobId;

/// How long a client waits before it reconnects after a stream ends on purpose (`retry:`).
const RECONNECT: Duration = Duration::from_secs(1);
/// Most reads of the feed a reconnecting stream makes to catch up; beyond them it starts from
/// the job's current status instead.
const CATCH_UP_READS: usize = 40;

/// How many streams may be open, per API key and in total, and how many are.
#[derive(Debug)]
pub(crate) struct StreamLimits {
    per_key: u32,
    total: u32,
    lifetime: Duration,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: u32,
    /// Only keys with a stream open: an entry goes when its last stream ends.
    per_key: HashMap<Arc<str>, u32>,
}

/// One open stream, counted until it is dropped (the stream ended or its client went away).
#[derive(Debug)]
pub(crate) struct StreamPermit {
    limits: Arc<StreamLimits>,
    key: Arc<str>,
}

impl StreamLimits {
    pub(crate) fn new(settings: raindrop_codegen::model::Streams) -> Self {
        Self {
            per_key: settings.per_key,
            total: settings.total,
            lifetime: settings.lifetime.get(),
            open: Mutex::default(),
        }
    }

    /// Counts a stream of `key`, or refuses it (429 `too_many_streams`) over either limit.
    fn acquire(self: &Arc<Self>, key: &Arc<str>) -> Result<StreamPermit, ApiError> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.total >= self.total {
            return Err(ApiError::new(
                ErrorCode::TooManyStreams,
                format!(
                    "this service has {} event streams open, its most; retry later",
                    self.total
                ),
            ));
        }
        let mine = open.per_key.get(key).copied().unwrap_or(0);
        if mine >= self.per_key {
            return Err(ApiError::new(
                ErrorCode::TooManyStreams,
                format!("this API key has {mine} event streams open, its most; close one first"),
            ));
        }
        open.total += 1;
        open.per_key.insert(key.clone(), mine + 1);
        Ok(StreamPermit {
            limits: self.clone(),
            key: key.clone(),
        })
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut open = self
            .limits
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_key.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.per_key.remove(&self.key);
            }
        }
    }
}

/// Every state and progress change of a job, as Server-Sent Events, until it ends.
///
/// The first event (`status`) is the current status; then one event per change, named by its
/// kind. Each event's `id` is its position in the event feed (the `status` event's: the
/// position it reflects). A stream lasts at most the service's `streams.lifetime`, then ends
/// with a `retry:` hint; a client that reconnects with `Last-Event-ID` gets the job's events
/// after that position first, or, when they are too far back to catch up with, the current
/// status. A reconnect to a job that has ended with nothing new answers 204, which tells an
/// `EventSource` to stop.
#[utoipa::path(
    get, path = "/v1/jobs/{id}/events",
    params(
        ("id" = uuid::Uuid, Path, description = "Job id"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event (sent by `EventSource` when it reconnects)"),
    ),
    responses(
        (status = 200, description = "An event stream", content_type = "text/event-stream"),
        (status = 204, description = "A reconnect to a job that has ended, with no event after `Last-Event-ID`"),
        (status = 404, body = super::ErrorBody),
        (status = 429, description = "Over the event streams this key (or the service) may have open (`too_many_streams`)", body = super::ErrorBody),
    )
)]
pub(crate) async fn events(
    Extract(state): Extract<State>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Read)?;
    let id = parse_id(&id)?;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let permit = state.streams.acquire(caller.key_id())?;
    // Subscribe before reading the status, so no change falls in between.
    let subscription = state.hub.subscribe(id).await?;
    let current = state.control.status(&caller.view(), id).await?;
    let now = subscription.after();
    // An id past the feed's end (made up, or from before the store was reset) resumes
    // nothing: the stream starts from the current status, as a first connection does.
    let resume = resume.filter(|after| *after <= now);
    let mut first = VecDeque::new();
    let mut done = false;
    // Live events are those after `now`; a reconnect skips what its client saw before.
    let last_sent = resume.map_or(now, |after| after.max(now));
    let caught_up = match resume {
        Some(after) => {
            events_of(
                state.control.engine().store().as_ref(),
                id,
                after,
                now,
                CATCH_UP_READS,
            )
            .await?
        }
        None => None,
    };
    match (resume, caught_up) {
        (Some(_), Some(missed)) => {
            if missed.is_empty() && current.state.is_finished() {
                return Ok(StatusCode::NO_CONTENT.into_response());
            }
            for event in missed {
                done = ends(&event);
                first.push_back(sse(&event));
                if done {
                    break;
                }
            }
        }
        _ => {
            first.push_back(
                SseEvent::default()
                    .event("status")
                    .id(now.to_string())
                    .json_data(&current)
                    .unwrap_or_default(),
            );
            done = current.state.is_finished();
        }
    }
    let follow = Follow {
        first,
        subscription,
        last_sent,
        done,
        deadline: tokio::time::Instant::now() + state.streams.lifetime,
        job: id,
        _permit: permit,
    };
    let stream = futures_util::stream::unfold(follow, Follow::step);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// An open stream's state.
struct Follow {
    /// What goes out before the live events: the status, or the events missed since the
    /// client's `Last-Event-ID`.
    first: VecDeque<SseEvent>,
    subscription: Subscription,
    /// Events up to here went out (or came before the stream): later copies are skipped.
    last_sent: u64,
    /// Whether the job has ended (or the stream must): no live events follow.
    done: bool,
    deadline: tokio::time::Instant,
    job: JobId,
    _permit: StreamPermit,
}

impl Follow {
    async fn step(mut self) -> Option<(Result<SseEvent, Infallible>, Self)> {
        if let Some(event) = self.first.pop_front() {
            return Some((Ok(event), self));
        }
        if self.done {
            return None;
        }
        loop {
            tokio::select! {
                received = self.subscription.recv() => match received {
                    Some(event) if event.seq <= self.last_sent => {}
                    Some(event) => {
                        self.last_sent = event.seq;
                        self.done = ends(&event);
                        return Some((Ok(sse(&event)), self));
                    }
                    None => {
                        tracing::debug!(job.id = %self.job, "event stream fell behind; the client is told to reconnect");
                        self.done = true;
                        return Some((Ok(reconnect("this stream fell behind")), self));
                    }
                },
                () = tokio::time::sleep_until(self.deadline) => {
                    self.done = true;
                    return Some((Ok(reconnect("this stream reached its lifetime")), self));
                }
            }
        }
    }
}

/// Whether a stream ends with `event`: the job has finished for good (a failed attempt is
/// followed by a retry or a dead letter).
fn ends(event: &Event) -> bool {
    event.state.is_finished() && event.kind != EventKind::Failed
}

fn sse(event: &Event) -> SseEvent {
    SseEvent::default()
        .event(event.kind.as_str())
        .id(event.seq.to_string())
        .json_data(event)
        .unwrap_or_default()
}

/// The last thing a stream that ends on purpose sends: when to reconnect, and why.
fn reconnect(why: &str) -> SseEvent {
    SseEvent::default()
        .retry(RECONNECT)
        .comment(format!("{why}: reconnect with Last-Event-ID"))
}
