//! What a claim on the in-memory store takes (fairly among tenants and keys, within the
//! limits), and what the limits hold back.

use std::collections::HashMap;

use super::indexes::ready_slice;
use super::{FastMap, Inner};
use crate::job::{JobId, Timestamp};
use crate::store::{ClaimLimits, fair};

/// Turns kept before those of keys with no job waiting are dropped.
const TURNS_KEPT: usize = 4096;

impl Inner {
    /// Up to `limit` ready jobs of `queue`, in the order a claim takes them (see [`fair`]),
    /// within `limits`.
    pub(super) fn choose(&mut self, queue: &str, limit: usize, limits: ClaimLimits) -> Vec<JobId> {
        let Some(ready) = self.idx.ready.get(queue) else {
            return Vec::new();
        };
        let limit = match limits.running {
            Some(_) => {
                let running = self.idx.counts.get(queue).map_or(0, |c| c.running);
                limit.min(crate::store::room(limits.running, running))
            }
            None => limit,
        };
        if limit == 0 {
            return Vec::new();
        }
        if let Some((name, jobs)) = ready.first_key_value()
            && ready.len() == 1
            && !name.contains('\u{1f}')
        {
            // One tenant (or none) without keys: no turns to take, its first jobs are the answer.
            let room = match limits.running_per_tenant {
                Some(max) if !name.is_empty() => {
                    let key = (queue.to_owned(), name.clone());
                    let running = self.idx.running_per_tenant.get(&key).copied().unwrap_or(0);
                    max.saturating_sub(running) as usize
                }
                _ => usize::MAX,
            };
            return jobs.values().take(limit.min(room)).copied().collect();
        }
        let fetch = fair::fetch_size(ready.len(), limit);
        let mut names: Vec<&str> = Vec::with_capacity(ready.len());
        let mut groups = Vec::with_capacity(ready.len());
        let mut shares: Vec<fair::Share> = Vec::new();
        let mut tenants: Vec<(String, String)> = Vec::new();
        let mut share_of: FastMap<&str, usize> = FastMap::default();
        for (name, jobs) in ready {
            let tenant = fair::tenant_of(name);
            let share = match share_of.get(tenant) {
                Some(&share) => share,
                None => {
                    let key = (queue.to_owned(), tenant.to_owned());
                    let room = match limits.running_per_tenant {
                        Some(max) if !tenant.is_empty() => {
                            let running =
                                self.idx.running_per_tenant.get(&key).copied().unwrap_or(0);
                            max.saturating_sub(running) as usize
                        }
                        _ => usize::MAX,
                    };
                    shares.push(fair::Share {
                        turn: self.turns.get(&key).copied().unwrap_or(0),
                        room,
                    });
                    tenants.push(key);
                    share_of.insert(tenant, shares.len() - 1);
                    shares.len() - 1
                }
            };
            let (room, turn) = if name.len() == tenant.len() {
                (usize::MAX, shares[share].turn)
            } else {
                let key = (queue.to_owned(), name.clone());
                let room = match limits.running_per_key {
                    Some(max) => {
                        let running = self.idx.running_per_key.get(&key).copied().unwrap_or(0);
                        max.saturating_sub(running) as usize
                    }
                    None => usize::MAX,
                };
                (room, self.turns.get(&key).copied().unwrap_or(0))
            };
            let room_now = room.min(shares[share].room);
            let count = fetch.min(room_now);
            groups.push(fair::Group {
                share,
                turn,
                room,
                ready: ready_slice(jobs, 0, count),
                fetched: count.min(jobs.len()),
                more: jobs.len() > count && room_now > 0,
            });
            names.push(name);
        }
        self.next_turn = self.next_turn.max(1);
        let refill = |i: usize, group: &mut fair::Group<JobId>| {
            let jobs = &ready[names[i]];
            let count = fetch.min(group.room);
            group.ready.extend(ready_slice(jobs, group.fetched, count));
            group.fetched = (group.fetched + count).min(jobs.len());
            group.more = jobs.len() > group.fetched;
            Ok::<_, std::convert::Infallible>(())
        };
        let Ok(chosen) = fair::pick(&mut groups, &mut shares, limit, &mut self.next_turn, refill);
        if names.len() > 1 {
            for (key, share) in tenants.into_iter().zip(&shares) {
                self.turns.insert(key, share.turn);
            }
            for (name, group) in names.into_iter().zip(&groups) {
                if name.len() != fair::tenant_of(name).len() {
                    // A key's turn is kept while it has jobs waiting (keys come and go).
                    let key = (queue.to_owned(), name.to_owned());
                    // (A key at its limit fetched nothing: it keeps its turn.)
                    if group.fetched > 0 && group.ready.is_empty() && !group.more {
                        self.turns.remove(&key);
                    } else {
                        self.turns.insert(key, group.turn);
                    }
                }
            }
        }
        if self.turns.len() > self.turns_kept {
            // Keys whose jobs left otherwise (cancelled, removed) keep a turn nobody reads:
            // dropped once there are many, and looked for again once as many more came.
            let ready = &self.idx.ready;
            self.turns.retain(|(queue, name), _| {
                !name.contains('\u{1f}') || ready.get(queue).is_some_and(|g| g.contains_key(name))
            });
            self.turns_kept = (self.turns.len() * 2).max(TURNS_KEPT);
        }
        chosen
    }

