//! Where jobs, their status, key/value entries and events live.
//!
//! [`JobStore`] is the core: enqueue, claim under a lease, complete, fail, cancel, release,
//! recover. The other traits are abilities every store here has but a caller may need only
//! some of: [`DeadLetters`], [`QueueControl`], [`KvStore`], [`EventLog`], [`CronTicks`] and
//! [`Retention`]. [`Store`] is all of them.
//!
//! Every operation is one atomic transition. Operations that depend on time take `now`, so the
//! engine passes the clock and tests control it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::event::Event;
use crate::job::{Job, JobError, JobId, JobState, NewJob, Progress, Timestamp};

pub(crate) mod fair;
pub mod memory;
pub mod rate;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub(crate) mod status;
mod transition;

pub use status::JobStatus;
pub(crate) use transition::{after, before};

/// What an enqueue did with one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", content = "id", rename_all = "snake_case")]
pub enum Enqueued {
    /// The job was added.
    New(JobId),
    /// A job with the same idempotency key exists on that queue, or one its unique rule holds
    /// for, or (leading debounce) one of its burst started it: this is its id.
    Duplicate(JobId),
    /// A waiting job of its burst took its payload (trailing debounce): this is its id.
    Debounced(JobId),
}

impl Enqueued {
    /// The id of the job that holds the work.
    pub fn id(self) -> JobId {
        match self {
            Enqueued::New(id) | Enqueued::Duplicate(id) | Enqueued::Debounced(id) => id,
        }
    }
}

/// What happens to a job whose attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Try again, not before `at`.
    Retry {
        /// The earliest next attempt.
        at: Timestamp,
    },
    /// Make it a dead letter.
    Dead,
}

/// The answer to a heartbeat for one lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseStatus {
    /// Still held; extended.
    Extended,
    /// No longer held: the job was recovered, or finished or removed elsewhere. Stop and discard.
    Lost,
    /// The job was cancelled: stop.
    Cancelled,
}

/// What a cancel did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelOutcome {
    /// The job was waiting and will not run.
    Cancelled,
    /// The job was running; its lease is revoked and its worker is told to stop.
    CancelledRunning,
    /// The job had already finished in this state.
    AlreadyFinished(JobState),
}

/// A job taken back from a worker whose lease lapsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// The job.
    pub id: JobId,
    /// Its queue.
    pub queue: String,
    /// Where it went: `Queued` for another attempt, `Dead` when out of attempts.
    pub state: JobState,
}

/// What the new jobs of one enqueue ask of their tenants' quotas
/// ([`NewJob::max_waiting`]): per queue and tenant, how many would be added and the quota (the
/// smallest one they name). Jobs without a tenant or a quota ask nothing.
pub(crate) fn quota_demands<'a>(
    jobs: impl IntoIterator<Item = &'a NewJob>,
) -> BTreeMap<(&'a str, &'a str), (u64, u64)> {
    let mut demands: BTreeMap<(&str, &str), (u64, u64)> = BTreeMap::new();
    for job in jobs {
        if let (Some(tenant), Some(max)) = (&job.tenant, job.max_waiting) {
            let demand = demands
                .entry((job.queue.as_str(), tenant.as_str()))
                .or_insert((0, max));
            demand.0 += 1;
            demand.1 = demand.1.min(max);
        }
    }
    demands
}

/// Whether `adding` more jobs keep a tenant with `waiting` jobs in `queue` within `max`.
pub(crate) fn within_quota(queue: &str, waiting: u64, adding: u64, max: u64) -> Result<()> {
    if waiting.saturating_add(adding) > max {
        return Err(Error::QuotaQueued {
            queue: queue.to_owned(),
            waiting,
            max,
        });
    }
    Ok(())
}

/// Which jobs to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Only these queues (any when empty).
    pub queues: Vec<String>,
    /// Only these states (any when empty).
    pub states: Vec<JobState>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only this tenant.
    pub tenant: Option<String>,
}

impl JobFilter {
    /// Whether `job` passes the filter.
    pub fn matches(&self, job: &Job) -> bool {
        (self.queues.is_empty() || self.queues.contains(&job.queue))
            && (self.states.is_empty() || self.states.contains(&job.state))
            && self.kind.as_ref().is_none_or(|k| *k == job.kind)
            && self
                .tenant
                .as_ref()
                .is_none_or(|t| job.tenant.as_ref() == Some(t))
    }
}

