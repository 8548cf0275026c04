//! The overview: a card per served queue with its jobs by state, throughput over the last hour
//! and latencies, drawn as SVG from the latest finished jobs.

use axum::extract::State as Extract;
use maud::{Markup, html};

use super::layout::{Result, duration, millis, page, state_color};
use super::session::action;
use super::{FormToken, Visitor};
use crate::control::QueueState;
use crate::job::{Job, JobState, Timestamp, now};
use crate::service::{Scope, State};
use crate::store::{JobFilter, StateCounts};

/// Finished jobs the overview's charts and latencies are drawn from, per queue.
const SAMPLE: usize = 1000;

pub(super) async fn overview(Extract(state): Extract<State>, visitor: Visitor) -> Result<Markup> {
    let logout = visitor.logout();
    let Visitor { caller, token, .. } = visitor;
    caller.require(Scope::Read)?;
    let at = now();
    let view = caller.view();
    let mut cards = Vec::new();
    for queue in state.control.queues(&view, at).await? {
        let finished = JobFilter {
            queues: vec![queue.name.clone()],
            states: vec![JobState::Succeeded, JobState::Dead],
            ..JobFilter::default()
        };
        let sample = state.control.list(&view, finished, None, SAMPLE).await?;
        let recent = recent(&sample.items, at);
        cards.push((queue, recent));
    }
    let admin = caller.has(Scope::Admin);
    Ok(page(
        "Queues",
        Some(5),
        logout.as_ref(),
        html! {
            p.muted { "Refreshes every 5 seconds. Charts and latencies: the latest "
                (SAMPLE) " finished jobs of each queue." }
            div.cards {
                @for (queue, recent) in &cards {
                    (card(queue, recent, at, admin.then_some(&token)))
                }
            }
        },
    ))
}

/// One queue's card; with its pause or resume button when `token` is given (to admins).
fn card(queue: &QueueState, recent: &Recent, at: Timestamp, token: Option<&FormToken>) -> Markup {
    let name = &queue.name;
    let counts = &queue.counts;
    let oldest = queue.oldest_ready.map(|t| millis(at - t));
    html! {
        section.card aria-label=(format!("queue {name}")) {
            h2 {
                a href=(format!("/dashboard/jobs?queue={name}")) { (name) }
                @if queue.paused { " " span.muted { "(paused)" } }
            }
            (state_bar(counts))
            table {
                tr { @for s in JobState::ALL { th { (s) } } }
                tr { @for s in JobState::ALL {
                    td { a href=(format!("/dashboard/jobs?queue={name}&state={s}")) { (counts.get(s)) } }
                } }
            }
            h3 { "Per minute, last hour" }
            (throughput_chart(&recent.succeeded, &recent.dead))
            p.axis { span { "60 min ago" } span { "succeeded ↑ · failed attempts ↓" } span { "now" } }
            table {
                tr { th { "" } th { "p50" } th { "p99" } }
                tr { td { "enqueue → start" } td { (duration(recent.wait.0)) } td { (duration(recent.wait.1)) } }
                tr { td { "start → finish" } td { (duration(recent.run.0)) } td { (duration(recent.run.1)) } }
                tr { td { "oldest waiting" } td colspan="2" { (duration(oldest)) } }
            }
            @if let Some(token) = token {
                p {
                    @if queue.paused {
                        (action(&format!("/dashboard/queues/{name}/resume"), "Resume", token))
                    } @else {
                        (action(&format!("/dashboard/queues/{name}/pause"), "Pause", token))
                    }
                }
            }
        }
    }
}

/// One bar split by state, proportional to the counts.
fn state_bar(counts: &StateCounts) -> Markup {
    let total: u64 = JobState::ALL.iter().map(|s| counts.get(*s)).sum();
    let mut segments = Vec::new();
    let mut x = 0.0;
    for state in JobState::ALL {
        let n = counts.get(state);
        if n > 0 {
            let width = 100.0 * n as f64 / total as f64;
            segments.push((state, n, x, width));
            x += width;
        }
    }
    html! {
        svg width="100%" height="18" viewBox="0 0 100 6" preserveAspectRatio="none" role="img"
            aria-label="jobs by state" {
            @for (state, n, x, width) in segments {
                rect x=(format!("{x:.3}")) y="0" width=(format!("{width:.3}")) height="6"
                    fill=(state_color(state)) { title { (state) ": " (n) } }
            }
        }
    }
}

/// Per minute over the last hour: jobs that succeeded (up) and attempts that failed (down).
fn throughput_chart(succeeded: &[u64; 60], dead: &[u64; 60]) -> Markup {
    let top = succeeded
        .iter()
        .chain(dead.iter())
        .copied()
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    html! {
        svg width="100%" height="90" viewBox="0 0 120 40" preserveAspectRatio="none" role="img"
            aria-label="succeeded jobs and failed attempts per minute, last hour" {
            line x1="0" y1="30" x2="120" y2="30" stroke="#d0d7de" stroke-width="0.3" {}
            @for (minute, (ok, bad)) in succeeded.iter().zip(dead.iter()).enumerate() {
                @let x = minute as f64 * 2.0;
                @if *ok > 0 {
                    @let h = 28.0 * *ok as f64 / top;
                    rect x=(format!("{x:.1}")) y=(format!("{:.2}", 30.0 - h)) width="1.6"
                        height=(format!("{h:.2}")) fill="#1a7f37" {
                        title { (60 - minute) " min ago: " (ok) " succeeded" }
                    }
                }
                @if *bad > 0 {
                    @let h = 9.0 * *bad as f64 / top;
                    rect x=(format!("{x:.1}")) y="30.4" width="1.6" height=(format!("{:.2}", h.max(0.6)))
                        fill="#d1242f" { title { (60 - minute) " min ago: " (bad) " failed attempts" } }
                }
            }
        }
    }
}

fn percentile(values: &mut [f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(values[((values.len() as f64 * p) as usize).min(values.len() - 1)])
}

/// What the overview shows of one queue's recent history.
struct Recent {
    succeeded: [u64; 60],
    /// Failed attempts.
    dead: [u64; 60],
    wait: (Option<f64>, Option<f64>),
    run: (Option<f64>, Option<f64>),
}

fn recent(jobs: &[Job], at: Timestamp) -> Recent {
    let mut succeeded = [0; 60];
    let mut dead = [0; 60];
    let (mut waits, mut runs) = (Vec::new(), Vec::new());
    for job in jobs {
        let Some(finished) = job.finished_at else {
            continue;
        };
        let minute = |t: Timestamp| {
            let ago = (at - t).num_minutes();
            (0..60).contains(&ago).then(|| 59 - ago as usize)
        };
        if job.state == JobState::Succeeded
            && let Some(slot) = minute(finished)
        {
            succeeded[slot] += 1;
        }
        for attempt in job.attempts.iter().filter(|a| a.error.is_some()) {
            if let Some(slot) = attempt.finished_at.and_then(minute) {
                dead[slot] += 1;
            }
        }
        if let Some(started) = job.started_at {
            waits.push(millis(started - job.created_at));
            runs.push(millis(finished - started));
        }
    }
    Recent {
        succeeded,
        dead,
        wait: (percentile(&mut waits, 0.5), percentile(&mut waits, 0.99)),
        run: (percentile(&mut runs, 0.5), percentile(&mut runs, 0.99)),
    }
}
