//! The jobs: enqueueing, claiming under a lease and every other transition, reading and
//! listing them, dead letters, and pausing queues. The long parts live beside: what a claim
//! takes in `claim`, recovery and promotion in `upkeep`.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use super::events::emit;
use super::rows::{JOB_COLUMNS, id_bytes, insert, job_id, load, load_many, ms, opt_ts};
use super::{SqliteStore, claim, transitions};
use crate::error::{Error, Result};
use crate::event::EventKind;
use crate::job::{Folding, Job, JobError, JobId, JobState, NewJob, Payload, Progress, Timestamp};
use crate::store::transition::{self, Emitted};
use crate::store::{
    AfterFailure, CancelOutcome, ClaimLimits, DeadLetters, Enqueued, JobFilter, JobStore,
    LeaseStatus, Page, QueueControl, Recovered, StateCounts,
};

impl SqliteStore {
    /// Loads job `id`, applies `transition` and records it, in the writer's next transaction.
    async fn apply<T: Send + 'static>(
        &self,
        id: JobId,
        now: Timestamp,
        transition: impl FnOnce(&mut Job) -> Result<(T, Emitted)> + Send + 'static,
    ) -> Result<T> {
        self.write(move |conn, counts| {
            let mut job = load(conn, id)?.ok_or(Error::NotFound(id))?;
            let before = job.state;
            let (value, emitted) = transition(&mut job)?;
            transitions::record(conn, counts, &job, before, emitted, now)?;
            Ok(value)
        })
        .await
    }
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn enqueue(&self, jobs: Vec<NewJob>, now: Timestamp) -> Result<Vec<Enqueued>> {
        self.write_unless_abandoned(move |conn, counts| {
            // Each job's duplicate, if it has one; then the quotas of those that would be
            // added, checked before anything is written (a refusal leaves the other
            // operations of the commit be).
            let mut existing = Vec::with_capacity(jobs.len());
            for new in &jobs {
                existing.push(idempotent_match(conn, new, now)?);
            }
            let adding = jobs.iter().zip(&existing).filter(|(_, e)| e.is_none());
            for ((queue, tenant), (adding, max)) in
                crate::store::quota_demands(adding.map(|(new, _)| new))
            {
                let waiting = waiting_of(conn, queue, tenant, max.saturating_add(1))?;
                crate::store::within_quota(queue, waiting, adding, max)?;
            }
            let mut outcomes = Vec::with_capacity(jobs.len());
            for (mut new, existing) in jobs.into_iter().zip(existing) {
                // A key twice in one enqueue: the second is the first's duplicate.
                let existing = match existing {
                    Some(id) => Some(id),
                    None => idempotent_match(conn, &new, now)?,
                };
                if let Some(existing) = existing {
                    outcomes.push(Enqueued::Duplicate(existing));
                    continue;
                }
                if let Some(rule) = &new.debounce {
                    match rule.fold(debounce_holder(conn, &new, &rule.key)?, new.run_at, now) {
                        Folding::Dropped(id) => {
                            outcomes.push(Enqueued::Duplicate(id));
                            continue;
                        }
                        Folding::Into(id, run_at) => {
                            let mut job = load(conn, id)?.ok_or(Error::NotFound(id))?;
                            let before = job.state;
                            let emitted = transition::debounce(&mut job, new, run_at, now);
                            save_input(conn, &job)?;
                            transitions::record(conn, counts, &job, before, emitted, now)?;
                            outcomes.push(Enqueued::Debounced(id));
                            continue;
                        }
                        Folding::New(run_at) => new.run_at = run_at,
                    }
                }
                let job = Job::from_new(new, now);
                if !insert(conn, &job)? {
                    // A producer retrying a submission with the same id.
                    outcomes.push(Enqueued::Duplicate(job.id));
                    continue;
                }
                counts.moved(&job.queue, None, Some(job.state));
                emit(conn, &job, vec![(EventKind::Enqueued, None)], now)?;
                outcomes.push(Enqueued::New(job.id));
            }
            Ok(outcomes)
        })
        .await
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
        let (queue, worker) = (queue.to_owned(), worker.to_owned());
        self.write(move |conn, counts| {
            let mut jobs = claim::ready(conn, counts, &queue, limit, limits, now)?;
            let expires_at = transition::after(now, lease);
            for job in &mut jobs {
                let token = fastrand::u64(1..i64::MAX as u64);
                let emitted = transition::claim(job, &worker, token, expires_at, now);
                transitions::record(conn, counts, job, JobState::Queued, emitted, now)?;
            }
            Ok(jobs)
        })
        .await
    }

    async fn heartbeat(
        &self,
        leases: &[(JobId, u64)],
        lease: Duration,
        now: Timestamp,
    ) -> Result<Vec<LeaseStatus>> {
        let leases = leases.to_vec();
        self.write(move |conn, _| {
            let expires_at = transition::after(now, lease);
            let mut answers = Vec::with_capacity(leases.len());
            for (id, token) in leases {
                let mut job = load(conn, id)?;
                let answer = transition::heartbeat(job.as_mut(), token, expires_at);
                if answer == LeaseStatus::Extended {
                    conn.prepare_cached("UPDATE jobs SET lease_expires_at = ?2 WHERE id = ?1")?
                        .execute(params![&id_bytes(id)[..], ms(expires_at)])?;
                }
                answers.push(answer);
            }
            Ok(answers)
        })
        .await
    }

    async fn progress(
        &self,
        id: JobId,
        token: u64,
        progress: Progress,
        now: Timestamp,
    ) -> Result<()> {
        self.apply(id, now, move |job| {
            Ok(((), transition::progress(job, token, progress)?))
        })
        .await
    }

    async fn complete(&self, id: JobId, token: u64, result: Payload, now: Timestamp) -> Result<()> {
        self.apply(id, now, move |job| {
            Ok(((), transition::complete(job, token, result, now)?))
        })
        .await
    }

    async fn fail(
        &self,
        id: JobId,
        token: u64,
        error: JobError,
        then: AfterFailure,
        now: Timestamp,
    ) -> Result<()> {
        self.apply(id, now, move |job| {
            Ok(((), transition::fail(job, token, error, then, now)?))
        })
        .await
    }

    async fn release(&self, id: JobId, token: u64, now: Timestamp) -> Result<()> {
        self.apply(id, now, move |job| {
            Ok(((), transition::release(job, token, now)?))
        })
        .await
    }

    async fn held_by_limits(
        &self,
        queue: &str,
        limits: ClaimLimits,
        now: Timestamp,
    ) -> Result<u64> {
        let queue = queue.to_owned();
        self.read(move |conn| claim::held(conn, &queue, limits, now))
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
        let detail = detail.to_owned();
        self.apply(id, now, move |job| {
            Ok(((), transition::snooze(job, token, until, &detail, now)?))
        })
        .await
    }

    async fn cancel(&self, id: JobId, now: Timestamp) -> Result<CancelOutcome> {
        self.apply(id, now, move |job| Ok(transition::cancel(job, now)))
            .await
    }

    async fn recover(&self, now: Timestamp) -> Result<Vec<Recovered>> {
        self.write(move |conn, counts| transitions::recover(conn, counts, now))
            .await
    }

    async fn promote(&self, now: Timestamp) -> Result<u64> {
        self.write(move |conn, counts| transitions::promote_due(conn, counts, None, now))
            .await
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>> {
        self.read(move |conn| load(conn, id)).await
    }

    async fn ready(&self) -> Result<()> {
        // Reads and writes take different connections: both must answer.
        self.read(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?))
            .await?;
        self.write(|_, _| Ok(())).await
    }

    async fn jobs_from(&self, from: JobId, limit: usize) -> Result<Vec<Job>> {
        self.read(move |conn| {
            let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id >= ?1 ORDER BY id LIMIT ?2");
            load_many(conn, &sql, params![&id_bytes(from)[..], limit as i64])
        })
        .await
    }

    async fn list(
        &self,
        filter: &JobFilter,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Page<Job>> {
        let filter = filter.clone();
        self.read(move |conn| {
            let mut sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE 1 = 1");
            let mut values: Vec<rusqlite::types::Value> = Vec::new();
            if let Some(after) = after {
                values.push(id_bytes(after).to_vec().into());
                sql.push_str(&format!(" AND id < ?{}", values.len()));
            }
            if !filter.queues.is_empty() {
                let mut places = Vec::with_capacity(filter.queues.len());
                for queue in &filter.queues {
                    values.push(queue.clone().into());
                    places.push(format!("?{}", values.len()));
                }
                sql.push_str(&format!(" AND queue IN ({})", places.join(", ")));
            }
            if let Some(kind) = &filter.kind {
                values.push(kind.clone().into());
                sql.push_str(&format!(" AND kind = ?{}", values.len()));
            }
            if let Some(tenant) = &filter.tenant {
                values.push(tenant.clone().into());
                sql.push_str(&format!(" AND tenant = ?{}", values.len()));
            }
            if !filter.states.is_empty() {
                let states: Vec<String> = filter
                    .states
                    .iter()
                    .map(|s| format!("'{}'", s.as_str()))
                    .collect();
                sql.push_str(&format!(" AND state IN ({})", states.join(", ")));
            }
            values.push(((limit + 1) as i64).into());
            sql.push_str(&format!(" ORDER BY id DESC LIMIT ?{}", values.len()));
            let mut items = load_many(conn, &sql, rusqlite::params_from_iter(values))?;
            let next = if items.len() > limit {
                items.truncate(limit);
                items.last().map(|j| j.id)
            } else {
                None
            };
            Ok(Page { items, next })
        })
        .await
    }

    async fn counts(&self) -> Result<BTreeMap<String, StateCounts>> {
        self.read(|conn| {
            let mut stmt = conn
                // The writer keeps these counts as jobs move: one row per queue and state, read
                // in place of counting every job.
                .prepare_cached("SELECT queue, state, n FROM queue_counts WHERE n > 0")?;
            let rows = stmt.query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })?;
            let mut counts: BTreeMap<String, StateCounts> = BTreeMap::new();
            for row in rows {
                let (queue, state, n) = row?;
                counts
                    .entry(queue)
                    .or_default()
                    .add(state.parse()?, n as u64);
            }
            Ok(counts)
        })
        .await
    }

    async fn tenant_counts(&self, queue: &str, tenant: &str) -> Result<StateCounts> {
        let (queue, tenant) = (queue.to_owned(), tenant.to_owned());
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT state, COUNT(*) FROM jobs WHERE tenant = ?1 AND queue = ?2 GROUP BY state",
            )?;
            let rows = stmt.query_map(params![tenant, queue], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
            })?;
            let mut counts = StateCounts::default();
            for row in rows {
                let (state, n) = row?;
                counts.add(state.parse()?, u64::try_from(n).unwrap_or(0));
            }
            Ok(counts)
        })
        .await
    }

    async fn count_waiting(&self, queue: &str, tenant: &str, up_to: u64) -> Result<u64> {
        let (queue, tenant) = (queue.to_owned(), tenant.to_owned());
        self.read(move |conn| waiting_of(conn, &queue, &tenant, up_to))
            .await
    }

    /// Woken when another process commits to the file (`wake.rs`).
    fn queue_wake(&self, queue: &str) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        Some(self.wakes.of(queue))
    }

    async fn oldest_ready(&self, queue: &str, now: Timestamp) -> Result<Option<Timestamp>> {
        let queue = queue.to_owned();
        self.read(move |conn| {
            let oldest: Option<i64> = conn
                .prepare_cached(
                    "SELECT MIN(run_at) FROM jobs WHERE queue = ?1 AND state IN ('queued', 'scheduled', 'retrying') AND run_at <= ?2",
                )?
                .query_row(params![queue, ms(now)], |row| row.get(0))?;
            Ok(opt_ts(oldest))
        })
        .await
    }
}