/// A page of a listing ordered by job id, newest first. `next` continues after the last item;
/// it stays valid while jobs are added or removed.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Where the next page starts, if there is one.
    pub next: Option<JobId>,
}

/// How many jobs of a queue are in each state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StateCounts {
    pub queued: u64,
    pub scheduled: u64,
    pub running: u64,
    pub succeeded: u64,
    pub retrying: u64,
    pub dead: u64,
    pub cancelled: u64,
}

impl StateCounts {
    /// Adds `n` to the count of `state`.
    pub fn add(&mut self, state: JobState, n: u64) {
        *self.get_mut(state) += n;
    }

    /// Subtracts `n` from the count of `state` (never below zero).
    pub fn remove(&mut self, state: JobState, n: u64) {
        let count = self.get_mut(state);
        *count = count.saturating_sub(n);
    }

    /// The count of `state`.
    pub fn get(&self, state: JobState) -> u64 {
        match state {
            JobState::Queued => self.queued,
            JobState::Scheduled => self.scheduled,
            JobState::Running => self.running,
            JobState::Succeeded => self.succeeded,
            JobState::Retrying => self.retrying,
            JobState::Dead => self.dead,
            JobState::Cancelled => self.cancelled,
        }
    }

    fn get_mut(&mut self, state: JobState) -> &mut u64 {
        match state {
            JobState::Queued => &mut self.queued,
            JobState::Scheduled => &mut self.scheduled,
            JobState::Running => &mut self.running,
            JobState::Succeeded => &mut self.succeeded,
            JobState::Retrying => &mut self.retrying,
            JobState::Dead => &mut self.dead,
            JobState::Cancelled => &mut self.cancelled,
        }
    }

    /// Jobs waiting to run: queued, scheduled and retrying.
    pub fn waiting(&self) -> u64 {
        self.queued + self.scheduled + self.retrying
    }
}

/// A key/value entry.
#[derive(Debug, Clone, PartialEq)]
pub struct KvEntry {
    /// The value's bytes.
    pub value: Vec<u8>,
    /// Optional JSON metadata.
    pub metadata: Option<serde_json::Value>,
    /// When it stops existing.
    pub expires_at: Option<Timestamp>,
}

/// A key in a listing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KvKey {
    /// The key.
    pub name: String,
    /// When it expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// Its metadata.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
}

/// A page of keys in key order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KvPage {
    /// The keys.
    pub keys: Vec<KvKey>,
    /// Whether this is the last page.
    pub list_complete: bool,
    /// Pass it back to get the next page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

impl KvPage {
    /// The page of `limit` keys that `keys` begins, where `keys` was read in key order with
    /// one key more than `limit` to tell whether another page follows.
    pub(crate) fn of(mut keys: Vec<KvKey>, limit: usize) -> Self {
        let list_complete = keys.len() <= limit;
        keys.truncate(limit);
        let cursor = if list_complete {
            None
        } else {
            keys.last().map(|k| k.name.clone())
        };
        Self {
            keys,
            list_complete,
            cursor,
        }
    }
}

/// How long finished jobs of one queue are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Succeeded jobs.
    pub succeeded: Duration,
    /// Cancelled jobs.
    pub failed: Duration,
    /// Dead letters.
    pub dead: Duration,
}

/// What a retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Job records (and their status documents).
    pub jobs: u64,
    /// Expired key/value entries.
    pub kv_entries: u64,
    /// Events older than the event horizon.
    pub events: u64,
}

/// Where job status documents are written, and for how long they live after the job ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCache {
    /// The kv_cache's name: its namespace in the store.
    pub namespace: String,
    /// Lifetime of a finished job's document; `None` follows the job's retention.
    pub ttl: Option<Duration>,
}

/// What a claim observes beyond its batch size: limits that hold across every process sharing
/// the store, because the store checks them in the step that takes the jobs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClaimLimits {
    /// Most jobs of one queue a tenant may have running at once (jobs without a tenant are not
    /// limited).
    pub running_per_tenant: Option<u32>,
    /// Most jobs of the queue running at once (`concurrency_limit` without a key).
    pub running: Option<u32>,
    /// Most jobs running at once per limit key of a tenant ([`NewJob::limit_key`]; jobs
    /// without one share the key `""`): `concurrency_limit` with a key.
    pub running_per_key: Option<u32>,
    /// Most jobs of the queue started per period (`rate_limit`): a token bucket in the store,
    /// one token per job started.
    pub rate: Option<rate::Limit>,
}

