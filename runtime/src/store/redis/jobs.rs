//! The job store: enqueueing and each transition, one script call per queue touched. Claims
//! are in `claim.rs`, completions in `completions.rs`, listings and counts in `listing.rs`,
//! promotion and recovery in `upkeep.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::Value;
use tokio::sync::Notify;

use super::codec::{answer_to_result, from_ms, ms};
use super::conn::store_err;
use super::scripts::{ArgLike, strings};
use super::{RedisStore, SWEEP};
use crate::error::{Error, Result};
use crate::job::{DebounceMode, Job, JobError, JobId, NewJob, Payload, Progress, Timestamp};
use crate::store::{
    AfterFailure, CancelOutcome, ClaimLimits, DeadLetters, Enqueued, JobFilter, JobStore,
    LeaseStatus, Page, Recovered, StateCounts,
};

/// The arguments of `enqueue.lua` for `jobs` of `queue`: 3, then 19 per job.
fn enqueue_args(
    now_ms: i64,
    channel: &str,
    queue: &str,
    jobs: &[(usize, NewJob)],
) -> Result<Vec<String>> {
    let mut args: Vec<String> = Vec::with_capacity(3 + jobs.len() * 19);
    args.push(now_ms.to_string());
    args.push(channel.to_owned());
    args.push(queue.to_owned());
    for (_, job) in jobs {
        args.push(job.id.to_string());
        args.push(job.kind.clone());
        args.push(job.payload.as_str().to_owned());
        args.push(job.priority.to_string());
        args.push(job.run_at.map_or(now_ms, ms).to_string());
        args.push(job.max_attempts.max(1).to_string());
        args.push(
            job.timeout
                .map(|t| t.as_millis().to_string())
                .unwrap_or_default(),
        );
        args.push(job.idempotency_key.clone().unwrap_or_default());
        args.push(job.tenant.clone().unwrap_or_default());
        args.push(if job.headers.is_empty() {
            String::new()
        } else {
            serde_json::to_string(&job.headers)?
        });
        args.push(job.max_waiting.map(|m| m.to_string()).unwrap_or_default());
        // '' for none; a key is written after '=' (it may be empty).
        args.push(
            job.limit_key
                .as_ref()
                .map_or_else(String::new, |k| format!("={k}")),
        );
        match &job.unique {
            Some(rule) => {
                args.push(format!("={}", rule.key));
                let states: Vec<&str> = rule.states.iter().map(|s| s.as_str()).collect();
                args.push(states.join(","));
                args.push(
                    rule.window
                        .as_millis()
                        .min(u128::from(u64::MAX >> 12))
                        .to_string(),
                );
            }
            None => args.extend([String::new(), String::new(), String::new()]),
        }
        let ms_of = |d: Duration| d.as_millis().min(u128::from(u64::MAX >> 12)).to_string();
        match &job.debounce {
            Some(rule) => {
                args.push(format!("={}", rule.key));
                args.push(ms_of(rule.window));
                match rule.mode {
                    DebounceMode::Trailing { max_wait } => {
                        args.push("trailing".into());
                        args.push(max_wait.map(ms_of).unwrap_or_default());
                    }
                    DebounceMode::Leading => args.extend(["leading".into(), String::new()]),
                }
            }
            None => args.extend([String::new(), String::new(), String::new(), String::new()]),
        }
    }
    Ok(args)
}

impl RedisStore {
    /// With `?replicas=N`: waits until N replicas have this connection's writes (`WAIT`), so
    /// an acknowledged enqueue survives the primary's loss; fails when fewer have them in
    /// time (the jobs may then be stored all the same: a client resubmits with its
    /// idempotency key).
    async fn wait_for_replicas(&self) -> Result<()> {
        let Some((replicas, timeout_ms)) = self.shared.url.replicas else {
            return Ok(());
        };
        let acked: u32 = self
            .shared
            .redis
            .query("enqueue", redis::cmd("WAIT").arg(replicas).arg(timeout_ms))
            .await?;
        if acked < replicas {
            return Err(crate::Error::store(
                "enqueue",
                crate::error::StoreErrorKind::Unavailable,
                format!(
                    "{acked} of {replicas} replicas had the enqueue within {timeout_ms} ms; it may be stored all the same"
                ),
            ));
        }
        Ok(())
    }