#[async_trait]
impl DeadLetters for SqliteStore {
    async fn retry_dead(&self, id: JobId, now: Timestamp) -> Result<()> {
        self.apply(id, now, move |job| {
            Ok(((), transition::retry_dead(job, now)?))
        })
        .await
    }

    async fn purge_dead(&self, queue: Option<&str>) -> Result<u64> {
        let queue = queue.map(str::to_owned);
        self.write(move |conn, counts| {
            let mut stmt = conn.prepare_cached(
                "DELETE FROM jobs WHERE state = 'dead' AND (?1 IS NULL OR queue = ?1) RETURNING queue",
            )?;
            let queues = stmt.query_map([&queue], |row| row.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
            for queue in &queues {
                counts.moved(queue, Some(JobState::Dead), None);
            }
            Ok(queues.len() as u64)
        })
        .await
    }
}

#[async_trait]
impl QueueControl for SqliteStore {
    async fn pause(&self, queue: &str) -> Result<()> {
        self.execute(
            "INSERT OR IGNORE INTO paused (queue) VALUES (?1)",
            [queue.to_owned()],
        )
        .await?;
        Ok(())
    }

    async fn resume(&self, queue: &str) -> Result<()> {
        self.execute("DELETE FROM paused WHERE queue = ?1", [queue.to_owned()])
            .await?;
        Ok(())
    }

