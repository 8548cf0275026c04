//! A store in this process's memory: for tests and throwaway runs. Nothing survives a restart.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

mod claim;
mod indexes;

use super::ClaimLimits;
use super::transition::{self, Emitted};
use super::{
    AfterFailure, CancelOutcome, CronTicks, DeadLetters, Enqueued, EventLog, JobFilter, JobStore,
    KvEntry, KvKey, KvPage, KvStore, Leadership, LeaseStatus, Page, Purged, QueueControl,
    Recovered, Retention, RetentionPolicy, StateCounts,
};
use crate::error::{Error, Result};
use crate::event::{Event, EventKind};
use crate::job::{Folding, Job, JobError, JobId, JobState, NewJob, Payload, Progress, Timestamp};

/// Events kept at most, oldest dropped first, so a long run cannot grow without bound.
const MAX_EVENTS: usize = 100_000;

/// The in-memory store.
#[derive(Debug)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    notify: Arc<Notify>,
    buckets: super::rate::LocalBuckets,
}

/// An idempotency key as it is scoped: queue, tenant, key.
type IdempotencyKey = (String, Option<String>, String);

/// The scoped idempotency key of a job with `key`.
fn idempotency_key(queue: &str, tenant: Option<&String>, key: &str) -> IdempotencyKey {
    (queue.to_owned(), tenant.cloned(), key.to_owned())
}

/// Ready-queue order: highest priority, then earliest run time, then insertion order.
type ReadyKey = (Reverse<i32>, Timestamp, u64);

/// A `HashMap` with a fast hasher: the store's keys are its own (ids it made, queue and tenant
/// names the application served), and SipHash was a tenth of the engine's work per job.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type FastSet<K> = HashSet<K, foldhash::fast::RandomState>;

#[derive(Debug, Default)]
struct Inner {
    /// Every job, in id order. (A hash map by id beside the ordered ids cost 4% fewer
    /// instructions per job, but moved every job at each of its resizes, under the lock
    /// producers and workers share: live throughput fell by a fifth.)
    jobs: BTreeMap<JobId, Job>,
    insertion: FastMap<JobId, u64>,
    next_insertion: u64,
    /// Where each job is filed for its state, and the counts.
    idx: Indexes,
    /// When each queue's tenants were last served ("" for jobs without one), and the next turn.
    turns: HashMap<(String, String), u64>,
    next_turn: u64,
    /// How many turns may be kept before those of idle keys are looked for (see [`TURNS_KEPT`]).
    turns_kept: usize,
    /// Idempotency keys per queue and tenant.
    idempotency: HashMap<IdempotencyKey, JobId>,
    /// Unique keys per queue and tenant: the latest job sent with each.
    unique: HashMap<IdempotencyKey, JobId>,
    /// Debounce keys per queue and tenant: the latest job of each burst.
    debounce: HashMap<IdempotencyKey, JobId>,
    /// Each tenant's jobs, for its listings.
    by_tenant: HashMap<String, BTreeSet<JobId>>,
    paused: HashSet<String>,
    next_token: u64,
    kv: HashMap<String, BTreeMap<String, KvEntry>>,
    feed: Feed,
    ticks: HashMap<(String, Timestamp), Timestamp>,
    /// Named leases: their holder and when their lease ends.
    leads: HashMap<String, (String, Timestamp)>,
    /// Each rate-limited queue's bucket of job starts: its next token's theoretical arrival,
    /// in µs.
    start_buckets: HashMap<String, i64>,
}

