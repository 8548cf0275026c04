//! Fair claiming: which ready jobs a claim takes when several tenants have jobs waiting.
//!
//! The ready jobs of a queue fall into groups, one per tenant plus one for jobs without a
//! tenant. A claim takes jobs one at a time: always a job of the highest priority waiting;
//! among groups whose best job has that priority, the group served longest ago (its *turn* is
//! the lowest); within a group, the usual order (earliest run time, then insertion order).
//! So a tenant that floods a queue gets one job in turn with every other tenant at the same
//! priority, however many it has waiting, and priorities still mean what they say.
//!
//! Every store runs this same rule: memory and SQLite through [`pick`], Redis in `claim.lua`.

use std::collections::VecDeque;

/// What groups of one tenant share: its turn and its running-jobs allowance. In a queue without
/// a keyed concurrency limit each tenant's jobs form one group, so a share has one group; with
/// one, each of the tenant's keys is a group, and the tenant still takes turns as one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Share {
    /// When the tenant was last served, as a turn number; 0 if never (or not lately).
    pub turn: u64,
    /// How many more of its jobs may start in this claim.
    pub room: usize,
}

/// One group's candidates for a claim.
#[derive(Debug)]
pub(crate) struct Group<T> {
    /// Its tenant's [`Share`].
    pub share: usize,
    /// When the group itself was last served: the order of a tenant's groups (its keys).
    pub turn: u64,
    /// How many more jobs the group may start in this claim (its key's running allowance).
    pub room: usize,
    /// Its next ready jobs, best first, with their priorities: the first few, not all of them
    /// (see [`fetch_size`]).
    pub ready: VecDeque<(i32, T)>,
    /// How many of its ready jobs have been fetched so far (the offset of the next fetch).
    pub fetched: usize,
    /// Whether the store may hold more of its ready jobs than were fetched.
    pub more: bool,
}

/// The group name of a job of `tenant` (`""` for none) under `limit_key`: the tenant's own
/// name without a key, else the tenant and the key joined by a unit separator, which no tenant
/// name holds (see [`tenant_of`]).
pub(crate) fn group_name(tenant: &str, limit_key: Option<&str>) -> String {
    match limit_key {
        None => tenant.to_owned(),
        Some(key) => format!("{tenant}\u{1f}{key}"),
    }
}

/// The tenant of group `name` (see [`group_name`]).
pub(crate) fn tenant_of(name: &str) -> &str {
    name.split_once('\u{1f}').map_or(name, |(tenant, _)| tenant)
}

/// How many ready jobs to fetch at a time for each of `groups` groups in a claim of `limit`:
/// all the claim could take when there is one group, a fair share (and one more) when there
/// are many, so a claim's cost does not grow with groups × limit.
pub(crate) fn fetch_size(groups: usize, limit: usize) -> usize {
    if groups <= 1 {
        limit
    } else {
        limit.div_ceil(groups) + 1
    }
}