    /// See [`JobStore::held_by_limits`].
    pub(super) fn held(&self, queue: &str, limits: ClaimLimits, now: Timestamp) -> u64 {
        let Some(ready) = self.idx.ready.get(queue) else {
            return 0;
        };
        let total = ready.values().map(|jobs| jobs.len() as u64).sum();
        let running = self.idx.counts.get(queue).map_or(0, |c| c.running);
        let bucket_empty = limits.rate.is_some_and(|rate| {
            let tat = self.start_buckets.get(queue).copied();
            crate::store::rate::available(tat, crate::store::rate::micros_of(now), &rate) == 0
        });
        if crate::store::room(limits.running, running) == 0 || bucket_empty {
            return total;
        }
        let at_limit = |counts: &HashMap<(String, String), u32>, name: &str, max: Option<u32>| {
            max.is_some_and(|max| {
                let key = (queue.to_owned(), name.to_owned());
                counts.get(&key).copied().unwrap_or(0) >= max
            })
        };
        ready
            .iter()
            .filter(|(name, _)| {
                let tenant = fair::tenant_of(name);
                let keyed = name.len() != tenant.len();
                (!tenant.is_empty()
                    && at_limit(
                        &self.idx.running_per_tenant,
                        tenant,
                        limits.running_per_tenant,
                    ))
                    || (keyed && at_limit(&self.idx.running_per_key, name, limits.running_per_key))
            })
            .map(|(_, jobs)| jobs.len() as u64)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{JobState, NewJob, Payload};
    use crate::store::memory::MemoryStore;
    use crate::store::{JobFilter, JobStore};
    use std::time::Duration;

    #[tokio::test]
    async fn the_turns_of_keys_whose_jobs_went_elsewhere_do_not_pile_up() {
        let store = MemoryStore::new();
        let limits = ClaimLimits {
            running_per_key: Some(10),
            ..ClaimLimits::default()
        };
        let now = crate::job::now();
        // Each of many keys is served once with a job left behind, which is then cancelled:
        // its key's turn is never read again.
        for round in 0..(2 * TURNS_KEPT / 100) {
            let mut jobs = Vec::new();
            for k in 0..100 {
                for _ in 0..2 {
                    let mut job = NewJob::new("q", "k", Payload::null());
                    job.limit_key = Some(format!("key-{round}-{k}"));
                    jobs.push(job);
                }
            }
            store.enqueue(jobs, now).await.unwrap();
            store
                .claim_with("q", "w", 100, Duration::from_secs(60), limits, now)
                .await
                .unwrap();
            let waiting = store
                .list(
                    &JobFilter {
                        states: vec![JobState::Queued],
                        ..JobFilter::default()
                    },
                    None,
                    1000,
                )
                .await
                .unwrap();
            for job in waiting.items {
                store.cancel(job.id, now).await.unwrap();
            }
        }
        assert!(store.lock().turns.len() <= TURNS_KEPT + 100);
    }
}
