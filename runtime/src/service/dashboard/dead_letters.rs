//! The dead letters page: the latest dead letters grouped by their error, then the jobs that
//! ran out of attempts, each with a retry button, and the forms to retry them all or (admins)
//! purge them.

use axum::extract::State as Extract;
use maud::{Markup, html};

use super::jobs::JobsQuery;
use super::layout::{Result, page};
use super::session::action;
use super::{PAGE, Query, Visitor};
use crate::service::jobs::parse_id;
use crate::service::{Scope, State};

pub(super) async fn dead_letters(
    Extract(state): Extract<State>,
    visitor: Visitor,
    Query(query): Query<JobsQuery>,
) -> Result<Markup> {
    let logout = visitor.logout();
    let Visitor { caller, token, .. } = visitor;
    caller.require(Scope::Read)?;
    let queue = query.queue.filter(|q| !q.is_empty());
    let listing_queue = queue.clone();
    let after = query.cursor.as_deref().map(parse_id).transpose()?;
    let listing = state
        .control
        .dead_letters(&caller.view(), queue, after, PAGE)
        .await?;
    // The groups come from the latest dead letters (read in pages, at most GROUP_SAMPLE), shown
    // on the first page.
    let mut sample = Vec::new();
    if after.is_none() {
        let mut cursor = None;
        while sample.len() < GROUP_SAMPLE {
            let page = state
                .control
                .dead_letters(&caller.view(), listing_queue.clone(), cursor, 500)
                .await?;
            sample.extend(page.items);
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    let groups = by_error(&sample);
    let may_submit = caller.has(Scope::Submit);
    let admin = caller.has(Scope::Admin);
    Ok(page(
        "Dead letters",
        None,
        logout.as_ref(),
        html! {
            @if !groups.is_empty() {
                h2 { "By error" }
                p.muted { "Of the latest " (sample.len()) " dead letters"
                    @if sample.len() >= GROUP_SAMPLE { " (the most this page reads)" } "." }
                table {
                    tr { th { "error" } th { "dead letters" } th { "first" } th { "last" } }
                    @for group in groups.iter().take(GROUPS_SHOWN) {
                        tr {
                            td { (group.message) }
                            td { (group.count) }
                            td { (group.first.format("%Y-%m-%d %H:%M:%S UTC")) }
                            td { (group.last.format("%Y-%m-%d %H:%M:%S UTC")) }
                        }
                    }
                }
                h2 { "Every dead letter" }
            }
            table {
                tr { th { "id" } th { "queue" } th { "kind" } th { "last error" } th { "finished" } th { "" } }
                @for job in &listing.items {
                    tr {
                        td { a href=(format!("/dashboard/jobs/{}", job.id)) { code { (job.id) } } }
                        td { (job.queue) }
                        td { (job.kind) }
                        td { @if let Some(e) = &job.error { (e.message) } }
                        td { @if let Some(t) = job.finished_at { (t.format("%Y-%m-%d %H:%M:%S UTC")) } }
                        td { @if may_submit { (action(&format!("/dashboard/jobs/{}/retry", job.id), "Retry", &token)) } }
                    }
                }
            }
            @if listing.items.is_empty() { p.muted { "No dead letters." } }
            @if let Some(cursor) = listing.next {
                p { a href=(format!("/dashboard/dead-letters?cursor={cursor}")) { "Next page →" } }
            }
            @if may_submit && !listing.items.is_empty() {
                p { (action("/dashboard/dead-letters/retry-all", "Retry all", &token)) }
            }
            @if admin && !listing.items.is_empty() {
                h2 { "Purge" }
                form method="post" action="/dashboard/dead-letters/purge" {
                    input type="hidden" name="csrf" value=(token.as_str());
                    label { input type="checkbox" name="confirm" value="yes"; " remove every dead letter for good" }
                    " "
                    button type="submit" { "Purge" }
                }
            }
        },
    ))
}

/// Dead letters read for the groups, at most.
const GROUP_SAMPLE: usize = 2_000;
/// Groups shown, the largest first.
const GROUPS_SHOWN: usize = 10;

/// The dead letters that failed with one error message.
#[derive(Debug, PartialEq)]
struct ErrorGroup {
    /// The message (its first 200 characters).
    message: String,
    count: usize,
    /// When the earliest and latest of them became dead letters.
    first: crate::job::Timestamp,
    last: crate::job::Timestamp,
}

/// `jobs` grouped by their last error's message, the largest group first (then the most
/// recent).
fn by_error(jobs: &[crate::job::Job]) -> Vec<ErrorGroup> {
    let mut groups: std::collections::HashMap<String, ErrorGroup> =
        std::collections::HashMap::new();
    for job in jobs {
        let message: String = job
            .error
            .as_ref()
            .map_or("(no error recorded)", |e| e.message.as_str())
            .chars()
            .take(200)
            .collect();
        let at = job.finished_at.unwrap_or(job.created_at);
        let group = groups.entry(message.clone()).or_insert(ErrorGroup {
            message,
            count: 0,
            first: at,
            last: at,
        });
        group.count += 1;
        group.first = group.first.min(at);
        group.last = group.last.max(at);
    }
    let mut groups: Vec<ErrorGroup> = groups.into_values().collect();
    groups.sort_by(|a, b| b.count.cmp(&a.count).then(b.last.cmp(&a.last)));
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{Job, JobError, NewJob, Payload};

    fn dead(message: &str, at_secs: i64) -> Job {
        let at = chrono::DateTime::from_timestamp(1_800_000_000 + at_secs, 0).unwrap();
        let mut job = Job::from_new(NewJob::new("q", "k", Payload::null()), at);
        job.error = Some(JobError::new(message));
        job.finished_at = Some(at);
        job
    }

    #[test]
    fn dead_letters_group_by_message_largest_first_with_first_and_last_seen() {
        let jobs = [
            dead("timeout", 10),
            dead("boom", 5),
            dead("timeout", 30),
            dead("timeout", 20),
            dead("boom", 40),
            dead("rare", 1),
        ];
        let groups = by_error(&jobs);
        let summary: Vec<(&str, usize, i64, i64)> = groups
            .iter()
            .map(|g| {
                let secs = |t: crate::job::Timestamp| t.timestamp() - 1_800_000_000;
                (g.message.as_str(), g.count, secs(g.first), secs(g.last))
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("timeout", 3, 10, 30),
                ("boom", 2, 5, 40),
                ("rare", 1, 1, 1)
            ]
        );
    }
}