/// The indexes a job is filed under for its state, kept as jobs move so claiming and counting
/// read no job they do not return.
#[derive(Debug, Default)]
struct Indexes {
    /// Queued jobs per queue, then per group: a tenant ("" for none), or a tenant's limit key
    /// (see [`fair::group_name`]).
    ready: FastMap<String, BTreeMap<String, BTreeMap<ReadyKey, JobId>>>,
    delayed: BTreeMap<(Timestamp, u64), JobId>,
    running: FastSet<JobId>,
    /// Running jobs per queue and tenant, for jobs with a tenant.
    running_per_tenant: HashMap<(String, String), u32>,
    /// Running jobs per queue and group, for jobs with a limit key.
    running_per_key: HashMap<(String, String), u32>,
    /// Jobs per queue and state, kept as jobs move so counting is free.
    counts: FastMap<String, StateCounts>,
    /// Jobs per queue, tenant and state: a tenant's counts and its quota of waiting jobs.
    counts_per_tenant: HashMap<(String, String), StateCounts>,
}

/// The lifecycle events kept, oldest first.
#[derive(Debug, Default)]
struct Feed {
    events: VecDeque<Event>,
    next_event: u64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            notify: Arc::new(Notify::new()),
            buckets: super::rate::LocalBuckets::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-made transition visible: each
        // transition validates before it mutates. Keep serving.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records `kind` for `job`.
    fn emit(
        &self,
        feed: &mut Feed,
        job: &Job,
        kind: EventKind,
        detail: Option<String>,
        now: Timestamp,
    ) {
        feed.next_event += 1;
        let event = Event {
            seq: feed.next_event,
            at: now,
            kind,
            job: job.id,
            queue: job.queue.clone(),
            state: job.state,
            attempt: job.attempt,
            detail,
        };
        if feed.events.len() == MAX_EVENTS {
            feed.events.pop_front();
        }
        feed.events.push_back(event);
    }
}

impl Inner {
    /// The order job `id` was inserted in (the last tie-break of the ready order).
    fn order(&self, id: JobId) -> u64 {
        self.insertion.get(&id).copied().unwrap_or_default()
    }

    /// Files job `id` under the index its state calls for.
    fn index(&mut self, id: JobId) {
        let order = self.order(id);
        if let Some(job) = self.jobs.get(&id) {
            self.idx.add(job, order);
        }
    }

    /// Removes job `id` from every index.
    fn unindex(&mut self, id: JobId) {
        let order = self.order(id);
        if let Some(job) = self.jobs.get(&id) {
            self.idx.remove(job, order, (job.state, job.run_at));
        }
    }

    /// Moves due delayed jobs to the ready index; returns how many.
    fn promote(&mut self, now: Timestamp) -> u64 {
        let mut due = Vec::new();
        while let Some(entry) = self.idx.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            due.push(entry.remove());
        }
        for id in &due {
            self.unindex(*id);
            if let Some(job) = self.jobs.get_mut(id) {
                job.state = JobState::Queued;
            }
            self.index(*id);
        }
        due.len() as u64
    }

    /// The job that `new`, sent at `now`, would duplicate: one with its idempotency key, one
    /// its unique rule holds for, or its id.
    fn existing(&self, new: &NewJob, now: Timestamp) -> Option<JobId> {
        if let Some(key) = &new.idempotency_key
            && let Some(existing) =
                self.idempotency
                    .get(&idempotency_key(&new.queue, new.tenant.as_ref(), key))
        {
            return Some(*existing);
        }
        if let Some(rule) = &new.unique
            && let Some(existing) =
                self.unique
                    .get(&idempotency_key(&new.queue, new.tenant.as_ref(), &rule.key))
            && self
                .jobs
                .get(existing)
                .is_some_and(|job| rule.holds(job, now))
        {
            return Some(*existing);
        }
        self.jobs.contains_key(&new.id).then_some(new.id)
    }

    fn remove_job(&mut self, id: JobId) -> Option<Job> {
        self.unindex(id);
        self.insertion.remove(&id);
        let job = self.jobs.remove(&id)?;
        if let Some(tenant) = &job.tenant
            && let Some(ids) = self.by_tenant.get_mut(tenant)
        {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_tenant.remove(tenant);
            }
        }
        if let Some(key) = &job.idempotency_key {
            let scoped = idempotency_key(&job.queue, job.tenant.as_ref(), key);
            self.idempotency.remove(&scoped);
        }
        if let Some(key) = &job.unique_key {
            let scoped = idempotency_key(&job.queue, job.tenant.as_ref(), key);
            if self.unique.get(&scoped) == Some(&id) {
                self.unique.remove(&scoped);
            }
        }
        if let Some(key) = &job.debounce_key {
            let scoped = idempotency_key(&job.queue, job.tenant.as_ref(), key);
            if self.debounce.get(&scoped) == Some(&id) {
                self.debounce.remove(&scoped);
            }
        }
        Some(job)
    }
}