    /// Records where each job of `by_queue` lives and that its queue exists: before any
    /// script adds a job, so a job is never findable before this.
    async fn record_locations(
        &self,
        by_queue: &BTreeMap<String, Vec<(usize, NewJob)>>,
    ) -> Result<()> {
        let mut locations = redis::cmd("HSET");
        locations.arg(self.shared.keys.locations());
        for (queue, jobs) in by_queue {
            for (_, job) in jobs {
                locations.arg(job.id.to_string()).arg(queue);
            }
        }
        let mut queues = redis::cmd("SADD");
        queues.arg(self.shared.keys.queues());
        for queue in by_queue.keys() {
            queues.arg(queue);
        }
        self.shared
            .redis
            .many::<Value>("enqueue", vec![locations, queues])
            .await?;
        Ok(())
    }

    async fn enqueue_jobs(&self, jobs: Vec<NewJob>, now: Timestamp) -> Result<Vec<Enqueued>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let now_ms = ms(now);
        let mut by_queue: BTreeMap<String, Vec<(usize, NewJob)>> = BTreeMap::new();
        let count = jobs.len();
        for (i, job) in jobs.into_iter().enumerate() {
            by_queue
                .entry(job.queue.clone())
                .or_default()
                .push((i, job));
        }
        // A batch over several queues is several scripts: its quotas are looked at first, so
        // one over quota is refused before any queue's jobs are added (each script checks its
        // own again, atomically with adding them).
        if by_queue.len() > 1 {
            let all = by_queue.values().flatten().map(|(_, job)| job);
            for ((queue, tenant), (adding, max)) in crate::store::quota_demands(all) {
                let waiting = self.count_tenant_waiting(queue, tenant).await?;
                crate::store::within_quota(queue, waiting, adding, max)?;
            }
        }
        self.record_locations(&by_queue).await?;

        let mut outcomes = vec![None; count];
        let mut unused = Vec::new();
        let channel = self.shared.keys.wake_channel();
        for (queue, jobs) in &by_queue {
            let args = enqueue_args(now_ms, &channel, queue, jobs)?;
            let answer: Vec<(i8, String)> = self
                .shared
                .run(
                    "enqueue",
                    &self.shared.scripts.enqueue,
                    queue,
                    &strings(&args),
                )
                .await?;
            if let [(-1, over)] = answer.as_slice() {
                // Nothing of this queue was added: its jobs are nowhere.
                let ids: Vec<String> = jobs.iter().map(|(_, job)| job.id.to_string()).collect();
                self.shared
                    .redis
                    .query::<()>(
                        "enqueue",
                        redis::cmd("HDEL")
                            .arg(self.shared.keys.locations())
                            .arg(&ids),
                    )
                    .await?;
                let (waiting, max) = over.split_once(' ').unwrap_or((over, over));
                return Err(crate::Error::QuotaQueued {
                    queue: queue.clone(),
                    waiting: waiting.parse().unwrap_or(0),
                    max: max.parse().unwrap_or(0),
                });
            }
            let queue_name: Arc<str> = queue.as_str().into();
            for ((i, job), (added, id)) in jobs.iter().zip(answer) {
                let existing: JobId = id.parse().map_err(|e| store_err("enqueue", e))?;
                outcomes[*i] = Some(if added == 1 {
                    self.remember(existing, &queue_name);
                    Enqueued::New(existing)
                } else {
                    if existing != job.id {
                        unused.push(job.id.to_string());
                    }
                    if added == 2 {
                        Enqueued::Debounced(existing)
                    } else {
                        Enqueued::Duplicate(existing)
                    }
                });
            }
        }
        self.wait_for_replicas().await?;
        if !unused.is_empty() {
            self.shared
                .redis
                .query::<()>(
                    "enqueue",
                    redis::cmd("HDEL")
                        .arg(self.shared.keys.locations())
                        .arg(&unused),
                )
                .await?;
        }
        self.notify.notify_waiters();
        outcomes
            .into_iter()
            .map(|o| o.ok_or_else(|| store_err("enqueue", "a job got no answer")))
            .collect()
    }

    /// Calls a transition script on job `id` in its queue and wakes whoever follows events.
    async fn transition(
        &self,
        op: &'static str,
        script: &redis::Script,
        id: JobId,
        args: &[&(dyn ArgLike + Sync)],
    ) -> Result<(Arc<str>, String)> {
        let queue = self.locate(id).await?.ok_or(Error::NotFound(id))?;
        let answer: String = self.shared.run(op, script, &queue, args).await?;
        self.notify.notify_waiters();
        Ok((queue, answer))
    }
}