impl ClaimLimits {
    /// Whether any limit beyond a tenant's applies.
    pub fn limits_flow(&self) -> bool {
        self.running.is_some() || self.running_per_key.is_some() || self.rate.is_some()
    }
}

/// How many more jobs may start under a cap of `max` with `running` running (`usize::MAX`
/// without a cap).
pub(crate) fn room(max: Option<u32>, running: u64) -> usize {
    max.map_or(usize::MAX, |max| {
        usize::try_from(u64::from(max).saturating_sub(running)).unwrap_or(usize::MAX)
    })
}

/// The core of a store: jobs and their transitions.
#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Adds jobs, all or none; a job whose idempotency key exists on its queue is not added
    /// and the existing id is returned instead.
    async fn enqueue(&self, jobs: Vec<NewJob>, now: Timestamp) -> Result<Vec<Enqueued>>;

    /// Takes up to `limit` ready jobs of `queue` for `worker`, leased until `now + lease`:
    /// highest priority first; among tenants whose best waiting job has that priority, the
    /// tenant served longest ago (jobs without a tenant form a group of their own); within a
    /// tenant, earliest run time, then insertion order. Due scheduled and
    /// retrying jobs count as ready. A paused queue yields nothing. A tenant already running
    /// `limits.running_per_tenant` jobs of `queue` gets none until one of them ends.
    async fn claim_with(
        &self,
        queue: &str,
        worker: &str,
        limit: usize,
        lease: Duration,
        limits: ClaimLimits,
        now: Timestamp,
    ) -> Result<Vec<Job>>;

    /// [`claim_with`](Self::claim_with) without limits beyond `limit`.
    async fn claim(
        &self,
        queue: &str,
        worker: &str,
        limit: usize,
        lease: Duration,
        now: Timestamp,
    ) -> Result<Vec<Job>> {
        self.claim_with(queue, worker, limit, lease, ClaimLimits::default(), now)
            .await
    }

    /// Extends the leases of running jobs to `now + lease`, one answer per lease.
    async fn heartbeat(
        &self,
        leases: &[(JobId, u64)],
        lease: Duration,
        now: Timestamp,
    ) -> Result<Vec<LeaseStatus>>;

    /// Records a running job's progress.
    async fn progress(
        &self,
        id: JobId,
        token: u64,
        progress: Progress,
        now: Timestamp,
    ) -> Result<()>;

    /// Finishes a running job with its result.
    async fn complete(
        &self,
        id: JobId,
        token: u64,
        result: crate::job::Payload,
        now: Timestamp,
    ) -> Result<()>;

    /// Records a failed attempt; then the job retries or becomes a dead letter.
    async fn fail(
        &self,
        id: JobId,
        token: u64,
        error: JobError,
        then: AfterFailure,
        now: Timestamp,
    ) -> Result<()>;

    /// Puts a running job back in its queue without counting the attempt (worker shutdown).
    async fn release(&self, id: JobId, token: u64, now: Timestamp) -> Result<()>;

    /// Puts a running job back in its queue without counting the attempt, not to run before
    /// `until`, counting a snooze ([`Job::snoozes`]) and recording a `snoozed` event with
    /// `detail`.
    async fn snooze(
        &self,
        id: JobId,
        token: u64,
        until: Timestamp,
        detail: &str,
        now: Timestamp,
    ) -> Result<()>;

    /// Cancels a waiting or running job.
    async fn cancel(&self, id: JobId, now: Timestamp) -> Result<CancelOutcome>;

    /// Takes back running jobs whose lease lapsed (or that have none): another attempt if they
    /// have attempts left, else a dead letter.
    async fn recover(&self, now: Timestamp) -> Result<Vec<Recovered>>;

    /// Marks due scheduled and retrying jobs as queued; returns how many.
    async fn promote(&self, now: Timestamp) -> Result<u64>;

    /// A job by id.
    async fn get(&self, id: JobId) -> Result<Option<Job>>;

    /// Whether the store can take work now (for `/readyz`): by default, whether it answers a
    /// read. A store whose writes take another path than its reads checks that path too.
    async fn ready(&self) -> Result<()> {
        self.get(JobId::default()).await.map(drop)
    }

    /// Up to `limit` jobs of every queue and state whose id is `from` or later, in id order:
    /// what the status kv_cache lists (see [`KvCache`](crate::KvCache)).
    async fn jobs_from(&self, from: JobId, limit: usize) -> Result<Vec<Job>>;

    /// Jobs passing `filter`, newest first, `limit` at most, after the cursor `after`.
    async fn list(
        &self,
        filter: &JobFilter,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Page<Job>>;

    /// Counts per state, per queue.
    async fn counts(&self) -> Result<BTreeMap<String, StateCounts>>;

    /// When the longest-waiting ready job of `queue` was due.
    async fn oldest_ready(&self, queue: &str, now: Timestamp) -> Result<Option<Timestamp>>;

    /// How many jobs of `tenant` wait (queued, scheduled or retrying) in `queue`. Counting may
    /// stop once it reaches `up_to`: the answer is then at least `up_to`.
    async fn count_waiting(&self, queue: &str, tenant: &str, up_to: u64) -> Result<u64> {
        let filter = JobFilter {
            queues: vec![queue.to_owned()],
            states: vec![JobState::Queued, JobState::Scheduled, JobState::Retrying],
            kind: None,
            tenant: Some(tenant.to_owned()),
        };
        let mut counted = 0;
        let mut after = None;
        loop {
            let page = self.list(&filter, after, 500).await?;
            counted += page.items.len() as u64;
            match page.next {
                Some(next) if counted < up_to => after = Some(next),
                _ => return Ok(counted),
            }
        }
    }

    /// How many jobs of `tenant` `queue` holds in each state: from the tenant's own index,
    /// at a cost of its jobs at most, not the queue's.
    async fn tenant_counts(&self, queue: &str, tenant: &str) -> Result<StateCounts>;

    /// How many of `queue`'s queued jobs a claim under `limits` at `now` would pass over
    /// because a limit holds them: all of them while the queue runs its `running` cap or its
    /// bucket of starts is empty; else those of the tenants and keys at their running limits.
    /// The cost is one look per group (tenant or key) with jobs waiting, as for a claim.
    async fn held_by_limits(&self, queue: &str, limits: ClaimLimits, now: Timestamp)
    -> Result<u64>;

    /// Notified when jobs of `queue` may have become ready in another process, so idle workers
    /// wake at once; `None` when the store cannot tell (workers then poll).
    fn queue_wake(&self, queue: &str) -> Option<Arc<tokio::sync::Notify>> {
        let _ = queue;
        None
    }
}

