//! Upkeep: promoting due jobs, taking back jobs whose lease lapsed (or that lost their lease
//! entry), retention, and claiming cron ticks.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::codec::ms;
use super::conn::store_err;
use super::{RedisStore, SWEEP};
use crate::error::Result;
use crate::job::{JobError, Timestamp};
use crate::store::{CronTicks, Leadership, Purged, Recovered, Retention, RetentionPolicy, before};

/// How long a claimed cron tick is remembered.
const TICK_MEMORY: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often, at most, a queue's records are looked through for lost lease entries.
const LOST_LEASE_SCAN_INTERVAL: Duration = Duration::from_secs(60);

impl RedisStore {
    /// Takes back the running jobs of every queue whose lease lapsed.
    pub(super) async fn recover_jobs(&self, now: Timestamp) -> Result<Vec<Recovered>> {
        let error = serde_json::to_string(&JobError::new(
            "the worker's lease expired before the job finished",
        ))?;
        let clock = self.shared.lease_clock(now);
        let mut recovered = Vec::new();
        for queue in self.queues().await? {
            self.find_lost_leases(&queue).await?;
            self.index_tenants(&queue).await?;
            loop {
                let answer: Vec<(String, String)> = self
                    .shared
                    .run(
                        "recover",
                        &self.shared.scripts.recover,
                        &queue,
                        &[&ms(now), &SWEEP, &error, &clock],
                    )
                    .await?;
                let done = answer.len() < SWEEP;
                for (id, state) in answer {
                    recovered.push(Recovered {
                        id: id.parse().map_err(|e| store_err("recover", e))?,
                        queue: queue.clone(),
                        state: state.parse()?,
                    });
                }
                if done {
                    break;
                }
            }
        }
        if !recovered.is_empty() {
            self.notify.notify_waiters();
        }
        Ok(recovered)
    }

    /// Marks the due scheduled and retrying jobs of every queue as queued; returns how many.
    pub(super) async fn promote_jobs(&self, now: Timestamp) -> Result<u64> {
        let mut total = 0;
        for queue in self.queues().await? {
            loop {
                let n: u64 = self
                    .shared
                    .run(
                        "promote",
                        &self.shared.scripts.promote,
                        &queue,
                        &[&ms(now), &SWEEP],
                    )
                    .await?;
                total += n;
                if n < SWEEP as u64 {
                    break;
                }
            }
        }
        Ok(total)
    }

    /// When the running count of `queue` and its lease entries disagree, a running job lost
    /// its lease entry (a partial restore, a hand edit): looks through the queue's records and
    /// gives each such job an expired lease, for recovery to take back. The two are compared
    /// in one script; a look through the records, which reads every job of the queue, happens
    /// at most once a minute per queue.
    /// Files the jobs of `queue` stored before tenants had their own indexes under them, once
    /// (`index_tenants.lua`); until then a tenant's listings and counts miss those jobs.
    async fn index_tenants(&self, queue: &str) -> Result<()> {
        let indexed = |store: &Self| {
            store
                .tenants_indexed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(queue)
        };
        if indexed(self) {
            return Ok(());
        }
        let mut cursor = "0".to_owned();
        let mut filed = 0;
        loop {
            let (next, n, looked): (String, u64, u8) = self
                .shared
                .run(
                    "index tenants",
                    &self.shared.scripts.index_tenants,
                    queue,
                    &[&cursor],
                )
                .await?;
            filed += n;
            if looked == 0 || next == "0" {
                break;
            }
            cursor = next;
        }
        if filed > 0 {
            tracing::info!(
                queue,
                filed,
                "jobs stored before tenants had their own indexes are filed under them"
            );
        }
        self.tenants_indexed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(queue.to_owned());
        Ok(())
    }

    async fn find_lost_leases(&self, queue: &str) -> Result<()> {
        let recently = self
            .lost_scans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(queue)
            .is_some_and(|at| at.elapsed() < LOST_LEASE_SCAN_INTERVAL);
        if recently {
            return Ok(());
        }
        let mut cursor = "0".to_owned();
        let mut found = 0;
        loop {
            let (next, n, looked): (String, u64, u8) = self
                .shared
                .run(
                    "find lost leases",
                    &self.shared.scripts.lost,
                    queue,
                    &[&cursor],
                )
                .await?;
            if looked == 0 {
                return Ok(());
            }
            if cursor == "0" {
                self.lost_scans
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(queue.to_owned(), Instant::now());
            }
            found += n;
            if next == "0" {
                break;
            }
            cursor = next;
        }
        if found > 0 {
            tracing::warn!(
                queue,
                found,
                "running jobs without a lease entry found; they are taken back as if their lease had expired"
            );
        }
        Ok(())
    }
}

#[async_trait]
impl CronTicks for RedisStore {
    async fn claim_tick(&self, task: &str, tick: Timestamp, now: Timestamp) -> Result<bool> {
        let claimed: Option<String> = self
            .shared
            .redis
            .query(
                "claim cron tick",
                redis::cmd("SET")
                    .arg(self.shared.keys.cron_tick(task, ms(tick)))
                    .arg(ms(now))
                    .arg("NX")
                    .arg("PX")
                    .arg(TICK_MEMORY.as_millis() as u64),
            )
            .await?;
        Ok(claimed.is_some())
    }
}

#[async_trait]
impl Leadership for RedisStore {
    async fn try_lead(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<bool> {
        let mut invocation = self.shared.scripts.lead.key(self.shared.keys.lead(name));
        invocation
            .arg(holder)
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
            .arg(self.shared.lease_clock(now));
        let held: u8 = self
            .shared
            .redis
            .invoke("take the lead", &invocation)
            .await?;
        Ok(held == 1)
    }
}

#[async_trait]
impl Retention for RedisStore {
    async fn purge_expired(
        &self,
        policies: &BTreeMap<String, RetentionPolicy>,
        default: RetentionPolicy,
        events: Duration,
        now: Timestamp,
    ) -> Result<Purged> {
        let mut purged = Purged::default();
        let horizon = ms(before(now, events));
        for queue in self.queues().await? {
            let policy = policies.get(&queue).unwrap_or(&default);
            loop {
                let mut answer: Vec<String> = self
                    .shared
                    .run(
                        "retention",
                        &self.shared.scripts.purge,
                        &queue,
                        &[
                            &ms(now),
                            &(policy.succeeded.as_millis() as u64),
                            &(policy.failed.as_millis() as u64),
                            &(policy.dead.as_millis() as u64),
                            &SWEEP,
                            &horizon,
                        ],
                    )
                    .await?;
                let events_removed: u64 = answer.pop().and_then(|n| n.parse().ok()).unwrap_or(0);
                purged.events += events_removed;
                purged.jobs += answer.len() as u64;
                self.unlocate(&answer).await?;
                if answer.len() < SWEEP && events_removed < SWEEP as u64 {
                    break;
                }
            }
        }
        purged.kv_entries += self.purge_expired_kv(now).await?;
        Ok(purged)
    }
}
