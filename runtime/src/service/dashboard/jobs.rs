//! The jobs pages: the filtered listing (with a box to go to a job by id) and one job's page
//! with its history, attempts, payload and result.

use axum::extract::{Path, State as Extract};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{PageError, Result, duration, millis, page, state_color, utc};
use super::session::action;
use super::{PAGE, Query, Visitor};
use crate::job::{Job, JobState, Timestamp};
use crate::service::jobs::parse_id;
use crate::service::{ErrorCode, Scope, State};
use crate::store::JobFilter;

/// Which jobs to list.
#[derive(Debug, Deserialize)]
pub(super) struct JobsQuery {
    pub(super) queue: Option<String>,
    state: Option<String>,
    kind: Option<String>,
    /// A job id to go to.
    id: Option<String>,
    pub(super) cursor: Option<String>,
}

fn jobs_table(items: &[Job]) -> Markup {
    html! {
        table {
            tr { th { "id" } th { "queue" } th { "kind" } th { "state" } th { "attempt" } th { "created" } }
            @for job in items {
                tr {
                    td { a href=(format!("/dashboard/jobs/{}", job.id)) { code { (job.id) } } }
                    td { (job.queue) }
                    td { (job.kind) }
                    td.state style=(format!("color:{}", state_color(job.state))) { (job.state) }
                    td { (job.attempt) "/" (job.max_attempts) }
                    td { (job.created_at.format("%Y-%m-%d %H:%M:%S UTC")) }
                }
            }
        }
    }
}

pub(super) async fn jobs(
    Extract(state): Extract<State>,
    visitor: Visitor,
    Query(query): Query<JobsQuery>,
) -> Result<Response> {
    let logout = visitor.logout();
    let caller = visitor.caller;
    caller.require(Scope::Read)?;
    if let Some(id) = query.id.as_deref().map(str::trim).filter(|i| !i.is_empty()) {
        let id = parse_id(id)?;
        return Ok(Redirect::to(&format!("/dashboard/jobs/{id}")).into_response());
    }
    let states = match query.state.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => vec![s.parse::<JobState>().map_err(|_| {
            PageError::new(ErrorCode::InvalidQuery, format!("`{s}` is not a job state"))
        })?],
        None => Vec::new(),
    };
    let queue = query.queue.clone().filter(|q| !q.is_empty());
    let filter = JobFilter {
        queues: queue.clone().into_iter().collect(),
        states,
        kind: query.kind.clone().filter(|k| !k.is_empty()),
        tenant: None,
    };
    let after = query.cursor.as_deref().map(parse_id).transpose()?;
    let listing = state
        .control
        .list(&caller.view(), filter.clone(), after, PAGE)
        .await?;
    let next_url = listing.next.map(|cursor| {
        let mut params: Vec<(&str, String)> = [
            ("queue", &queue),
            ("state", &query.state),
            ("kind", &filter.kind),
        ]
        .into_iter()
        .filter_map(|(key, value)| Some((key, value.clone().filter(|v| !v.is_empty())?)))
        .collect();
        params.push(("cursor", cursor.to_string()));
        // Encoding a list of string pairs cannot fail.
        let query = serde_urlencoded::to_string(&params).unwrap_or_default();
        format!("/dashboard/jobs?{query}")
    });
    Ok(page(
        "Jobs",
        None,
        logout.as_ref(),
        html! {
            (filters(state.control.served(), queue.as_deref(), &filter, query.state.as_deref()))
            form method="get" action="/dashboard/jobs" {
                label { "find by id " input type="text" name="id" size="38"; }
                " "
                button type="submit" { "Go" }
            }
            (jobs_table(&listing.items))
            @if listing.items.is_empty() { p.muted { "No jobs." } }
            @if let Some(url) = next_url { p { a href=(url) { "Next page →" } } }
        },
    )
    .into_response())
}

