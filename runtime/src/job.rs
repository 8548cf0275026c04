//! The job model: what a job is, the states it goes through and what is recorded about it.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A point in time, UTC.
pub type Timestamp = DateTime<Utc>;

/// The current time, to the millisecond (the precision every store keeps).
pub fn now() -> Timestamp {
    let now = Utc::now();
    DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}

/// A job's id: a UUIDv7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(uuid::Uuid);

impl JobId {
    /// A new id, later than every id this process made before.
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7())
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> uuid::Uuid {
        self.0
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for JobId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, uuid::Error> {
        uuid::Uuid::parse_str(s).map(Self)
    }
}

/// Where a job is in its life.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Ready to run.
    Queued,
    /// Waiting for its first run time.
    Scheduled,
    /// Held by a worker under a lease.
    Running,
    /// Finished with a result.
    Succeeded,
    /// Failed an attempt; waiting for the next one.
    Retrying,
    /// Out of attempts, or failed with an error that must not be retried: a dead letter.
    Dead,
    /// Cancelled before it finished.
    Cancelled,
}

impl JobState {
    /// Every state, in lifecycle order.
    pub const ALL: [JobState; 7] = [
        JobState::Queued,
        JobState::Scheduled,
        JobState::Running,
        JobState::Succeeded,
        JobState::Retrying,
        JobState::Dead,
        JobState::Cancelled,
    ];

    /// The state's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Scheduled => "scheduled",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Retrying => "retrying",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Whether the job will not run again by itself.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Dead | JobState::Cancelled
        )
    }

    /// Whether the job waits to run (now or later).
    pub fn is_waiting(self) -> bool {
        matches!(
            self,
            JobState::Queued | JobState::Scheduled | JobState::Retrying
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Text that names no job state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job state `{0}`")]
pub struct UnknownState(pub String);

impl FromStr for JobState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, UnknownState> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// A JSON document kept as text: cheap to clone, stored and sent as is.
#[derive(Clone, PartialEq, Eq)]
pub struct Payload(Arc<str>);

impl Payload {
    /// Checks that `json` is one JSON value and keeps it.
    pub fn from_json(json: impl Into<String>) -> serde_json::Result<Self> {
        let json = json.into();
        serde_json::from_str::<serde::de::IgnoredAny>(&json)?;
        Ok(Self(json.into()))
    }

    /// Serializes `value`.
    pub fn from_value<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Self> {
        let json = serde_json::to_string(value)?;
        // Handlers without a result return `()`: its `null` is shared, not allocated per job.
        if json == "null" {
            return Ok(Self::null());
        }
        Ok(Self(json.into()))
    }

    /// A JSON value the parser already checked.
    pub fn from_raw(raw: &serde_json::value::RawValue) -> Self {
        Self(Arc::from(raw.get()))
    }

    /// `null`.
    pub fn null() -> Self {
        static NULL: std::sync::LazyLock<Payload> =
            std::sync::LazyLock::new(|| Payload(Arc::from("null")));
        NULL.clone()
    }

    /// Text already known to be valid JSON (read back from a store that only holds valid JSON).
    pub(crate) fn trusted(json: impl Into<Arc<str>>) -> Self {
        Self(json.into())
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its size in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the text is empty (never true for a valid payload).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Deserializes the payload.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_str(&self.0)
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw: &serde_json::value::RawValue =
            serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
        Ok(Self(Arc::from(raw.get())))
    }
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Its id, chosen by the producer.
    pub id: JobId,
    /// The queue it goes to.
    pub queue: String,
    /// What kind of work it is; free-form, e.g. `report` or `email.welcome`.
    pub kind: String,
    /// The work's input.
    pub payload: Payload,
    /// Higher runs first.
    pub priority: i32,
    /// Not before this time; `None` runs as soon as possible.
    pub run_at: Option<Timestamp>,
    /// Attempts before it becomes a dead letter.
    pub max_attempts: u32,
    /// Longest one attempt may take; `None` takes the task's timeout.
    pub timeout: Option<Duration>,
    /// Jobs with the same key on one queue are one job.
    pub idempotency_key: Option<String>,
    /// Who submitted it.
    pub tenant: Option<String>,
    /// Free-form metadata, e.g. trace context.
    pub headers: BTreeMap<String, String>,
    /// With a tenant, its quota: the most of the tenant's jobs that may wait (queued,
    /// scheduled or retrying) in the queue once this one is added. The store checks it in the
    /// same step as it adds the job; over it, the enqueue adds nothing and fails with
    /// [`Error::QuotaQueued`](crate::Error::QuotaQueued).
    pub max_waiting: Option<u64>,
    /// In a queue with a keyed `concurrency_limit`, the key it is counted under (its tenant's
    /// jobs with the same key share the limit; `""` for jobs without the key).
    pub limit_key: Option<String>,
    /// While a job of its queue and tenant with the same unique key is in one of the rule's
    /// states, or finished within its window, this job is that one: the enqueue adds nothing
    /// and answers the existing job's id (as for an idempotency key).
    pub unique: Option<UniqueRule>,
    /// Jobs of its queue and tenant sent with the same debounce key within the rule's window
    /// collapse into one (see [`DebounceRule`]).
    pub debounce: Option<DebounceRule>,
}

/// How jobs sent with the same key in a burst collapse into one ([`NewJob::debounce`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebounceRule {
    /// The key: jobs of one queue and tenant with the same key collapse.
    pub key: String,
    /// Trailing: the quiet time after the latest job of a burst before it runs; leading: the
    /// time after the first job during which later ones are dropped.
    pub window: Duration,
    pub mode: DebounceMode,
}

/// Which job of a burst runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DebounceMode {
    /// The latest: each job of the burst replaces the waiting job's payload, headers and kind,
    /// and moves its run time to a window later, but never past `max_wait` after the first.
    Trailing {
        /// The longest a burst's job waits after its first submission.
        max_wait: Option<Duration>,
    },
    /// The first, at once; the others within the window are dropped.
    Leading,
}