impl MemoryStore {
    /// Applies a transition to job `id`: takes it out of its index, changes it, files it again
    /// and emits what the transition says, all under one lock; then wakes the feed's readers.
    fn apply<T>(
        &self,
        inner: &mut Inner,
        id: JobId,
        now: Timestamp,
        transition: impl FnOnce(&mut Job) -> Result<(T, Emitted)>,
    ) -> Result<T> {
        let value = self.apply_quietly(inner, id, now, transition)?;
        self.notify.notify_waiters();
        Ok(value)
    }

    /// [`Self::apply`] without waking the feed's readers: for operations on many jobs, which
    /// wake them once.
    fn apply_quietly<T>(
        &self,
        inner: &mut Inner,
        id: JobId,
        now: Timestamp,
        transition: impl FnOnce(&mut Job) -> Result<(T, Emitted)>,
    ) -> Result<T> {
        let order = inner.order(id);
        let job = inner.jobs.get_mut(&id).ok_or(Error::NotFound(id))?;
        let before = (job.state, job.run_at);
        // Transitions check before they change anything, so a refusal leaves the job as it was.
        let (value, emitted) = transition(job)?;
        inner.idx.remove(job, order, before);
        inner.idx.add(job, order);
        for (kind, detail) in emitted {
            self.emit(&mut inner.feed, job, kind, detail, now);
        }
        Ok(value)
    }
}

