//! A store that counts how often its event feed is read and can be told to fail those reads;
//! everything else goes to the store inside. Tests and the streams bench take it with
//! `#[path = …] mod counting;` or through `support`.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use raindrop::error::{Result, StoreErrorKind};
use raindrop::event::{Event, EventKind};
use raindrop::job::{Job, JobError, JobId, NewJob, Payload, Progress, Timestamp};
use raindrop::store::{
    AfterFailure, CancelOutcome, ClaimLimits, CronTicks, DeadLetters, Enqueued, EventLog,
    JobFilter, JobStore, KvEntry, KvPage, KvStore, Leadership, LeaseStatus, Page, Purged,
    QueueControl, RateLimits, Recovered, Retention, RetentionPolicy, StateCounts, Store, rate,
};

/// Counts `events_after` calls on the store inside, and can hold claims on their way back.
pub struct CountingStore {
    inner: Arc<dyn Store>,
    feed_reads: AtomicU64,
    feed_down: AtomicBool,
    /// Claims still to hold once the store inside has answered them.
    to_hold: AtomicUsize,
    /// Claims held now.
    held: AtomicUsize,
    held_changed: tokio::sync::Notify,
    released: tokio::sync::watch::Sender<bool>,
}

impl CountingStore {
    pub fn new(inner: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            feed_reads: AtomicU64::new(0),
            feed_down: AtomicBool::new(false),
            to_hold: AtomicUsize::new(0),
            held: AtomicUsize::new(0),
            held_changed: tokio::sync::Notify::new(),
            released: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Holds the next `n` claims, answered by the store inside, until [`Self::release_claims`]:
    /// what was enqueued meanwhile comes after their answer.
    pub fn hold_claims(&self, n: usize) {
        self.released.send_replace(false);
        self.to_hold.store(n, Ordering::SeqCst);
    }

    /// Waits until `n` claims are held.
    pub async fn claims_held(&self, n: usize) {
        loop {
            let changed = self.held_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.held.load(Ordering::SeqCst) >= n {
                return;
            }
            changed.await;
        }
    }

    /// Lets the held claims answer.
    pub fn release_claims(&self) {
        self.released.send_replace(true);
    }

    /// Reads of the event feed (`events_after`) so far, failed ones included.
    pub fn feed_reads(&self) -> u64 {
        self.feed_reads.load(Ordering::SeqCst)
    }

    /// While `down`, every read of the event feed fails.
    pub fn feed_down(&self, down: bool) {
        self.feed_down.store(down, Ordering::SeqCst);
    }
}

#[async_trait]
impl JobStore for CountingStore {
    async fn enqueue(&self, jobs: Vec<NewJob>, now: Timestamp) -> Result<Vec<Enqueued>> {
        self.inner.enqueue(jobs, now).await
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
        let claimed = self
            .inner
            .claim_with(queue, worker, limit, lease, limits, now)
            .await;
        let hold = self
            .to_hold
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if hold {
            let mut released = self.released.subscribe();
            self.held.fetch_add(1, Ordering::SeqCst);
            self.held_changed.notify_waiters();
            let _ = released.wait_for(|released| *released).await;
            self.held.fetch_sub(1, Ordering::SeqCst);
        }
        claimed
    }
    async fn heartbeat(
        &self,
        leases: &[(JobId, u64)],
        lease: Duration,
        now: Timestamp,
    ) -> Result<Vec<LeaseStatus>> {
        self.inner.heartbeat(leases, lease, now).await
    }
    async fn progress(
        &self,
        id: JobId,
        token: u64,
        progress: Progress,
        now: Timestamp,
    ) -> Result<()> {
        self.inner.progress(id, token, progress, now).await
    }
    async fn complete(&self, id: JobId, token: u64, result: Payload, now: Timestamp) -> Result<()> {
        self.inner.complete(id, token, result, now).await
    }
    async fn fail(
        &self,
        id: JobId,
        token: u64,
        error: JobError,
        then: AfterFailure,
        now: Timestamp,
    ) -> Result<()> {
        self.inner.fail(id, token, error, then, now).await
    }
    async fn release(&self, id: JobId, token: u64, now: Timestamp) -> Result<()> {
        self.inner.release(id, token, now).await
    }

    async fn held_by_limits(
        &self,
        queue: &str,
        limits: raindrop::store::ClaimLimits,
        now: Timestamp,
    ) -> Result<u64> {
        self.inner.held_by_limits(queue, limits, now).await
    }

