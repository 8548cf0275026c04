//! Reading jobs back: one job, listings in id order across queues and states, and counts.
//!
//! A listing merges the id sets of its queues and states: each state but running has a set of
//! ids with one score, read by range in id order; running jobs are the members of the leases
//! (scored by lease expiry), read whole and ordered here.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use redis::Cmd;

use super::RedisStore;
use super::codec::decode_job;
use super::conn::store_err;
use crate::error::Result;
use crate::job::{Job, JobId, JobState};
use crate::store::{JobFilter, Page, StateCounts};

/// Where a listing starts.
#[derive(Debug, Clone, Copy)]
pub(super) enum Bound<'a> {
    Start,
    After(&'a str),
    From(&'a str),
}

impl Bound<'_> {
    /// Whether `id` lies past the bound, going up (`ascending`) or down.
    fn admits(&self, id: &str, ascending: bool) -> bool {
        match (self, ascending) {
            (Bound::Start, _) => true,
            (Bound::After(b), true) => id > *b,
            (Bound::After(b), false) => id < *b,
            (Bound::From(b), true) => id >= *b,
            (Bound::From(b), false) => id <= *b,
        }
    }
}

/// A set of job ids a listing reads.
#[derive(Debug, Clone)]
enum IdSet {
    /// A sorted set whose members share one score: read in id order by range.
    Lex(String),
    /// The leases (running jobs, scored by lease expiry): read whole, then ordered. It holds
    /// no more jobs than the workers run at once.
    Leases(String),
}

impl IdSet {
    /// The command that reads this set's ids past `bound`, about `batch` of them.
    fn read(&self, bound: Bound<'_>, ascending: bool, batch: usize) -> Cmd {
        let key = match self {
            IdSet::Lex(key) => key,
            IdSet::Leases(key) => {
                // By score, short of +inf: the keeper member (`common.lua`) is no job.
                return redis::cmd("ZRANGE")
                    .arg(key)
                    .arg("-inf")
                    .arg("(+inf")
                    .arg("BYSCORE")
                    .clone();
            }
        };
        let (start, end) = match (bound, ascending) {
            (Bound::After(id), true) => (format!("({id}"), "+".to_owned()),
            (Bound::From(id), true) => (format!("[{id}"), "+".to_owned()),
            (Bound::Start, true) => ("-".to_owned(), "+".to_owned()),
            (Bound::After(id), false) => (format!("({id}"), "-".to_owned()),
            (Bound::From(id), false) => (format!("[{id}"), "-".to_owned()),
            (Bound::Start, false) => ("+".to_owned(), "-".to_owned()),
        };
        let mut cmd = redis::cmd("ZRANGE");
        cmd.arg(key).arg(start).arg(end).arg("BYLEX");
        if !ascending {
            cmd.arg("REV");
        }
        cmd.arg("LIMIT").arg(0).arg(batch);
        cmd
    }
}

/// Past the last id of a set that filled its batch, that set may hold ids not read yet: only
/// ids up to the nearest such boundary are complete. That boundary, if any set filled its batch.
fn horizon(answers: &[Vec<String>], ascending: bool, batch: usize) -> Option<String> {
    let mut horizon: Option<String> = None;
    for ids in answers {
        if ids.len() >= batch
            && let Some(last) = ids.last()
        {
            let nearer = match &horizon {
                None => true,
                Some(h) if ascending => last < h,
                Some(h) => last > h,
            };
            if nearer {
                horizon = Some(last.clone());
            }
        }
    }
    horizon
}

impl RedisStore {
    /// Job `id` of `queue`, if it exists.
    pub(super) async fn fetch(&self, queue: &str, id: JobId) -> Result<Option<Job>> {
        let fields: HashMap<String, String> = self
            .shared
            .redis
            .query(
                "get job",
                redis::cmd("HGETALL")
                    .arg(self.shared.keys.queue_to_read(queue).job(&id.to_string())),
            )
            .await?;
        if fields.is_empty() {
            return Ok(None);
        }
        decode_job(queue, id, fields).map(Some)
    }