/// What a job sent with a debounce rule does, given the latest job with its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Folding {
    /// Becomes that job (trailing): its payload replaces the job's, which runs at this time.
    Into(JobId, Timestamp),
    /// Is dropped for that job (leading).
    Dropped(JobId),
    /// Is a new job, to run no sooner than this.
    New(Option<Timestamp>),
}

impl DebounceRule {
    /// What a job sent at `now` (asking to run at `run_at`) does, when the latest job with its
    /// key is `holder`: its id, state, and when it was created.
    pub(crate) fn fold(
        &self,
        holder: Option<(JobId, JobState, Timestamp)>,
        run_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Folding {
        let after = |at, d| self::after(at, d);
        match self.mode {
            DebounceMode::Trailing { max_wait } => {
                let quiet = after(now, self.window);
                match holder {
                    Some((id, JobState::Scheduled, first)) => {
                        let latest = max_wait.map_or(quiet, |wait| quiet.min(after(first, wait)));
                        Folding::Into(id, latest.max(now))
                    }
                    _ => Folding::New(Some(run_at.map_or(quiet, |at| at.max(quiet)))),
                }
            }
            DebounceMode::Leading => match holder {
                Some((id, _, first)) if now < after(first, self.window) => Folding::Dropped(id),
                _ => Folding::New(run_at),
            },
        }
    }
}

/// What makes a new job the duplicate of an existing one ([`NewJob::unique`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UniqueRule {
    /// The key: jobs of one queue and tenant with the same key are one while the rule holds.
    pub key: String,
    /// The states in which an existing job with the key makes the new one its duplicate.
    pub states: Vec<JobState>,
    /// A finished job with the key makes the new one its duplicate for this long after it
    /// finished.
    pub window: Duration,
}

impl UniqueRule {
    /// Whether `existing` (a job with the key) makes a job sent at `now` its duplicate.
    pub fn holds(&self, existing: &Job, now: Timestamp) -> bool {
        self.holds_for(existing.state, existing.finished_at, now)
    }

    /// [`holds`](Self::holds) for a job in `state` that finished at `finished_at`.
    pub fn holds_for(
        &self,
        state: JobState,
        finished_at: Option<Timestamp>,
        now: Timestamp,
    ) -> bool {
        self.states.contains(&state) || finished_at.is_some_and(|at| after(at, self.window) > now)
    }
}

impl NewJob {
    /// A job of `kind` with `payload` for `queue`, defaults elsewhere (priority 0, now,
    /// 1 attempt).
    pub fn new(queue: impl Into<String>, kind: impl Into<String>, payload: Payload) -> Self {
        Self {
            id: JobId::new(),
            queue: queue.into(),
            kind: kind.into(),
            payload,
            priority: 0,
            run_at: None,
            max_attempts: 1,
            timeout: None,
            idempotency_key: None,
            tenant: None,
            headers: BTreeMap::new(),
            max_waiting: None,
            limit_key: None,
            unique: None,
            debounce: None,
        }
    }
}