/// Listing, retrying and purging dead letters.
#[async_trait]
pub trait DeadLetters: JobStore {
    /// Dead letters, newest first.
    async fn dead_letters(
        &self,
        queue: Option<&str>,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Page<Job>> {
        let filter = JobFilter {
            queues: queue.map(str::to_owned).into_iter().collect(),
            states: vec![JobState::Dead],
            ..JobFilter::default()
        };
        self.list(&filter, after, limit).await
    }

    /// Puts a dead letter back in its queue with a fresh set of attempts.
    async fn retry_dead(&self, id: JobId, now: Timestamp) -> Result<()>;
    /// Removes dead letters (of one queue, or all); returns how many.
    async fn purge_dead(&self, queue: Option<&str>) -> Result<u64>;
}

/// Pausing and resuming queues.
#[async_trait]
pub trait QueueControl: Send + Sync + 'static {
    /// Stops claims from `queue`; jobs are still accepted.
    async fn pause(&self, queue: &str) -> Result<()>;
    /// Lets claims from `queue` resume.
    async fn resume(&self, queue: &str) -> Result<()>;
    /// The paused queues.
    async fn paused(&self) -> Result<Vec<String>>;
}

/// Key/value entries in namespaces (one per kv_cache).
#[async_trait]
pub trait KvStore: Send + Sync + 'static {
    /// The entry, unless missing or expired.
    async fn kv_get(&self, namespace: &str, key: &str, now: Timestamp) -> Result<Option<KvEntry>>;
    /// Writes an entry.
    async fn kv_put(&self, namespace: &str, key: &str, entry: KvEntry) -> Result<()>;
    /// Removes an entry; whether it existed.
    async fn kv_delete(&self, namespace: &str, key: &str) -> Result<bool>;
    /// Live keys starting with `prefix` in key order, after `cursor`, `limit` at most.
    async fn kv_list(
        &self,
        namespace: &str,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
        now: Timestamp,
    ) -> Result<KvPage>;
}