    /// Jobs by (queue, id), in order, skipping the ones that are gone.
    async fn fetch_many(&self, ids: &[(Arc<str>, String)]) -> Result<Vec<Job>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let cmds = ids
            .iter()
            .map(|(queue, id)| {
                redis::cmd("HGETALL")
                    .arg(self.shared.keys.queue_to_read(queue).job(id))
                    .clone()
            })
            .collect();
        let all: Vec<HashMap<String, String>> = self.shared.redis.many("get jobs", cmds).await?;
        let mut jobs = Vec::with_capacity(ids.len());
        for ((queue, id), fields) in ids.iter().zip(all) {
            if fields.is_empty() {
                continue;
            }
            let id: JobId = id.parse().map_err(|e| store_err("job id", e))?;
            jobs.push(decode_job(queue, id, fields)?);
        }
        Ok(jobs)
    }

    /// Ids from the sets `sets` (each with its queue), merged in id order (descending unless
    /// `ascending`), past `bound`, up to about `batch` per set. Returns them and whether any
    /// set has more.
    async fn merged_ids(
        &self,
        sets: &[(Arc<str>, IdSet)],
        bound: Bound<'_>,
        ascending: bool,
        batch: usize,
    ) -> Result<(Vec<(Arc<str>, String)>, bool)> {
        let cmds = sets
            .iter()
            .map(|(_, set)| set.read(bound, ascending, batch))
            .collect();
        let mut answers: Vec<Vec<String>> = self.shared.redis.many("list ids", cmds).await?;
        for ((_, set), ids) in sets.iter().zip(&mut answers) {
            if let IdSet::Leases(_) = set {
                ids.retain(|id| bound.admits(id, ascending));
                ids.sort_unstable_by(|a, b| if ascending { a.cmp(b) } else { b.cmp(a) });
                ids.truncate(batch);
            }
        }
        let horizon = horizon(&answers, ascending, batch);
        let mut seen = HashSet::new();
        let mut merged: Vec<(Arc<str>, String)> = Vec::new();
        for ((queue, _), ids) in sets.iter().zip(answers) {
            for id in ids {
                let within = match &horizon {
                    None => true,
                    Some(h) if ascending => id <= *h,
                    Some(h) => id >= *h,
                };
                if within && seen.insert(id.clone()) {
                    merged.push((queue.clone(), id));
                }
            }
        }
        if ascending {
            merged.sort_by(|a, b| a.1.cmp(&b.1));
        } else {
            merged.sort_by(|a, b| b.1.cmp(&a.1));
        }
        Ok((merged, horizon.is_some()))
    }

    /// Jobs passing `keep`, from the state sets of `queues` and `states` (`tenant`'s own sets
    /// when one is given), in id order, at most `limit` + 1 of them (the one past `limit` says
    /// there are more).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn scan_jobs(
        &self,
        queues: &[String],
        states: &[JobState],
        tenant: Option<&str>,
        start: Bound<'_>,
        ascending: bool,
        limit: usize,
        mut keep: impl FnMut(&Job) -> bool,
    ) -> Result<Vec<Job>> {
        let mut sets: Vec<(Arc<str>, IdSet)> = Vec::new();
        for queue in queues {
            let keys = self.shared.keys.queue_to_read(queue);
            let queue: Arc<str> = queue.as_str().into();
            for state in states {
                let set = match (tenant, keys.state(*state)) {
                    (Some(tenant), _) => IdSet::Lex(keys.tenant_state(*state, tenant)),
                    (None, Some(key)) => IdSet::Lex(key.to_owned()),
                    (None, None) => IdSet::Leases(keys.leases().to_owned()),
                };
                sets.push((queue.clone(), set));
            }
        }
        let batch = (limit + 1).clamp(1, 1000);
        let mut found = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let bound = cursor.as_deref().map_or(start, Bound::After);
            let (ids, more) = self.merged_ids(&sets, bound, ascending, batch).await?;
            for job in self.fetch_many(&ids).await? {
                if keep(&job) {
                    found.push(job);
                    if found.len() > limit {
                        return Ok(found);
                    }
                }
            }
            match ids.last() {
                Some((_, last)) if more => cursor = Some(last.clone()),
                _ => return Ok(found),
            }
        }
    }

    /// The jobs `filter` selects, newest first, after `after`.
    pub(super) async fn list_jobs(
        &self,
        filter: &JobFilter,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Page<Job>> {
        let queues = if filter.queues.is_empty() {
            self.queues().await?
        } else {
            filter.queues.clone()
        };
        let states = if filter.states.is_empty() {
            JobState::ALL.to_vec()
        } else {
            filter.states.clone()
        };
        let after = after.map(|a| a.to_string());
        let bound = after.as_deref().map_or(Bound::Start, Bound::After);
        let mut items = self
            .scan_jobs(
                &queues,
                &states,
                filter.tenant.as_deref(),
                bound,
                false,
                limit,
                |job| filter.matches(job),
            )
            .await?;
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|job| job.id)
        } else {
            None
        };
        Ok(Page { items, next })
    }

    /// Up to `limit` jobs of every queue and state whose id is `from` or later, in id order.
    pub(super) async fn list_from(&self, from: JobId, limit: usize) -> Result<Vec<Job>> {
        let from = from.to_string();
        let queues = self.queues().await?;
        let bound = Bound::From(&from);
        // A scan reads one job past `limit`, for paging.
        let mut jobs = self
            .scan_jobs(&queues, &JobState::ALL, None, bound, true, limit, |_| true)
            .await?;
        jobs.truncate(limit);
        Ok(jobs)
    }

    /// How many jobs of `tenant` wait in `queue`: the sizes of three of its sets.
    pub(super) async fn count_tenant_waiting(&self, queue: &str, tenant: &str) -> Result<u64> {
        let keys = self.shared.keys.queue_to_read(queue);
        let cmds = [JobState::Queued, JobState::Scheduled, JobState::Retrying]
            .map(|state| {
                redis::cmd("ZCARD")
                    .arg(keys.tenant_state(state, tenant))
                    .clone()
            })
            .to_vec();
        let sizes: Vec<u64> = self.shared.redis.many("count waiting", cmds).await?;
        Ok(sizes.iter().sum())
    }

    /// How many jobs of `tenant` `queue` holds in each state: the sizes of its sets.
    pub(super) async fn count_tenant_jobs(&self, queue: &str, tenant: &str) -> Result<StateCounts> {
        let keys = self.shared.keys.queue_to_read(queue);
        let cmds = JobState::ALL
            .map(|state| {
                redis::cmd("ZCARD")
                    .arg(keys.tenant_state(state, tenant))
                    .clone()
            })
            .to_vec();
        let sizes: Vec<u64> = self.shared.redis.many("tenant counts", cmds).await?;
        let mut counts = StateCounts::default();
        for (state, n) in JobState::ALL.into_iter().zip(sizes) {
            counts.add(state, n);
        }
        Ok(counts)
    }

    /// How many jobs each queue holds in each state.
    pub(super) async fn count_jobs(&self) -> Result<BTreeMap<String, StateCounts>> {
        let queues = self.queues().await?;
        let cmds = queues
            .iter()
            .flat_map(|queue| {
                let keys = self.shared.keys.queue_to_read(queue);
                JobState::ALL.map(|state| match keys.state(state) {
                    Some(key) => redis::cmd("ZCARD").arg(key).clone(),
                    // Short of +inf: the keeper member (`common.lua`) is no job.
                    None => redis::cmd("ZCOUNT")
                        .arg(keys.leases())
                        .arg("-inf")
                        .arg("(+inf")
                        .clone(),
                })
            })
            .collect();
        let all: Vec<u64> = self.shared.redis.many("counts", cmds).await?;
        Ok(queues
            .into_iter()
            .zip(all.chunks(JobState::ALL.len()))
            .map(|(queue, numbers)| {
                let mut counts = StateCounts::default();
                for (state, n) in JobState::ALL.into_iter().zip(numbers) {
                    counts.add(state, *n);
                }
                (queue, counts)
            })
            .collect())
    }
}