#[async_trait]
impl JobStore for MemoryStore {
    async fn enqueue(&self, jobs: Vec<NewJob>, now: Timestamp) -> Result<Vec<Enqueued>> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        // Each job's duplicate, if it has one; then the quotas of those that would be added,
        // checked before anything is.
        let existing: Vec<Option<JobId>> =
            jobs.iter().map(|new| inner.existing(new, now)).collect();
        let adding = jobs.iter().zip(&existing).filter(|(_, e)| e.is_none());
        for ((queue, tenant), (adding, max)) in super::quota_demands(adding.map(|(new, _)| new)) {
            let key = (queue.to_owned(), tenant.to_owned());
            let waiting = inner
                .idx
                .counts_per_tenant
                .get(&key)
                .map_or(0, StateCounts::waiting);
            super::within_quota(queue, waiting, adding, max)?;
        }
        let mut outcomes = Vec::with_capacity(jobs.len());
        for (mut new, existing) in jobs.into_iter().zip(existing) {
            // A key twice in one enqueue: the second is the first's duplicate.
            if let Some(existing) = existing.or_else(|| inner.existing(&new, now)) {
                outcomes.push(Enqueued::Duplicate(existing));
                continue;
            }
            if let Some(rule) = &new.debounce {
                let scoped = idempotency_key(&new.queue, new.tenant.as_ref(), &rule.key);
                let holder = inner
                    .debounce
                    .get(&scoped)
                    .and_then(|id| inner.jobs.get(id))
                    .map(|job| (job.id, job.state, job.created_at));
                match rule.fold(holder, new.run_at, now) {
                    Folding::Dropped(id) => {
                        outcomes.push(Enqueued::Duplicate(id));
                        continue;
                    }
                    Folding::Into(id, run_at) => {
                        self.apply_quietly(inner, id, now, |job| {
                            Ok(((), transition::debounce(job, new, run_at, now)))
                        })?;
                        outcomes.push(Enqueued::Debounced(id));
                        continue;
                    }
                    Folding::New(run_at) => new.run_at = run_at,
                }
            }
            let job = Job::from_new(new, now);
            let id = job.id;
            if let Some(tenant) = &job.tenant {
                inner
                    .by_tenant
                    .entry(tenant.clone())
                    .or_default()
                    .insert(id);
            }
            if let Some(key) = &job.idempotency_key {
                let scoped = idempotency_key(&job.queue, job.tenant.as_ref(), key);
                inner.idempotency.insert(scoped, id);
            }
            if let Some(key) = &job.unique_key {
                let scoped = idempotency_key(&job.queue, job.tenant.as_ref(), key);
                inner.unique.insert(scoped, id);
            }
            if let Some(key) = &job.debounce_key {
                let scoped = idempotency_key(&job.queue, job.tenant.as_ref(), key);
                inner.debounce.insert(scoped, id);
            }
            inner.next_insertion += 1;
            let order = inner.next_insertion;
            inner.insertion.insert(id, order);
            inner.idx.add(&job, order);
            let job = inner.jobs.entry(id).or_insert(job);
            self.emit(&mut inner.feed, job, EventKind::Enqueued, None, now);
            outcomes.push(Enqueued::New(id));
        }
        self.notify.notify_waiters();
        Ok(outcomes)
    }

    async fn claim_with(
        &self,
        queue: &str,
        worker: &str,
        limit: usize,
        lease: Duration,
        limits: ClaimLimits,
        now: Timestamp,
    ) -> Result<Vec<Job>> {
        let mut inner = self.lock();
        inner.promote(now);
        if inner.paused.contains(queue) {
            return Ok(Vec::new());
        }
        let bucket = limits.rate.map(|rate| {
            let tat = inner.start_buckets.get(queue).copied();
            (
                rate,
                tat,
                super::rate::available(tat, super::rate::micros_of(now), &rate),
            )
        });
        let limit = bucket.map_or(limit, |(_, _, tokens)| limit.min(tokens));
        let chosen = inner.choose(queue, limit, limits);
        if let Some((rate, tat, _)) = bucket
            && !chosen.is_empty()
        {
            let spent = super::rate::spend(tat, super::rate::micros_of(now), chosen.len(), &rate);
            inner.start_buckets.insert(queue.to_owned(), spent);
        }
        let expires_at = transition::after(now, lease);
        let mut claimed = Vec::with_capacity(chosen.len());
        for id in chosen {
            inner.next_token += 1;
            let token = inner.next_token;
            let job = self.apply_quietly(&mut inner, id, now, |job| {
                let emitted = transition::claim(job, worker, token, expires_at, now);
                Ok((job.clone(), emitted))
            })?;
            claimed.push(job);
        }
        if !claimed.is_empty() {
            self.notify.notify_waiters();
        }
        Ok(claimed)
    }

    async fn heartbeat(
        &self,
        leases: &[(JobId, u64)],
        lease: Duration,
        now: Timestamp,
    ) -> Result<Vec<LeaseStatus>> {
        let mut inner = self.lock();
        let expires_at = transition::after(now, lease);
        Ok(leases
            .iter()
            .map(|&(id, token)| transition::heartbeat(inner.jobs.get_mut(&id), token, expires_at))
            .collect())
    }

    async fn progress(
        &self,
        id: JobId,
        token: u64,
        progress: Progress,
        now: Timestamp,
    ) -> Result<()> {
        let mut inner = self.lock();
        self.apply(&mut inner, id, now, |job| {
            Ok(((), transition::progress(job, token, progress)?))
        })
    }

    async fn complete(&self, id: JobId, token: u64, result: Payload, now: Timestamp) -> Result<()> {
        let mut inner = self.lock();
        self.apply(&mut inner, id, now, |job| {
            Ok(((), transition::complete(job, token, result, now)?))
        })
    }

    async fn fail(
        &self,
        id: JobId,
        token: u64,
        error: JobError,
        then: AfterFailure,
        now: Timestamp,
    ) -> Result<()> {
        let mut inner = self.lock();
        self.apply(&mut inner, id, now, |job| {
            Ok(((), transition::fail(job, token, error, then, now)?))
        })
    }

    async fn release(&self, id: JobId, token: u64, now: Timestamp) -> Result<()> {
        let mut inner = self.lock();
        self.apply(&mut inner, id, now, |job| {
            Ok(((), transition::release(job, token, now)?))
        })
    }

    async fn held_by_limits(
        &self,
        queue: &str,
        limits: ClaimLimits,
        now: Timestamp,
    ) -> Result<u64> {
        Ok(self.lock().held(queue, limits, now))
    }

    async fn snooze(
        &self,
        id: JobId,
        token: u64,
        until: Timestamp,
        detail: &str,
        now: Timestamp,
    ) -> Result<()> {
        let mut inner = self.lock();
        self.apply(&mut inner, id, now, |job| {
            Ok(((), transition::snooze(job, token, until, detail, now)?))
        })
    }

    async fn cancel(&self, id: JobId, now: Timestamp) -> Result<CancelOutcome> {
        let mut inner = self.lock();
        self.apply(&mut inner, id, now, |job| Ok(transition::cancel(job, now)))
    }

    async fn recover(&self, now: Timestamp) -> Result<Vec<Recovered>> {
        let mut inner = self.lock();
        let lapsed: Vec<JobId> = inner
            .idx
            .running
            .iter()
            .copied()
            .filter(|id| {
                inner
                    .jobs
                    .get(id)
                    .is_some_and(|job| transition::lease_lapsed(job, now))
            })
            .collect();
        let mut recovered = Vec::new();
        for id in lapsed {
            let outcome = self.apply(&mut inner, id, now, |job| {
                let emitted = transition::recover(job, now);
                Ok((
                    Recovered {
                        id,
                        queue: job.queue.clone(),
                        state: job.state,
                    },
                    emitted,
                ))
            })?;
            recovered.push(outcome);
        }
        Ok(recovered)
    }

    async fn promote(&self, now: Timestamp) -> Result<u64> {
        Ok(self.lock().promote(now))
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>> {
        Ok(self.lock().jobs.get(&id).cloned())
    }

    async fn jobs_from(&self, from: JobId, limit: usize) -> Result<Vec<Job>> {
        let inner = self.lock();
        Ok(inner
            .jobs
            .range(from..)
            .take(limit)
            .map(|(_, job)| job.clone())
            .collect())
    }

    async fn list(
        &self,
        filter: &JobFilter,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Page<Job>> {
        let inner = self.lock();
        let bound = after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        let range = (std::ops::Bound::Unbounded, bound);
        // A tenant's listing reads only its own jobs.
        let jobs: Box<dyn Iterator<Item = &Job>> = match &filter.tenant {
            Some(tenant) => match inner.by_tenant.get(tenant) {
                Some(ids) => Box::new(ids.range(range).rev().filter_map(|id| inner.jobs.get(id))),
                None => Box::new(std::iter::empty()),
            },
            None => Box::new(inner.jobs.range(range).rev().map(|(_, job)| job)),
        };
        let mut items: Vec<Job> = jobs
            .filter(|job| filter.matches(job))
            .take(limit + 1)
            .cloned()
            .collect();
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|job| job.id)
        } else {
            None
        };
        Ok(Page { items, next })
    }

    async fn counts(&self) -> Result<BTreeMap<String, StateCounts>> {
        let inner = self.lock();
        Ok(inner
            .idx
            .counts
            .iter()
            .map(|(queue, counts)| (queue.clone(), counts.clone()))
            .collect())
    }

    async fn count_waiting(&self, queue: &str, tenant: &str, _up_to: u64) -> Result<u64> {
        let key = (queue.to_owned(), tenant.to_owned());
        Ok(self
            .lock()
            .idx
            .counts_per_tenant
            .get(&key)
            .map_or(0, StateCounts::waiting))
    }

    async fn tenant_counts(&self, queue: &str, tenant: &str) -> Result<StateCounts> {
        let key = (queue.to_owned(), tenant.to_owned());
        Ok(self
            .lock()
            .idx
            .counts_per_tenant
            .get(&key)
            .cloned()
            .unwrap_or_default())
    }

    async fn oldest_ready(&self, queue: &str, now: Timestamp) -> Result<Option<Timestamp>> {
        let inner = self.lock();
        let ready = inner
            .idx
            .ready
            .get(queue)
            .into_iter()
            .flat_map(BTreeMap::values)
            .flat_map(|r| r.keys().map(|(_, at, _)| *at));
        let due = inner
            .idx
            .delayed
            .iter()
            .take_while(|((at, _), _)| *at <= now)
            .filter(|(_, id)| inner.jobs.get(id).is_some_and(|j| j.queue == queue))
            .map(|((at, _), _)| *at);
        Ok(ready.chain(due).min())
    }
}