/// The listing's filter form, showing the filter in force (`state` as it was asked for).
fn filters(
    queues: &[String],
    queue: Option<&str>,
    filter: &JobFilter,
    state: Option<&str>,
) -> Markup {
    html! {
        form method="get" action="/dashboard/jobs" {
            label { "queue " select name="queue" {
                option value="" { "any" }
                @for q in queues {
                    option value=(q) selected[queue == Some(q.as_str())] { (q) }
                }
            } }
            " "
            label { "state " select name="state" {
                option value="" { "any" }
                @for s in JobState::ALL {
                    option value=(s) selected[state == Some(s.as_str())] { (s) }
                }
            } }
            " "
            label { "kind " input type="text" name="kind" value=[filter.kind.as_deref()]; }
            " "
            button type="submit" { "Filter" }
        }
    }
}

/// JSON text pretty-printed, or as it is when it does not parse.
fn pretty(json: &str) -> String {
    serde_json::from_str::<serde_json::Value>(json)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| json.to_owned())
}

pub(super) async fn job(
    Extract(state): Extract<State>,
    visitor: Visitor,
    Path(id): Path<String>,
) -> Result<Markup> {
    let logout = visitor.logout();
    let Visitor { caller, token, .. } = visitor;
    caller.require(Scope::Read)?;
    let id = parse_id(&id)?;
    let job = state.control.find_job(&caller.view(), id).await?;
    // A tenant hears of its own keys only, not of the queue's other tenants' running jobs.
    let whole_queue = matches!(caller.view(), crate::control::View::All);
    let waiting = why_waiting(state.control.engine(), &job, whole_queue).await;
    let may_submit = caller.has(Scope::Submit);
    Ok(page(
        &format!("Job {id}"),
        None,
        logout.as_ref(),
        html! {
            (summary(&job))
            @if let Some(why) = waiting { p.waiting { (why) } }
            @if may_submit {
                p {
                    @if !job.state.is_finished() {
                        (action(&format!("/dashboard/jobs/{id}/cancel"), "Cancel", &token))
                    }
                    @if job.state == JobState::Dead {
                        (action(&format!("/dashboard/jobs/{id}/retry"), "Retry now", &token))
                    }
                }
            }
            @if !job.attempts.is_empty() {
                h2 { "Timeline" }
                (waterfall(&job, crate::job::now()))
            }
            h2 { "History" }
            ol { @for (at, what) in history(&job) { li { (utc(at)) " — " (what) } } }
            h2 { "Attempts" }
            table {
                tr { th { "#" } th { "worker" } th { "started" } th { "took" } th { "error" } }
                @for attempt in &job.attempts {
                    tr {
                        td { (attempt.number) }
                        td { (attempt.worker) }
                        td { (attempt.started_at.to_rfc3339()) }
                        td { (duration(attempt.finished_at.map(|f| millis(f - attempt.started_at)))) }
                        td { @if let Some(e) = &attempt.error { (e.message) } }
                    }
                }
            }
            h2 { "Payload" }
            pre { code { (pretty(job.payload.as_str())) } }
            @if !job.headers.is_empty() {
                h2 { "Headers" }
                table { @for (k, v) in &job.headers { tr { th { (k) } td { (v) } } } }
            }
            @if let Some(result) = &job.result {
                h2 { "Result" }
                pre { code { (pretty(result.as_str())) } }
            }
        },
    ))
}

/// Running jobs read at most to tell whether a queued job's key is at its limit.
const RUNNING_LOOKED_AT: usize = 500;

