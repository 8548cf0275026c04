//! The indexes the in-memory store files each job under for its state, kept as jobs move so
//! claiming and counting read no job they do not return.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};

use super::{Indexes, ReadyKey};
use crate::job::{Job, JobId, JobState, Timestamp};
use crate::store::{StateCounts, fair};

/// `count` ready jobs of one tenant after the first `skip`, with their priorities.
pub(super) fn ready_slice(
    jobs: &BTreeMap<ReadyKey, JobId>,
    skip: usize,
    count: usize,
) -> std::collections::VecDeque<(i32, JobId)> {
    jobs.iter()
        .skip(skip)
        .take(count)
        .map(|((Reverse(priority), _, _), id)| (*priority, *id))
        .collect()
}

impl Indexes {
    /// Files `job` (inserted `order`th) under the index its state calls for.
    pub(super) fn add(&mut self, job: &Job, order: u64) {
        if let Some(tenant) = &job.tenant {
            self.counts_per_tenant
                .entry((job.queue.clone(), tenant.clone()))
                .or_default()
                .add(job.state, 1);
        }
        match self.counts.get_mut(&job.queue) {
            Some(counts) => counts.add(job.state, 1),
            None => self
                .counts
                .entry(job.queue.clone())
                .or_default()
                .add(job.state, 1),
        }
        match job.state {
            JobState::Queued => {
                let key = (Reverse(job.priority), job.run_at, order);
                let groups = match self.ready.get_mut(&job.queue) {
                    Some(groups) => groups,
                    None => self.ready.entry(job.queue.clone()).or_default(),
                };
                let tenant = job.tenant.as_deref().unwrap_or_default();
                let ready = match &job.limit_key {
                    None => match groups.get_mut(tenant) {
                        Some(ready) => ready,
                        None => groups.entry(tenant.to_owned()).or_default(),
                    },
                    Some(key) => groups
                        .entry(fair::group_name(tenant, Some(key)))
                        .or_default(),
                };
                ready.insert(key, job.id);
            }
            JobState::Scheduled | JobState::Retrying => {
                self.delayed.insert((job.run_at, order), job.id);
            }
            JobState::Running => {
                self.running.insert(job.id);
                if let Some(tenant) = &job.tenant {
                    *self
                        .running_per_tenant
                        .entry((job.queue.clone(), tenant.clone()))
                        .or_default() += 1;
                }
                if let Some(key) = &job.limit_key {
                    let group =
                        fair::group_name(job.tenant.as_deref().unwrap_or_default(), Some(key));
                    *self
                        .running_per_key
                        .entry((job.queue.clone(), group))
                        .or_default() += 1;
                }
            }
            _ => {}
        }
    }

    /// Takes `job` (inserted `order`th) out of the index it had when its state and run time
    /// were `before`.
    pub(super) fn remove(&mut self, job: &Job, order: u64, (state, run_at): (JobState, Timestamp)) {
        if let Some(counts) = self.counts.get_mut(&job.queue) {
            counts.remove(state, 1);
        }
        if let Some(tenant) = &job.tenant {
            let key = (job.queue.clone(), tenant.clone());
            if let Some(counts) = self.counts_per_tenant.get_mut(&key) {
                counts.remove(state, 1);
                if *counts == StateCounts::default() {
                    self.counts_per_tenant.remove(&key);
                }
            }
        }
        match state {
            JobState::Queued => {
                let tenant = job.tenant.as_deref().unwrap_or_default();
                let keyed;
                let group = match &job.limit_key {
                    None => tenant,
                    Some(key) => {
                        keyed = fair::group_name(tenant, Some(key));
                        keyed.as_str()
                    }
                };
                if let Some(groups) = self.ready.get_mut(&job.queue)
                    && let Some(ready) = groups.get_mut(group)
                {
                    ready.remove(&(Reverse(job.priority), run_at, order));
                    if ready.is_empty() {
                        groups.remove(group);
                    }
                }
            }
            JobState::Scheduled | JobState::Retrying => {
                self.delayed.remove(&(run_at, order));
            }
            JobState::Running => {
                self.running.remove(&job.id);
                if let Some(tenant) = &job.tenant {
                    decrement(
                        &mut self.running_per_tenant,
                        (job.queue.clone(), tenant.clone()),
                    );
                }
                if let Some(key) = &job.limit_key {
                    let group =
                        fair::group_name(job.tenant.as_deref().unwrap_or_default(), Some(key));
                    decrement(&mut self.running_per_key, (job.queue.clone(), group));
                }
            }
            _ => {}
        }
    }
}

/// One less at `key`, which leaves `counts` at zero.
fn decrement(counts: &mut HashMap<(String, String), u32>, key: (String, String)) {
    if let Some(n) = counts.get_mut(&key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(&key);
        }
    }
}