#[async_trait]
impl DeadLetters for MemoryStore {
    async fn retry_dead(&self, id: JobId, now: Timestamp) -> Result<()> {
        let mut inner = self.lock();
        self.apply(&mut inner, id, now, |job| {
            Ok(((), transition::retry_dead(job, now)?))
        })
    }

    async fn purge_dead(&self, queue: Option<&str>) -> Result<u64> {
        let mut inner = self.lock();
        let dead: Vec<JobId> = inner
            .jobs
            .values()
            .filter(|j| j.state == JobState::Dead && queue.is_none_or(|q| q == j.queue))
            .map(|j| j.id)
            .collect();
        for id in &dead {
            inner.remove_job(*id);
        }
        Ok(dead.len() as u64)
    }
}

#[async_trait]
impl QueueControl for MemoryStore {
    async fn pause(&self, queue: &str) -> Result<()> {
        self.lock().paused.insert(queue.to_owned());
        Ok(())
    }

    async fn resume(&self, queue: &str) -> Result<()> {
        self.lock().paused.remove(queue);
        Ok(())
    }

    async fn paused(&self) -> Result<Vec<String>> {
        let mut paused: Vec<String> = self.lock().paused.iter().cloned().collect();
        paused.sort();
        Ok(paused)
    }
}

fn live(entry: &KvEntry, now: Timestamp) -> bool {
    entry.expires_at.is_none_or(|at| at > now)
}