/// Why a queued job of a queue with limits may be waiting, in words: its key (or, for a caller
/// who sees the `whole_queue`, its queue) at its concurrency limit, read from the running jobs
/// now, or the queue's rate limit.
async fn why_waiting(
    engine: &crate::engine::Engine,
    job: &Job,
    whole_queue: bool,
) -> Option<String> {
    if job.state != JobState::Queued {
        return None;
    }
    let queue = engine
        .app()
        .queues
        .iter()
        .find(|q| q.name.as_str() == job.queue)?;
    let store = engine.store();
    if let Some(limit) = &queue.concurrency_limit {
        let filter = JobFilter {
            queues: vec![job.queue.clone()],
            states: vec![JobState::Running],
            kind: None,
            tenant: if limit.key.is_some() {
                job.tenant.clone()
            } else {
                None
            },
        };
        let running = store
            .list(&filter, None, RUNNING_LOOKED_AT)
            .await
            .ok()?
            .items;
        match (&limit.key, &job.limit_key) {
            (Some(_), Some(key)) => {
                let same = running
                    .iter()
                    .filter(|r| r.limit_key.as_ref() == Some(key))
                    .count();
                if same >= limit.max as usize {
                    let shown = if key.is_empty() {
                        "(none)"
                    } else {
                        key.as_str()
                    };
                    return Some(format!(
                        "waiting: key {shown} at its limit of {} running",
                        limit.max
                    ));
                }
            }
            (None, _) if whole_queue && running.len() >= limit.max as usize => {
                return Some(format!(
                    "waiting: the queue at its limit of {} running",
                    limit.max
                ));
            }
            _ => {}
        }
    }
    queue.rate_limit.map(|rate| {
        format!(
            "the queue starts at most {} jobs per {} (bursts of {})",
            rate.jobs, rate.per, rate.burst
        )
    })
}

/// The table at the top of a job's page: where it is, how far it got, when.
fn summary(job: &Job) -> Markup {
    html! {
        table {
            tr { th { "queue" } td { (job.queue) } }
            tr { th { "kind" } td { (job.kind) } }
            tr { th { "state" } td.state style=(format!("color:{}", state_color(job.state))) { (job.state) } }
            @if let Some(tenant) = &job.tenant { tr { th { "tenant" } td { (tenant) } } }
            @if let Some(key) = &job.limit_key { tr { th { "limit key" } td { (key) } } }
            tr { th { "priority" } td { (job.priority) } }
            tr { th { "attempt" } td { (job.attempt) " of " (job.max_attempts) } }
            @if job.snoozes > 0 { tr { th { "snoozed" } td { (job.snoozes) " times" } } }
            @if let Some(progress) = &job.progress {
                tr { th { "progress" } td {
                    progress max="100" value=(progress.percent) { (progress.percent) "%" }
                    " " (progress.percent) "% " (progress.message)
                } }
            }
            tr { th { "created" } td { (job.created_at.to_rfc3339()) } }
            tr { th { "runs at" } td { (job.run_at.to_rfc3339()) } }
            @if let Some(t) = job.started_at { tr { th { "started" } td { (t.to_rfc3339()) } } }
            @if let Some(t) = job.finished_at { tr { th { "finished" } td { (t.to_rfc3339()) } } }
            @if let Some(error) = &job.error { tr { th { "error" } td { (error.message) } } }
        }
    }
}