/// The last instant a timestamp may be: the end of year 9999, the last RFC 3339 (four-digit
/// years) can write. chrono's own end (year 262142) would reach clients as text they cannot
/// parse.
pub(crate) fn end_of_time() -> Timestamp {
    chrono::NaiveDate::from_ymd_opt(9999, 12, 31)
        .and_then(|day| day.and_hms_milli_opt(23, 59, 59, 999))
        .map_or(chrono::DateTime::<chrono::Utc>::MAX_UTC, |t| t.and_utc())
}

/// `now + duration`, saturating at [`end_of_time`].
pub(crate) fn after(now: Timestamp, duration: std::time::Duration) -> Timestamp {
    chrono::Duration::from_std(duration)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .map_or_else(end_of_time, |t| t.min(end_of_time()))
}

/// `now - duration`, saturating.
pub(crate) fn before(now: Timestamp, duration: std::time::Duration) -> Timestamp {
    chrono::Duration::from_std(duration)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
}

/// A duration as the manifest writes it: whole seconds as `2s`, else milliseconds (`150ms`).
pub(crate) fn humanize(duration: Duration) -> String {
    if duration.as_secs() >= 1 && duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

/// How far along a running job is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Progress {
    /// 0 to 100.
    pub percent: u8,
    /// What it is doing.
    pub message: String,
}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobError {
    /// The error's message.
    pub message: String,
    /// Its sources, outermost first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<String>,
}

impl JobError {
    /// An error with a message and no sources.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            chain: Vec::new(),
        }
    }
}

/// One run of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attempt {
    /// 1 for the first run.
    pub number: u32,
    /// The worker that ran it.
    pub worker: String,
    /// When it started.
    #[schema(value_type = String, format = DateTime)]
    pub started_at: Timestamp,
    /// When it ended, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<Timestamp>,
    /// Why it failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
}

impl Attempt {
    /// How long it ran, if it ended.
    pub fn duration(&self) -> Option<Duration> {
        self.finished_at
            .and_then(|end| (end - self.started_at).to_std().ok())
    }
}

/// A worker's claim on a running job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The worker holding it.
    pub worker: String,
    /// When it lapses without a heartbeat.
    pub expires_at: Timestamp,
    /// The fencing token: a complete or fail must carry it.
    pub token: u64,
}

/// Everything recorded about a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub queue: String,
    pub kind: String,
    pub payload: Payload,
    pub priority: i32,
    /// When it may run next.
    pub run_at: Timestamp,
    /// Attempts started so far.
    pub attempt: u32,
    pub max_attempts: u32,
    #[serde(with = "duration_ms", skip_serializing_if = "Option::is_none", default)]
    pub timeout: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub headers: BTreeMap<String, String>,
    pub state: JobState,
    pub created_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Payload>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    /// The key its queue's `concurrency_limit` counts it under.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub limit_key: Option<String>,
    /// The key its queue's `unique` rule (or its sender) gave it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub unique_key: Option<String>,
    /// The key its queue's `debounce` rule (or its sender) gave it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub debounce_key: Option<String>,
    /// Times its handler snoozed it (`TaskError::snooze`): each put it back without spending an
    /// attempt.
    #[serde(skip_serializing_if = "is_zero", default)]
    pub snoozes: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Job {
    /// The record of a job just enqueued at `now`.
    pub fn from_new(new: NewJob, now: Timestamp) -> Self {
        let run_at = new.run_at.unwrap_or(now);
        let state = if run_at > now {
            JobState::Scheduled
        } else {
            JobState::Queued
        };
        Self {
            id: new.id,
            queue: new.queue,
            kind: new.kind,
            payload: new.payload,
            priority: new.priority,
            run_at,
            attempt: 0,
            max_attempts: new.max_attempts.max(1),
            timeout: new.timeout,
            idempotency_key: new.idempotency_key,
            tenant: new.tenant,
            headers: new.headers,
            state,
            created_at: now,
            started_at: None,
            finished_at: None,
            progress: None,
            result: None,
            error: None,
            attempts: Vec::new(),
            lease: None,
            limit_key: new.limit_key,
            unique_key: new.unique.map(|u| u.key),
            debounce_key: new.debounce.map(|d| d.key),
            snoozes: 0,
        }
    }

    /// The fencing token of the current lease, if running.
    pub fn lease_token(&self) -> Option<u64> {
        self.lease.as_ref().map(|l| l.token)
    }
}

/// Durations as whole milliseconds in JSON.
mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}
