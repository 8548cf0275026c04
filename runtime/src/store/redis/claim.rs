//! Claiming: `claim.lua` takes ready jobs under new leases (fairly among tenants) and answers
//! each job's record as it was before; this side makes the same writes to the record read back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::Value;

use super::RedisStore;
use super::codec::{decode_job, field, ms, parsed};
use super::conn::{decode, store_err};
use crate::error::{Result, StoreErrorKind};
use crate::job::{Job, JobId, Timestamp};
use crate::store::ClaimLimits;

/// What `claim.lua` writes to each job it takes. Its answer holds the records as they were
/// before; `apply` makes the same writes to a record read back.
struct Taken<'a> {
    /// The worker, as a JSON string.
    worker: &'a str,
    now: i64,
    expires: i64,
    /// The least token this claim hands out (`token_floor` in `claim.lua`).
    token_floor: u64,
}

impl Taken<'_> {
    /// What `take` in `claim.lua` writes: keep the two together.
    fn apply(&self, fields: &mut HashMap<String, String>) -> Result<()> {
        let attempt = parsed::<u32>(fields, field::ATTEMPT)?.unwrap_or(0) + 1;
        let token = (parsed::<u64>(fields, field::TOKEN)?.unwrap_or(0) + 1).max(self.token_floor);
        let now = self.now.to_string();
        fields.insert(field::STATE.into(), "running".into());
        fields.insert(field::ATTEMPT.into(), attempt.to_string());
        fields.insert(field::TOKEN.into(), token.to_string());
        fields.insert(field::WORKER.into(), self.worker.to_owned());
        fields.insert(field::LEASE_EXPIRES.into(), self.expires.to_string());
        fields
            .entry(field::STARTED_AT.into())
            .or_insert_with(|| now.clone());
        fields.insert(field::ATTEMPT_STARTED_AT.into(), now);
        Ok(())
    }
}

/// The jobs of a claim answer: the lease expiry (by the lease clock), then pairs of (id,
/// record), each record a JSON array of the names and values `HGETALL` gave, with what the
/// claim wrote applied.
fn decode_claimed(
    queue: &str,
    value: Value,
    worker: &str,
    now: i64,
    lease_ms: u64,
) -> Result<Vec<Job>> {
    let Value::Array(items) = value else {
        return Ok(Vec::new());
    };
    let mut items = items.into_iter();
    let Some(expires) = items.next() else {
        return Ok(Vec::new());
    };
    let expires: i64 = decode::<String>("claim", expires)?
        .parse()
        .map_err(|e| store_err("claim", e))?;
    // The lease clock's time of the claim, in ms.
    let clock = u64::try_from(expires).unwrap_or(0).saturating_sub(lease_ms);
    let taken = Taken {
        worker,
        now,
        expires,
        token_floor: clock.saturating_mul(1024),
    };
    let mut jobs = Vec::with_capacity(items.len() / 2);
    while let (Some(id), Some(fields)) = (items.next(), items.next()) {
        let id: String = decode("claim", id)?;
        let record: String = decode("claim", fields)?;
        let flat: Vec<String> = serde_json::from_str(&record).map_err(|e| store_err("claim", e))?;
        let mut fields: HashMap<String, String> = HashMap::with_capacity(flat.len() / 2 + 8);
        let mut flat = flat.into_iter();
        while let (Some(name), Some(value)) = (flat.next(), flat.next()) {
            fields.insert(name, value);
        }
        taken.apply(&mut fields)?;
        let id: JobId = id.parse().map_err(|e| store_err("claim", e))?;
        jobs.push(decode_job(queue, id, fields)?);
    }
    Ok(jobs)
}

/// How often a claim whose reply was lost is looked for before its jobs are left to lapse.
const PUT_BACK_TRIES: u32 = 5;

impl RedisStore {
    /// Releases the jobs a claim of `worker` at `started` (ms) took if its reply never came,
    /// trying a few times while Redis comes back. If it stays away, the jobs' leases lapse and
    /// recovery takes them back (then the attempt counts).
    async fn put_back_unanswered(&self, queue: &str, worker: &str, started: i64) {
        let mut wait = Duration::from_millis(50);
        for _ in 0..PUT_BACK_TRIES {
            let found: Result<Vec<(String, u64)>> = self
                .shared
                .run(
                    "claim",
                    &self.shared.scripts.unclaimed,
                    queue,
                    &[&worker, &started],
                )
                .await;
            match found {
                Ok(found) => {
                    for (id, token) in found {
                        let Ok(id) = id.parse::<JobId>() else {
                            continue;
                        };
                        // The worker never had the job: back without spending the attempt.
                        if let Err(err) =
                            crate::store::JobStore::release(self, id, token, crate::job::now())
                                .await
                        {
                            tracing::warn!(job.id = %id, error = %err, "a job whose claim reply was lost could not be put back; it runs again once its lease lapses");
                        } else {
                            tracing::info!(job.id = %id, queue, "a claim's reply was lost; its job is back in the queue");
                        }
                    }
                    return;
                }
                Err(_) => {
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
            }
        }
        tracing::warn!(
            queue,
            "a claim's reply was lost and Redis stayed away: its jobs run again once their leases lapse, as another attempt"
        );
    }

    /// Takes up to `limit` ready jobs of `queue` for `worker` under a lease of `lease`.
    pub(super) async fn claim_jobs(
        &self,
        queue: &str,
        worker: &str,
        limit: usize,
        lease: Duration,
        limits: ClaimLimits,
        now: Timestamp,
    ) -> Result<Vec<Job>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let worker = serde_json::to_string(worker)?;
        let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX / 4);
        let max_running = limits.running_per_tenant.unwrap_or(0);
        let max_in_queue = limits.running.unwrap_or(0);
        let max_per_key = limits.running_per_key.unwrap_or(0);
        let (interval_us, burst) = limits
            .rate
            .map_or((0, 0), |rate| (rate.interval_us(), rate.burst.max(1)));
        let clock = self.shared.lease_clock(now);
        let value: Value = match self
            .shared
            .run(
                "claim",
                &self.shared.scripts.claim,
                queue,
                &[
                    &ms(now),
                    &worker,
                    &limit,
                    &lease_ms,
                    &max_running,
                    &clock,
                    &max_in_queue,
                    &max_per_key,
                    &interval_us,
                    &burst,
                ],
            )
            .await
        {
            Ok(value) => value,
            Err(err) => {
                // The claim may have run with its reply lost on the way back: put back what it
                // took, so those jobs neither wait out their lease nor spend an attempt.
                if matches!(
                    err.store_kind(),
                    Some(StoreErrorKind::Unavailable | StoreErrorKind::Timeout)
                ) {
                    self.put_back_unanswered(queue, &worker, ms(now)).await;
                }
                return Err(err);
            }
        };
        let jobs = decode_claimed(queue, value, &worker, ms(now), lease_ms)?;
        if !jobs.is_empty() {
            let name: Arc<str> = queue.into();
            for job in &jobs {
                self.remember(job.id, &name);
            }
            self.notify.notify_waiters();
        }
        Ok(jobs)
    }
}