/// Each attempt as a row of a waterfall over the job's life (from its creation to its end, or
/// `now`): grey while it waited (from the job's due time or the previous attempt's end), then
/// its run — green when it succeeded, red when it failed, blue while it runs. Each bar's title
/// says what it was and how long, for readers without a mouse too (SVG `<title>`).
fn waterfall(job: &Job, now: Timestamp) -> Markup {
    let end = job.finished_at.unwrap_or(now).max(job.created_at);
    let span = millis(end - job.created_at).max(1.0);
    let x = |t: Timestamp| (millis(t - job.created_at).max(0.0) / span * 100.0).min(100.0);
    let row = 8.0;
    let height = row * job.attempts.len() as f64;
    // Each attempt waited from the job's due time (the first) or the previous one's end.
    let waited_from: Vec<Timestamp> = std::iter::once(job.run_at.max(job.created_at))
        .chain(job.attempts.iter().map(|a| a.finished_at.unwrap_or(now)))
        .collect();
    html! {
        svg.timeline width="100%" height=(format!("{}", height * 3.0)) viewBox=(format!("0 0 100 {height}"))
            preserveAspectRatio="none" role="img"
            aria-label=(format!("{} attempts over {}", job.attempts.len(), duration(Some(span)))) {
            @for (i, attempt) in job.attempts.iter().enumerate() {
                @let y = i as f64 * row + 1.0;
                @let start = attempt.started_at;
                @let waited_from = waited_from[i];
                @let finish = attempt.finished_at.unwrap_or(now);
                @let (class, color, outcome) = match (&attempt.error, attempt.finished_at) {
                    (Some(e), _) => ("failed", "#cf222e", format!("failed: {}", e.message)),
                    (None, Some(_)) => ("ran", "#1a7f37", "succeeded".to_owned()),
                    (None, None) => ("running", "#0969da", "running".to_owned()),
                };
                @if start > waited_from {
                    rect.waited x=(format!("{:.2}", x(waited_from))) y=(y) width=(format!("{:.2}", (x(start) - x(waited_from)).max(0.3))) height=(row - 2.0) fill="#afb8c1" {
                        title { "attempt " (attempt.number) " waited " (duration(Some(millis(start - waited_from)))) }
                    }
                }
                rect class=(class) x=(format!("{:.2}", x(start))) y=(y) width=(format!("{:.2}", (x(finish) - x(start)).max(0.3))) height=(row - 2.0) fill=(color) {
                    title { "attempt " (attempt.number) " on " (attempt.worker) ": " (outcome) " after " (duration(Some(millis(finish - start)))) }
                }
            }
        }
        p.axis { span { (utc(job.created_at)) } span { "waited · ran · failed" } span { (utc(end)) } }
    }
}

/// The job's life as its record tells it: enqueued, each attempt's start and end, how it ended.
fn history(job: &Job) -> Vec<(Timestamp, String)> {
    let mut lines = vec![(
        job.created_at,
        if job.run_at > job.created_at {
            format!(
                "enqueued, scheduled for {}",
                job.run_at.format("%Y-%m-%d %H:%M:%S UTC")
            )
        } else {
            "enqueued".to_owned()
        },
    )];
    for attempt in &job.attempts {
        lines.push((
            attempt.started_at,
            format!("attempt {} started on {}", attempt.number, attempt.worker),
        ));
        if let Some(finished) = attempt.finished_at {
            let outcome = match &attempt.error {
                Some(error) => format!("attempt {} failed: {}", attempt.number, error.message),
                None => format!("attempt {} succeeded", attempt.number),
            };
            lines.push((finished, outcome));
        }
    }
    if let Some(finished) = job.finished_at
        && job.state != JobState::Succeeded
    {
        lines.push((finished, format!("ended {}", job.state)));
    }
    lines.sort_by_key(|(at, _)| *at);
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{Attempt, JobError, NewJob, Payload};

    #[test]
    fn the_timeline_draws_each_attempt_after_its_wait() {
        let t = |secs: i64| chrono::DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap();
        let mut job = Job::from_new(NewJob::new("q", "k", Payload::null()), t(0));
        job.attempts = vec![
            Attempt {
                number: 1,
                worker: "w".into(),
                started_at: t(10),
                finished_at: Some(t(20)),
                error: Some(JobError::new("boom")),
            },
            Attempt {
                number: 2,
                worker: "w".into(),
                started_at: t(60),
                finished_at: Some(t(100)),
                error: None,
            },
        ];
        job.finished_at = Some(t(100));
        let svg = waterfall(&job, t(500)).into_string();
        // Over 100 s: the first waited 0–10 and failed 10–20, the second waited 20–60 and ran
        // 60–100.
        assert!(
            svg.contains(r#"class="waited" x="0.00" y="1" width="10.00""#),
            "{svg}"
        );
        assert!(
            svg.contains(r#"class="failed" x="10.00" y="1" width="10.00""#),
            "{svg}"
        );
        assert!(
            svg.contains(r#"class="waited" x="20.00" y="9" width="40.00""#),
            "{svg}"
        );
        assert!(
            svg.contains(r#"class="ran" x="60.00" y="9" width="40.00""#),
            "{svg}"
        );
        assert!(
            svg.contains("attempt 1 on w: failed: boom after 10.0 s"),
            "{svg}"
        );
    }
}