/// Takes up to `limit` jobs from `groups` by the rule above, in the order they were chosen:
/// the highest priority; then the share (tenant) served longest ago; then, among its groups,
/// the one served longest ago. Every pick gives its group and its share the turn `*next` and
/// advances it; remaining ties go to the group listed first. When a group whose store holds
/// more runs out of fetched jobs, `refill` fetches its next ones (it appends to `ready`,
/// advances `fetched` and sets `more`).
pub(crate) fn pick<T, E>(
    groups: &mut [Group<T>],
    shares: &mut [Share],
    limit: usize,
    next: &mut u64,
    mut refill: impl FnMut(usize, &mut Group<T>) -> Result<(), E>,
) -> Result<Vec<T>, E> {
    let mut picked = Vec::with_capacity(limit);
    while picked.len() < limit {
        let best = groups
            .iter()
            .enumerate()
            .filter(|(_, g)| g.room > 0 && shares[g.share].room > 0)
            .filter_map(|(i, g)| {
                let share = shares[g.share].turn;
                g.ready
                    .front()
                    .map(|(priority, _)| (i, std::cmp::Reverse(*priority), share, g.turn))
            })
            .min_by_key(|&(i, priority, share, turn)| (priority, share, turn, i));
        let Some((i, _, _, _)) = best else { break };
        let group = &mut groups[i];
        let Some((_, job)) = group.ready.pop_front() else {
            break;
        };
        let share = &mut shares[group.share];
        share.room -= 1;
        share.turn = *next;
        group.room -= 1;
        group.turn = *next;
        *next += 1;
        picked.push(job);
        if group.ready.is_empty() && group.more && group.room > 0 && share.room > 0 {
            refill(i, group)?;
        }
    }
    Ok(picked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(turn: u64, room: usize, jobs: &[(i32, &'static str)]) -> Group<&'static str> {
        Group {
            share: usize::MAX,
            turn,
            room,
            ready: jobs.iter().copied().collect(),
            fetched: jobs.len(),
            more: false,
        }
    }

    /// One share per group, with the group's turn and an unlimited room, unless the group
    /// names a share already.
    fn shares_of(groups: &mut [Group<&'static str>]) -> Vec<Share> {
        let mut shares = Vec::new();
        for g in groups.iter_mut() {
            if g.share == usize::MAX {
                g.share = shares.len();
                shares.push(Share {
                    turn: g.turn,
                    room: usize::MAX,
                });
            }
        }
        shares
    }

    /// `pick` with nothing more to fetch, each group its own share.
    fn pick_all(
        groups: &mut [Group<&'static str>],
        limit: usize,
        next: &mut u64,
    ) -> Vec<&'static str> {
        let mut shares = shares_of(groups);
        pick(groups, &mut shares, limit, next, |_, _| Ok::<_, ()>(())).unwrap()
    }

    #[test]
    fn groups_are_refilled_as_they_run_out() {
        let store: Vec<(i32, &str)> = vec![(0, "a1"), (0, "a2"), (0, "a3"), (0, "a4")];
        let mut groups = [
            Group {
                share: usize::MAX,
                turn: 0,
                room: usize::MAX,
                ready: store[..1].iter().copied().collect(),
                fetched: 1,
                more: true,
            },
            group(0, usize::MAX, &[(0, "b1")]),
        ];
        let mut shares = shares_of(&mut groups);
        let mut next = 1;
        let mut fetches = 0;
        let picked = pick(&mut groups, &mut shares, 5, &mut next, |_, g| {
            fetches += 1;
            let chunk = &store[g.fetched..(g.fetched + 2).min(store.len())];
            g.ready.extend(chunk.iter().copied());
            g.fetched += chunk.len();
            g.more = g.fetched < store.len();
            Ok::<_, ()>(())
        })
        .unwrap();
        assert_eq!(picked, ["a1", "b1", "a2", "a3", "a4"]);
        assert_eq!(fetches, 2);
    }

    #[test]
    fn the_fetch_size_is_a_fair_share_of_the_claim() {
        assert_eq!(fetch_size(1, 32), 32);
        assert_eq!(fetch_size(4, 32), 9);
        assert_eq!(fetch_size(1000, 32), 2);
    }

    #[test]
    fn a_flood_takes_turns_with_a_trickle() {
        let flood: Vec<_> = (0..100).map(|_| (0, "a")).collect();
        let mut groups = [
            group(0, usize::MAX, &flood),
            group(0, usize::MAX, &[(0, "b"); 3]),
        ];
        let mut next = 1;
        let picked = pick_all(&mut groups, 8, &mut next);
        assert_eq!(picked, ["a", "b", "a", "b", "a", "b", "a", "a"]);
        assert_eq!(next, 9);
    }

    #[test]
    fn priority_comes_before_turns() {
        let mut groups = [
            group(0, usize::MAX, &[(0, "a0"), (0, "a1")]),
            group(5, usize::MAX, &[(9, "b9"), (1, "b1")]),
        ];
        let mut next = 10;
        assert_eq!(
            pick_all(&mut groups, 4, &mut next),
            ["b9", "b1", "a0", "a1"]
        );
    }

    #[test]
    fn the_group_served_longest_ago_goes_first() {
        let mut groups = [
            group(7, usize::MAX, &[(0, "a")]),
            group(3, usize::MAX, &[(0, "b")]),
        ];
        let mut next = 8;
        assert_eq!(pick_all(&mut groups, 1, &mut next), ["b"]);
        assert_eq!(groups[1].turn, 8);
    }

    #[test]
    fn a_group_without_room_is_passed_over() {
        let mut groups = [
            group(0, 2, &[(5, "a"), (5, "a"), (5, "a")]),
            group(0, usize::MAX, &[(0, "b"), (0, "b")]),
        ];
        let mut next = 1;
        assert_eq!(pick_all(&mut groups, 10, &mut next), ["a", "a", "b", "b"]);
        assert_eq!(groups[0].room, 0);
    }

    #[test]
    fn a_tenants_keys_take_one_turn_between_them() {
        // Tenant A has two keys, tenant B one: A's keys share A's turns, so B is served as
        // often as A, and A's keys alternate.
        let mut groups = [
            group(0, usize::MAX, &[(0, "a1"); 4]),
            group(0, usize::MAX, &[(0, "a2"); 4]),
            group(0, usize::MAX, &[(0, "b"); 4]),
        ];
        groups[0].share = 0;
        groups[1].share = 0;
        groups[2].share = 1;
        let mut shares = [
            Share {
                turn: 0,
                room: usize::MAX,
            },
            Share {
                turn: 0,
                room: usize::MAX,
            },
        ];
        let mut next = 1;
        let picked = pick(&mut groups, &mut shares, 6, &mut next, |_, _| {
            Ok::<_, ()>(())
        })
        .unwrap();
        assert_eq!(picked, ["a1", "b", "a2", "b", "a1", "b"]);
    }

    #[test]
    fn a_key_at_its_limit_is_passed_over_and_its_tenants_room_is_shared() {
        let mut groups = [
            group(0, 0, &[(9, "full")]),
            group(0, 5, &[(0, "k1"); 5]),
            group(0, 5, &[(0, "k2"); 5]),
        ];
        for g in &mut groups {
            g.share = 0;
        }
        let mut shares = [Share { turn: 0, room: 3 }];
        let mut next = 1;
        let picked = pick(&mut groups, &mut shares, 10, &mut next, |_, _| {
            Ok::<_, ()>(())
        })
        .unwrap();
        assert_eq!(
            picked,
            ["k1", "k2", "k1"],
            "three, the tenant's room, none of the full key"
        );
        assert_eq!(shares[0].room, 0);
    }

    #[test]
    fn group_names_carry_their_tenant() {
        assert_eq!(group_name("acme", None), "acme");
        assert_eq!(tenant_of(&group_name("acme", Some("customer 42"))), "acme");
        assert_eq!(tenant_of(&group_name("", Some("k"))), "");
        assert_ne!(group_name("acme", Some("")), group_name("acme", None));
    }
}