/// The lifecycle event feed, written by every transition.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Events with `seq > after`, oldest first, `limit` at most.
    async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>>;
    /// The latest event's seq (0 when there is none).
    async fn last_event_seq(&self) -> Result<u64>;

    /// How many events of `kind` happened since `since`, per queue.
    async fn count_events(
        &self,
        kind: crate::event::EventKind,
        since: Timestamp,
    ) -> Result<BTreeMap<String, u64>>;

    /// Notified after this process appends events, so followers in this process wake at once
    /// (followers of other processes' events poll).
    fn event_notify(&self) -> Arc<tokio::sync::Notify>;
}

/// Exactly-once cron ticks across processes.
#[async_trait]
pub trait CronTicks: Send + Sync + 'static {
    /// Claims the tick of `task` scheduled at `tick`; true for exactly one caller.
    async fn claim_tick(&self, task: &str, tick: Timestamp, now: Timestamp) -> Result<bool>;
}

/// Named leases held by one process at a time, across every process sharing the store: the
/// monitor's leadership, so that one observer process of an application publishes the queue
/// gauges.
#[async_trait]
pub trait Leadership: Send + Sync + 'static {
    /// Takes the lease `name` for `holder` until `now + ttl` when it is free or its holder's
    /// lease has passed, or renews it when `holder` holds it, in one atomic step; true when
    /// `holder` holds it afterwards, false while another holder's lease runs.
    async fn try_lead(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<bool>;
}

/// Removing what has outlived its retention.
#[async_trait]
pub trait Retention: Send + Sync + 'static {
    /// Removes finished jobs older than their queue's policy (`default` for queues not in
    /// `policies`), expired key/value entries, and events older than `events`.
    async fn purge_expired(
        &self,
        policies: &BTreeMap<String, RetentionPolicy>,
        default: RetentionPolicy,
        events: Duration,
        now: Timestamp,
    ) -> Result<Purged>;
}

/// Rate limits shared by every process that shares the store (the Redis store), or by the
/// callers in this process (memory, SQLite).
#[async_trait]
pub trait RateLimits: Send + Sync + 'static {
    /// Takes a token from the bucket `key` under `limit` at `now`, if there is one.
    async fn take_token(
        &self,
        key: &str,
        limit: &rate::Limit,
        now: Timestamp,
    ) -> Result<rate::Decision>;
}

/// A store with every ability.
pub trait Store:
    JobStore
    + DeadLetters
    + QueueControl
    + KvStore
    + EventLog
    + CronTicks
    + Leadership
    + Retention
    + RateLimits
{
}

impl<
    T: JobStore
        + DeadLetters
        + QueueControl
        + KvStore
        + EventLog
        + CronTicks
        + Leadership
        + Retention
        + RateLimits,
> Store for T
{
}

/// Which store to use, from `RAINDROP_STORE` or `--store`: `memory`, `sqlite:PATH`,
/// `redis://HOST:PORT/DB` or `redis-cluster://HOST:PORT,HOST:PORT` (either with `?prefix=NAME`).
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// In this process only.
    Memory,
    /// An SQLite file, and what its commits survive.
    Sqlite(std::path::PathBuf, Durability),
    /// A Redis server or cluster; the URL may hold a password, so it is never printed whole.
    Redis(String),
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::Memory => f.write_str("memory"),
            StoreUrl::Sqlite(path, Durability::Process) => write!(f, "sqlite:{}", path.display()),
            StoreUrl::Sqlite(path, Durability::Power) => {
                write!(f, "sqlite:{}?durability=power", path.display())
            }
            StoreUrl::Redis(url) => f.write_str(&redact_url(url)),
        }
    }
}

/// `url` with its user-info part (which may hold a password) hidden.
pub(crate) fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    }
}

/// What an acknowledged write to an SQLite store survives: the setting `?durability=` of a
/// `sqlite:` store URL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// The process being killed (`kill -9`, a crash, an OOM kill), not the machine losing
    /// power: the write-ahead log is synced to disk at checkpoints, not at each commit
    /// (`PRAGMA synchronous = NORMAL`). The default.
    #[default]
    Process,
    /// Power loss too: each commit syncs the write-ahead log before it is acknowledged
    /// (`PRAGMA synchronous = FULL`), at the cost of an fsync per commit (group commit shares
    /// it among the operations committed together).
    Power,
}

impl Durability {
    /// The value of `PRAGMA synchronous` it takes.
    pub fn synchronous(self) -> &'static str {
        match self {
            Durability::Process => "NORMAL",
            Durability::Power => "FULL",
        }
    }
}

/// The SQLite file used when nothing is configured.
pub const DEFAULT_SQLITE_PATH: &str = ".raindrop/raindrop.db";

