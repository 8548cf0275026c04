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

/// One group's candidates for a claim.
#[derive(Debug)]
pub(crate) struct Group<T> {
    /// When the group was last served, as a turn number; 0 if never (or not lately).
    pub turn: u64,
    /// How many more jobs the group may start in this claim (its running-jobs allowance).
    pub room: usize,
    /// Its ready jobs, best first, with their priorities.
    pub ready: VecDeque<(i32, T)>,
}

/// Takes up to `limit` jobs from `groups` by the rule above, in the order they were chosen.
/// Every pick gives its group the turn `*next` and advances it; ties between groups with the
/// same priority and turn go to the one listed first.
pub(crate) fn pick<T>(groups: &mut [Group<T>], limit: usize, next: &mut u64) -> Vec<T> {
    let mut picked = Vec::with_capacity(limit);
    while picked.len() < limit {
        let best = groups
            .iter()
            .enumerate()
            .filter(|(_, g)| g.room > 0)
            .filter_map(|(i, g)| g.ready.front().map(|(priority, _)| (i, *priority, g.turn)))
            .min_by_key(|&(i, priority, turn)| (std::cmp::Reverse(priority), turn, i));
        let Some((i, _, _)) = best else { break };
        let group = &mut groups[i];
        let Some((_, job)) = group.ready.pop_front() else {
            break;
        };
        group.room -= 1;
        group.turn = *next;
        *next += 1;
        picked.push(job);
    }
    picked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(turn: u64, room: usize, jobs: &[(i32, &'static str)]) -> Group<&'static str> {
        Group {
            turn,
            room,
            ready: jobs.iter().copied().collect(),
        }
    }

    #[test]
    fn a_flood_takes_turns_with_a_trickle() {
        let flood: Vec<_> = (0..100).map(|_| (0, "a")).collect();
        let mut groups = [
            group(0, usize::MAX, &flood),
            group(0, usize::MAX, &[(0, "b"); 3]),
        ];
        let mut next = 1;
        let picked = pick(&mut groups, 8, &mut next);
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
        assert_eq!(pick(&mut groups, 4, &mut next), ["b9", "b1", "a0", "a1"]);
    }

    #[test]
    fn the_group_served_longest_ago_goes_first() {
        let mut groups = [
            group(7, usize::MAX, &[(0, "a")]),
            group(3, usize::MAX, &[(0, "b")]),
        ];
        let mut next = 8;
        assert_eq!(pick(&mut groups, 1, &mut next), ["b"]);
        assert_eq!(groups[1].turn, 8);
    }

    #[test]
    fn a_group_without_room_is_passed_over() {
        let mut groups = [
            group(0, 2, &[(5, "a"), (5, "a"), (5, "a")]),
            group(0, usize::MAX, &[(0, "b"), (0, "b")]),
        ];
        let mut next = 1;
        assert_eq!(pick(&mut groups, 10, &mut next), ["a", "a", "b", "b"]);
        assert_eq!(groups[0].room, 0);
    }
}