#[async_trait]
impl JobStore for RedisStore {
    async fn enqueue(&self, jobs: Vec<NewJob>, now: Timestamp) -> Result<Vec<Enqueued>> {
        self.enqueue_jobs(jobs, now).await
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
        self.claim_jobs(queue, worker, limit, lease, limits, now)
            .await
    }

    async fn heartbeat(
        &self,
        leases: &[(JobId, u64)],
        lease: Duration,
        now: Timestamp,
    ) -> Result<Vec<LeaseStatus>> {
        let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX / 4);
        let clock = self.shared.lease_clock(now);
        let mut answers = vec![LeaseStatus::Lost; leases.len()];
        let mut by_queue: BTreeMap<Arc<str>, Vec<usize>> = BTreeMap::new();
        for (i, (id, _)) in leases.iter().enumerate() {
            if let Some(queue) = self.locate(*id).await? {
                by_queue.entry(queue).or_default().push(i);
            }
        }
        for (queue, indices) in by_queue {
            let mut args: Vec<String> = vec![lease_ms.to_string(), clock.clone()];
            for &i in &indices {
                args.push(leases[i].0.to_string());
                args.push(leases[i].1.to_string());
            }
            let statuses: Vec<u8> = self
                .shared
                .run(
                    "heartbeat",
                    &self.shared.scripts.heartbeat,
                    &queue,
                    &strings(&args),
                )
                .await?;
            for (i, status) in indices.into_iter().zip(statuses) {
                answers[i] = match status {
                    1 => LeaseStatus::Extended,
                    2 => LeaseStatus::Cancelled,
                    _ => LeaseStatus::Lost,
                };
            }
        }
        Ok(answers)
    }

    async fn progress(
        &self,
        id: JobId,
        token: u64,
        progress: Progress,
        now: Timestamp,
    ) -> Result<()> {
        let detail = format!("{}% {}", progress.percent, progress.message);
        let progress = serde_json::to_string(&progress)?;
        let (_, answer) = self
            .transition(
                "progress",
                &self.shared.scripts.progress,
                id,
                &[&id.to_string(), &token, &progress, &detail, &ms(now)],
            )
            .await?;
        answer_to_result(id, &answer)
    }

    async fn complete(&self, id: JobId, token: u64, result: Payload, now: Timestamp) -> Result<()> {
        self.complete_job(id, token, result, now).await
    }

    async fn fail(
        &self,
        id: JobId,
        token: u64,
        error: JobError,
        then: AfterFailure,
        now: Timestamp,
    ) -> Result<()> {
        let (retry_at, detail) = match then {
            AfterFailure::Retry { at } => (ms(at).to_string(), at.to_rfc3339()),
            AfterFailure::Dead => (String::new(), String::new()),
        };
        let stored = serde_json::to_string(&error)?;
        let (_, answer) = self
            .transition(
                "fail",
                &self.shared.scripts.fail,
                id,
                &[
                    &id.to_string(),
                    &token,
                    &stored,
                    &error.message,
                    &retry_at,
                    &detail,
                    &ms(now),
                ],
            )
            .await?;
        answer_to_result(id, &answer)
    }

    async fn release(&self, id: JobId, token: u64, now: Timestamp) -> Result<()> {
        let (queue, answer) = self
            .transition(
                "release",
                &self.shared.scripts.release,
                id,
                &[&id.to_string(), &token, &ms(now)],
            )
            .await?;
        self.wake_queue(&queue);
        answer_to_result(id, &answer)
    }

    async fn held_by_limits(
        &self,
        queue: &str,
        limits: ClaimLimits,
        now: Timestamp,
    ) -> Result<u64> {
        let (interval_us, burst) = limits
            .rate
            .map_or((0, 0), |rate| (rate.interval_us(), rate.burst.max(1)));
        self.shared
            .run(
                "held by limits",
                &self.shared.scripts.held,
                queue,
                &[
                    &limits.running_per_tenant.unwrap_or(0),
                    &limits.running.unwrap_or(0),
                    &limits.running_per_key.unwrap_or(0),
                    &interval_us,
                    &burst,
                    &self.shared.lease_clock(now),
                ],
            )
            .await
    }

    async fn snooze(
        &self,
        id: JobId,
        token: u64,
        until: Timestamp,
        detail: &str,
        now: Timestamp,
    ) -> Result<()> {
        let (queue, answer) = self
            .transition(
                "snooze",
                &self.shared.scripts.release,
                id,
                &[&id.to_string(), &token, &ms(now), &ms(until), &detail],
            )
            .await?;
        self.wake_queue(&queue);
        answer_to_result(id, &answer)
    }

    async fn cancel(&self, id: JobId, now: Timestamp) -> Result<CancelOutcome> {
        let error = serde_json::to_string(&JobError::new("cancelled"))?;
        let (_, answer) = self
            .transition(
                "cancel",
                &self.shared.scripts.cancel,
                id,
                &[&id.to_string(), &error, &ms(now)],
            )
            .await?;
        match answer.as_str() {
            "cancelled" => Ok(CancelOutcome::Cancelled),
            "cancelled_running" => Ok(CancelOutcome::CancelledRunning),
            "missing" => Err(Error::NotFound(id)),
            state => Ok(CancelOutcome::AlreadyFinished(state.parse()?)),
        }
    }

    async fn recover(&self, now: Timestamp) -> Result<Vec<Recovered>> {
        self.recover_jobs(now).await
    }

    async fn promote(&self, now: Timestamp) -> Result<u64> {
        self.promote_jobs(now).await
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>> {
        match self.locate(id).await? {
            Some(queue) => self.fetch(&queue, id).await,
            None => Ok(None),
        }
    }

    async fn jobs_from(&self, from: JobId, limit: usize) -> Result<Vec<Job>> {
        self.list_from(from, limit).await
    }

    async fn list(
        &self,
        filter: &JobFilter,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Page<Job>> {
        self.list_jobs(filter, after, limit).await
    }

    async fn counts(&self) -> Result<BTreeMap<String, StateCounts>> {
        self.count_jobs().await
    }

    async fn count_waiting(&self, queue: &str, tenant: &str, _up_to: u64) -> Result<u64> {
        self.count_tenant_waiting(queue, tenant).await
    }

    async fn tenant_counts(&self, queue: &str, tenant: &str) -> Result<StateCounts> {
        self.count_tenant_jobs(queue, tenant).await
    }

    async fn oldest_ready(&self, queue: &str, now: Timestamp) -> Result<Option<Timestamp>> {
        let oldest: Option<i64> = self
            .shared
            .run(
                "oldest ready",
                &self.shared.scripts.oldest,
                queue,
                &[&ms(now)],
            )
            .await?;
        oldest.map(from_ms).transpose()
    }

    fn queue_wake(&self, queue: &str) -> Option<Arc<Notify>> {
        Some(self.wake_of(queue))
    }
}

#[async_trait]
impl DeadLetters for RedisStore {
    async fn retry_dead(&self, id: JobId, now: Timestamp) -> Result<()> {
        let (_, answer) = self
            .transition(
                "retry dead letter",
                &self.shared.scripts.retry_dead,
                id,
                &[&id.to_string(), &ms(now)],
            )
            .await?;
        match answer.as_str() {
            "ok" => Ok(()),
            "missing" => Err(Error::NotFound(id)),
            state => Err(Error::WrongState {
                id,
                state: state.parse()?,
            }),
        }
    }

    async fn purge_dead(&self, queue: Option<&str>) -> Result<u64> {
        let queues = match queue {
            Some(queue) => vec![queue.to_owned()],
            None => self.queues().await?,
        };
        let mut total = 0;
        for queue in queues {
            loop {
                let ids: Vec<String> = self
                    .shared
                    .run(
                        "purge dead letters",
                        &self.shared.scripts.purge_dead,
                        &queue,
                        &[&SWEEP],
                    )
                    .await?;
                total += ids.len() as u64;
                self.unlocate(&ids).await?;
                if ids.len() < SWEEP {
                    break;
                }
            }
        }
        Ok(total)
    }
}