    async fn snooze(
        &self,
        id: JobId,
        token: u64,
        until: Timestamp,
        detail: &str,
        now: Timestamp,
    ) -> Result<()> {
        self.inner.snooze(id, token, until, detail, now).await
    }
    async fn cancel(&self, id: JobId, now: Timestamp) -> Result<CancelOutcome> {
        self.inner.cancel(id, now).await
    }
    async fn recover(&self, now: Timestamp) -> Result<Vec<Recovered>> {
        self.inner.recover(now).await
    }
    async fn promote(&self, now: Timestamp) -> Result<u64> {
        self.inner.promote(now).await
    }
    async fn get(&self, id: JobId) -> Result<Option<Job>> {
        self.inner.get(id).await
    }
    async fn ready(&self) -> Result<()> {
        self.inner.ready().await
    }
    async fn jobs_from(&self, from: JobId, limit: usize) -> Result<Vec<Job>> {
        self.inner.jobs_from(from, limit).await
    }
    async fn list(
        &self,
        filter: &JobFilter,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Page<Job>> {
        self.inner.list(filter, after, limit).await
    }
    async fn counts(&self) -> Result<BTreeMap<String, StateCounts>> {
        self.inner.counts().await
    }
    async fn oldest_ready(&self, queue: &str, now: Timestamp) -> Result<Option<Timestamp>> {
        self.inner.oldest_ready(queue, now).await
    }
    async fn count_waiting(&self, queue: &str, tenant: &str, up_to: u64) -> Result<u64> {
        self.inner.count_waiting(queue, tenant, up_to).await
    }
    async fn tenant_counts(&self, queue: &str, tenant: &str) -> Result<StateCounts> {
        self.inner.tenant_counts(queue, tenant).await
    }
    fn queue_wake(&self, queue: &str) -> Option<Arc<tokio::sync::Notify>> {
        self.inner.queue_wake(queue)
    }
}

#[async_trait]
impl DeadLetters for CountingStore {
    async fn dead_letters(
        &self,
        queue: Option<&str>,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Page<Job>> {
        self.inner.dead_letters(queue, after, limit).await
    }
    async fn retry_dead(&self, id: JobId, now: Timestamp) -> Result<()> {
        self.inner.retry_dead(id, now).await
    }
    async fn purge_dead(&self, queue: Option<&str>) -> Result<u64> {
        self.inner.purge_dead(queue).await
    }
}

#[async_trait]
impl QueueControl for CountingStore {
    async fn pause(&self, queue: &str) -> Result<()> {
        self.inner.pause(queue).await
    }
    async fn resume(&self, queue: &str) -> Result<()> {
        self.inner.resume(queue).await
    }
    async fn paused(&self) -> Result<Vec<String>> {
        self.inner.paused().await
    }
}

#[async_trait]
impl KvStore for CountingStore {
    async fn kv_get(&self, namespace: &str, key: &str, now: Timestamp) -> Result<Option<KvEntry>> {
        self.inner.kv_get(namespace, key, now).await
    }
    async fn kv_put(&self, namespace: &str, key: &str, entry: KvEntry) -> Result<()> {
        self.inner.kv_put(namespace, key, entry).await
    }
    async fn kv_delete(&self, namespace: &str, key: &str) -> Result<bool> {
        self.inner.kv_delete(namespace, key).await
    }
    async fn kv_list(
        &self,
        namespace: &str,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
        now: Timestamp,
    ) -> Result<KvPage> {
        self.inner
            .kv_list(namespace, prefix, cursor, limit, now)
            .await
    }
}

#[async_trait]
impl EventLog for CountingStore {
    async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>> {
        self.feed_reads.fetch_add(1, Ordering::SeqCst);
        if self.feed_down.load(Ordering::SeqCst) {
            return Err(raindrop::Error::store(
                "read events",
                StoreErrorKind::Unavailable,
                "the test took the event feed down",
            ));
        }
        self.inner.events_after(after, limit).await
    }
    async fn last_event_seq(&self) -> Result<u64> {
        self.inner.last_event_seq().await
    }
    async fn count_events(
        &self,
        kind: EventKind,
        since: Timestamp,
    ) -> Result<BTreeMap<String, u64>> {
        self.inner.count_events(kind, since).await
    }
    fn event_notify(&self) -> Arc<tokio::sync::Notify> {
        self.inner.event_notify()
    }
}

#[async_trait]
impl CronTicks for CountingStore {
    async fn claim_tick(&self, task: &str, tick: Timestamp, now: Timestamp) -> Result<bool> {
        self.inner.claim_tick(task, tick, now).await
    }
}

#[async_trait]
impl Leadership for CountingStore {
    async fn try_lead(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<bool> {
        self.inner.try_lead(name, holder, ttl, now).await
    }
}

#[async_trait]
impl Retention for CountingStore {
    async fn purge_expired(
        &self,
        policies: &BTreeMap<String, RetentionPolicy>,
        default: RetentionPolicy,
        events: Duration,
        now: Timestamp,
    ) -> Result<Purged> {
        self.inner
            .purge_expired(policies, default, events, now)
            .await
    }
}

#[async_trait]
impl RateLimits for CountingStore {
    async fn take_token(
        &self,
        key: &str,
        limit: &rate::Limit,
        now: Timestamp,
    ) -> Result<rate::Decision> {
        self.inner.take_token(key, limit, now).await
    }
}
