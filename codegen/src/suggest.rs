//! Did-you-mean suggestions for near-miss names.

/// The candidate closest to `wrong`, if it is close enough to be what the author meant.
pub fn closest<'a>(wrong: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let wrong_lower = wrong.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| {
            let normalized = c.to_ascii_lowercase().replace('-', "_");
            let distance = strsim::damerau_levenshtein(&wrong_lower.replace('-', "_"), &normalized);
            (distance, c)
        })
        .filter(|&(distance, c)| distance <= max_distance(wrong.len().max(c.len())))
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, c)| c)
}

/// `did you mean `x`?`, or nothing.
pub fn did_you_mean<'a>(
    wrong: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    closest(wrong, candidates).map(|c| format!("did you mean `{c}`?"))
}

// One edit for short words, about a third of the length for longer ones.
fn max_distance(len: usize) -> usize {
    len.div_ceil(3).clamp(1, 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_typos_transpositions_and_separator_mixups() {
        let names = ["concurrency", "queue", "timeout"];
        assert_eq!(closest("concurency", names), Some("concurrency"));
        assert_eq!(closest("qeueu", names), Some("queue"));
        assert_eq!(closest("qeue", names), Some("queue"));
        assert_eq!(closest("time_out", names), Some("timeout"));
        assert_eq!(closest("job-queue", ["job_queue"]), Some("job_queue"));
    }

    #[test]
    fn does_not_suggest_unrelated_names() {
        assert_eq!(closest("colour", ["concurrency", "queue"]), None);
        assert_eq!(did_you_mean("x", ["queue"]), None);
    }
}