    async fn paused(&self) -> Result<Vec<String>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached("SELECT queue FROM paused ORDER BY queue")?;
            let queues = stmt
                .query_map([], |row| row.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            Ok(queues)
        })
        .await
    }
}

/// The latest job of `new`'s queue and tenant with debounce key `key`: its id, state and
/// creation time.
fn debounce_holder(
    conn: &rusqlite::Connection,
    new: &NewJob,
    key: &str,
) -> Result<Option<(JobId, JobState, Timestamp)>> {
    let latest: Option<(Vec<u8>, String, i64)> = conn
        .prepare_cached(
            "SELECT id, state, created_at FROM jobs WHERE queue = ?1 \
             AND coalesce(tenant, '') = ?2 AND debounce_key = ?3 ORDER BY seq DESC LIMIT 1",
        )?
        .query_row(
            params![new.queue, new.tenant.as_deref().unwrap_or(""), key],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .optional()?;
    latest
        .map(|(id, state, created)| Ok((job_id(&id)?, state.parse()?, super::rows::ts(created))))
        .transpose()
}

/// Writes back the input of `job` (payload, headers, kind), which a debounce replaced.
fn save_input(conn: &rusqlite::Connection, job: &Job) -> Result<()> {
    let headers = if job.headers.is_empty() {
        None
    } else {
        Some(super::rows::to_json(&job.headers)?)
    };
    conn.prepare_cached("UPDATE jobs SET payload = ?2, headers = ?3, kind = ?4 WHERE id = ?1")?
        .execute(params![
            &id_bytes(job.id)[..],
            job.payload.as_str(),
            headers,
            job.kind
        ])?;
    Ok(())
}

/// The job `new`, sent at `now`, would duplicate: the one with its idempotency key on its
/// queue for its tenant, else the latest one with its unique key if its rule holds for it.
fn idempotent_match(
    conn: &rusqlite::Connection,
    new: &NewJob,
    now: Timestamp,
) -> Result<Option<JobId>> {
    let tenant = new.tenant.as_deref().unwrap_or("");
    if let Some(key) = &new.idempotency_key {
        let existing: Option<Vec<u8>> = conn
            .prepare_cached(
                "SELECT id FROM jobs WHERE queue = ?1 AND coalesce(tenant, '') = ?2 \
                 AND idempotency_key = ?3 AND idempotency_key IS NOT NULL",
            )?
            .query_row(params![new.queue, tenant, key], |row| row.get(0))
            .optional()?;
        if let Some(id) = existing {
            return job_id(&id).map(Some);
        }
    }
    if let Some(rule) = &new.unique {
        let latest: Option<(Vec<u8>, String, Option<i64>)> = conn
            .prepare_cached(
                "SELECT id, state, finished_at FROM jobs WHERE queue = ?1 \
                 AND coalesce(tenant, '') = ?2 AND unique_key = ?3 ORDER BY seq DESC LIMIT 1",
            )?
            .query_row(params![new.queue, tenant, rule.key], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .optional()?;
        if let Some((id, state, finished_at)) = latest
            && rule.holds_for(state.parse()?, opt_ts(finished_at), now)
        {
            return job_id(&id).map(Some);
        }
    }
    Ok(None)
}

/// How many jobs of `tenant` wait in `queue`, counted up to `up_to` at most: through the
/// tenant index, a count that costs no more than the quota it is checked against.
fn waiting_of(conn: &rusqlite::Connection, queue: &str, tenant: &str, up_to: u64) -> Result<u64> {
    let n: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM (SELECT 1 FROM jobs WHERE tenant = ?1 AND queue = ?2 \
             AND state IN ('queued', 'scheduled', 'retrying') LIMIT ?3)",
        )?
        .query_row(
            params![tenant, queue, i64::try_from(up_to).unwrap_or(i64::MAX)],
            |row| row.get(0),
        )?;
    Ok(u64::try_from(n).unwrap_or(0))
}