#[async_trait]
impl KvStore for MemoryStore {
    async fn kv_get(&self, namespace: &str, key: &str, now: Timestamp) -> Result<Option<KvEntry>> {
        Ok(self
            .lock()
            .kv
            .get(namespace)
            .and_then(|ns| ns.get(key))
            .filter(|e| live(e, now))
            .cloned())
    }

    async fn kv_put(&self, namespace: &str, key: &str, entry: KvEntry) -> Result<()> {
        self.lock()
            .kv
            .entry(namespace.to_owned())
            .or_default()
            .insert(key.to_owned(), entry);
        Ok(())
    }

    async fn kv_delete(&self, namespace: &str, key: &str) -> Result<bool> {
        Ok(self
            .lock()
            .kv
            .get_mut(namespace)
            .and_then(|ns| ns.remove(key))
            .is_some())
    }

    async fn kv_list(
        &self,
        namespace: &str,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
        now: Timestamp,
    ) -> Result<KvPage> {
        let inner = self.lock();
        let after = |name: &str| name.starts_with(prefix) && cursor.is_none_or(|c| name > c);
        let start = match cursor {
            Some(cursor) if cursor > prefix => cursor.to_owned(),
            _ => prefix.to_owned(),
        };
        let keys: Vec<KvKey> = inner
            .kv
            .get(namespace)
            .into_iter()
            .flat_map(|ns| ns.range(start.clone()..))
            .skip_while(|(k, _)| !after(k))
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(_, e)| live(e, now))
            .take(limit + 1)
            .map(|(k, e)| KvKey {
                name: k.clone(),
                expires_at: e.expires_at,
                metadata: e.metadata.clone(),
            })
            .collect();
        Ok(KvPage::of(keys, limit))
    }
}