impl StoreUrl {
    /// Parses a store URL; an empty or absent one means SQLite at the default path.
    pub fn parse(url: Option<&str>) -> Result<Self> {
        match url.map(str::trim) {
            None | Some("") => Ok(StoreUrl::Sqlite(
                DEFAULT_SQLITE_PATH.into(),
                Durability::default(),
            )),
            Some("memory") => Ok(StoreUrl::Memory),
            Some("sqlite") => Ok(StoreUrl::Sqlite(
                DEFAULT_SQLITE_PATH.into(),
                Durability::default(),
            )),
            Some(redis)
                if ["redis://", "rediss://", "redis-cluster://", "redis+unix://"]
                    .iter()
                    .any(|scheme| redis.starts_with(scheme)) =>
            {
                Ok(StoreUrl::Redis(redis.to_owned()))
            }
            Some(other) => match other.split_once(':') {
                Some(("sqlite", path)) if !path.is_empty() => {
                    let (path, durability) = match path.rsplit_once("?durability=") {
                        Some((path, "process")) => (path, Durability::Process),
                        Some((path, "power")) => (path, Durability::Power),
                        Some((_, other)) => {
                            return Err(Error::Config(format!(
                                "SQLite durability is `process` or `power`, not `{other}`"
                            )));
                        }
                        None => (path, Durability::default()),
                    };
                    Ok(StoreUrl::Sqlite(
                        path.trim_start_matches("//").into(),
                        durability,
                    ))
                }
                _ => Err(Error::Config(format!(
                    "unknown store `{}`: use `memory`, `sqlite:PATH` (default `sqlite:{DEFAULT_SQLITE_PATH}`), `redis://HOST:PORT/DB` or `redis-cluster://HOST:PORT,…`",
                    redact_url(other)
                ))),
            },
        }
    }

    /// From the `RAINDROP_STORE` environment variable.
    pub fn from_env() -> Result<Self> {
        Self::parse(std::env::var("RAINDROP_STORE").ok().as_deref())
    }
}

/// Opens the store `url` names.
pub async fn open(url: &StoreUrl) -> Result<Arc<dyn Store>> {
    match url {
        StoreUrl::Memory => Ok(Arc::new(memory::MemoryStore::new())),
        #[cfg(feature = "sqlite")]
        StoreUrl::Sqlite(path, durability) => Ok(Arc::new(
            sqlite::SqliteStore::open_with(path, *durability).await?,
        )),
        #[cfg(not(feature = "sqlite"))]
        StoreUrl::Sqlite(..) => Err(Error::Config(
            "this build has no SQLite store (feature `sqlite`)".into(),
        )),
        #[cfg(feature = "redis")]
        StoreUrl::Redis(url) => Ok(Arc::new(redis::RedisStore::open(url).await?)),
        #[cfg(not(feature = "redis"))]
        StoreUrl::Redis(_) => Err(Error::Config(
            "this build has no Redis store (feature `redis`)".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_default_to_sqlite() {
        assert_eq!(
            StoreUrl::parse(None).unwrap(),
            StoreUrl::Sqlite(DEFAULT_SQLITE_PATH.into(), Durability::Process)
        );
        assert_eq!(StoreUrl::parse(Some("memory")).unwrap(), StoreUrl::Memory);
        assert_eq!(
            StoreUrl::parse(Some("sqlite:/tmp/x.db")).unwrap(),
            StoreUrl::Sqlite("/tmp/x.db".into(), Durability::Process)
        );
        let power = StoreUrl::parse(Some("sqlite:/tmp/x.db?durability=power")).unwrap();
        assert_eq!(
            power,
            StoreUrl::Sqlite("/tmp/x.db".into(), Durability::Power)
        );
        assert_eq!(power.to_string(), "sqlite:/tmp/x.db?durability=power");
        let err = StoreUrl::parse(Some("sqlite:x.db?durability=disk")).unwrap_err();
        assert!(err.to_string().contains("`process` or `power`"), "{err}");
        let err = StoreUrl::parse(Some("postgres://x"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("use `memory`, `sqlite:PATH`"), "{err}");
        let redis = StoreUrl::parse(Some("redis://:hunter2@db:6379/1?prefix=x")).unwrap();
        assert_eq!(
            redis,
            StoreUrl::Redis("redis://:hunter2@db:6379/1?prefix=x".into())
        );
        assert_eq!(redis.to_string(), "redis://***@db:6379/1?prefix=x");
        assert!(!format!("{redis:?}").contains("hunter2"));
    }
}