#[async_trait]
impl EventLog for MemoryStore {
    async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>> {
        let inner = self.lock();
        let start = inner.feed.events.partition_point(|e| e.seq <= after);
        Ok(inner
            .feed
            .events
            .iter()
            .skip(start)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn last_event_seq(&self) -> Result<u64> {
        Ok(self.lock().feed.next_event)
    }

    async fn count_events(
        &self,
        kind: EventKind,
        since: Timestamp,
    ) -> Result<BTreeMap<String, u64>> {
        let inner = self.lock();
        let mut counts = BTreeMap::new();
        for event in inner
            .feed
            .events
            .iter()
            .rev()
            .take_while(|e| e.at >= since)
            .filter(|e| e.kind == kind)
        {
            *counts.entry(event.queue.clone()).or_default() += 1;
        }
        Ok(counts)
    }

    fn event_notify(&self) -> Arc<Notify> {
        self.notify.clone()
    }
}

#[async_trait]
impl CronTicks for MemoryStore {
    async fn claim_tick(&self, task: &str, tick: Timestamp, now: Timestamp) -> Result<bool> {
        let mut inner = self.lock();
        let key = (task.to_owned(), tick);
        if inner.ticks.contains_key(&key) {
            return Ok(false);
        }
        inner.ticks.insert(key, now);
        Ok(true)
    }
}

#[async_trait]
impl Leadership for MemoryStore {
    async fn try_lead(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<bool> {
        let mut inner = self.lock();
        if let Some((current, until)) = inner.leads.get(name)
            && current != holder
            && *until > now
        {
            return Ok(false);
        }
        let until = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        inner
            .leads
            .insert(name.to_owned(), (holder.to_owned(), until));
        Ok(true)
    }
}

#[async_trait]
impl Retention for MemoryStore {
    async fn purge_expired(
        &self,
        policies: &BTreeMap<String, RetentionPolicy>,
        default: RetentionPolicy,
        events: Duration,
        now: Timestamp,
    ) -> Result<Purged> {
        let mut inner = self.lock();
        let expired: Vec<JobId> = inner
            .jobs
            .values()
            .filter(|job| {
                let policy = policies.get(&job.queue).unwrap_or(&default);
                transition::retention_deadline(job, policy).is_some_and(|deadline| deadline <= now)
            })
            .map(|job| job.id)
            .collect();
        let mut purged = Purged::default();
        for id in expired {
            inner.remove_job(id);
            purged.jobs += 1;
        }
        for ns in inner.kv.values_mut() {
            let before = ns.len();
            ns.retain(|_, e| live(e, now));
            purged.kv_entries += (before - ns.len()) as u64;
        }
        let horizon = transition::before(now, events);
        let before = inner.feed.events.len();
        while inner.feed.events.front().is_some_and(|e| e.at < horizon) {
            inner.feed.events.pop_front();
        }
        purged.events = (before - inner.feed.events.len()) as u64;
        inner.ticks.retain(|_, claimed| *claimed >= horizon);
        Ok(purged)
    }
}

#[async_trait]
impl super::RateLimits for MemoryStore {
    async fn take_token(
        &self,
        key: &str,
        limit: &super::rate::Limit,
        now: Timestamp,
    ) -> Result<super::rate::Decision> {
        Ok(self.buckets.take(key, limit, now))
    }
}
