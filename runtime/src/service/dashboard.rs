//! The web dashboard at `/dashboard`: queues, jobs and dead letters in a browser, rendered on
//! the server (maud) with charts drawn as SVG, so it reads without JavaScript and needs no Node
//! toolchain. The overview refreshes itself every few seconds.
//!
//! Actions (cancel, retry, pause, resume, purge) are HTML forms posting to the dashboard, which
//! calls the store under the same scopes as the job API. Every form carries a token that must
//! match a `SameSite=Strict` cookie (double submit), so another site cannot post them. When the
//! service authenticates, `/dashboard/login` takes an API key and keeps it in an `HttpOnly`,
//! `SameSite=Strict` cookie that only the dashboard reads.

use std::collections::BTreeMap;

use axum::extract::{Path, Request, State as Extract};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::error::Query;
use super::{ApiError, Caller, Scope, State};
use crate::job::{Job, JobId, JobState, Timestamp, now};
use crate::store::{JobFilter, StateCounts};

const KEY_COOKIE: &str = "raindrop_key";
const CSRF_COOKIE: &str = "raindrop_csrf";
/// Finished jobs the overview's charts and latencies are drawn from, per queue.
const SAMPLE: usize = 1000;
/// Rows per page of a listing.
const PAGE: usize = 50;

/// The dashboard's routes, under `/dashboard`.
pub(crate) fn routes(state: State) -> Router<State> {
    Router::new()
        .route("/dashboard", get(overview))
        .route("/dashboard/jobs", get(jobs))
        .route("/dashboard/jobs/{id}", get(job))
        .route("/dashboard/jobs/{id}/cancel", post(cancel))
        .route("/dashboard/jobs/{id}/retry", post(retry))
        .route("/dashboard/dead-letters", get(dead_letters))
        .route("/dashboard/workers", get(workers))
        .route("/dashboard/schedules", get(schedules))
        .route("/dashboard/alerts", get(alerts))
        .route("/dashboard/dead-letters/purge", post(purge))
        .route("/dashboard/dead-letters/retry-all", post(retry_all))
        .route("/dashboard/queues/{name}/pause", post(pause))
        .route("/dashboard/queues/{name}/resume", post(resume))
        .route_layer(axum::middleware::from_fn_with_state(state, guard))
        .route("/dashboard/login", get(login_form).post(login))
        .route("/dashboard/logout", post(logout))
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Authenticates from the dashboard's key cookie (a login page instead of a 401), checks the
/// form token of every POST and makes sure the browser has a token for the forms it renders.
async fn guard(Extract(state): Extract<State>, mut request: Request, next: Next) -> Response {
    let key = cookie(request.headers(), KEY_COOKIE).map(str::to_owned);
    let (caller, _) = match super::auth::admit(&state, key.as_deref(), "log in").await {
        Ok(admitted) => admitted,
        Err(refusal) if refusal.status() == StatusCode::UNAUTHORIZED => {
            return Redirect::to("/dashboard/login").into_response();
        }
        Err(refusal) => return refusal,
    };
    let token = cookie(request.headers(), CSRF_COOKIE).map(str::to_owned);
    let (token, fresh) = match token {
        Some(token) if token.len() == 32 => (token, false),
        _ => (format!("{:032x}", fastrand::u128(..)), true),
    };
    request.extensions_mut().insert(caller);
    request.extensions_mut().insert(Csrf(token.clone()));
    let mut response = as_page(next.run(request).await).await;
    if fresh
        && let Ok(value) = HeaderValue::from_str(&format!(
            "{CSRF_COOKIE}={token}; Path=/dashboard; HttpOnly; SameSite=Strict"
        ))
    {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// An error (JSON, as the API answers) as a page people can read, with the same status.
async fn as_page(response: Response) -> Response {
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !json || !(response.status().is_client_error() || response.status().is_server_error()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let error: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let message = error["message"].as_str().unwrap_or("something went wrong");
    let code = error["code"].as_str().unwrap_or("error");
    let body = page(
        parts.status.canonical_reason().unwrap_or("Error"),
        None,
        html! {
            p { (message) }
            p.muted { "code: " code { (code) } }
            p { a href="/dashboard" { "Back to the overview" } }
        },
    );
    (parts.status, body).into_response()
}

/// The token the forms of this page carry.
#[derive(Debug, Clone)]
struct Csrf(String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Csrf {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiError> {
        parts.extensions.get::<Csrf>().cloned().ok_or_else(|| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "no form token",
            )
        })
    }
}

/// A form's fields: its token, and a confirmation where one is asked for.
#[derive(Debug, Deserialize)]
struct ActionForm {
    csrf: String,
    #[serde(default)]
    confirm: Option<String>,
}

/// Refuses a form whose token is not the one in the browser's cookie.
fn check(form: &ActionForm, csrf: &Csrf) -> Result<(), ApiError> {
    let same = form.csrf.len() == csrf.0.len()
        && bool::from(form.csrf.as_bytes().ct_eq(csrf.0.as_bytes()));
    if same {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf",
            "the form's token does not match this browser's: reload the page and try again",
        ))
    }
}

fn page(title: &str, refresh: Option<u32>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(seconds) = refresh {
                    meta http-equiv="refresh" content=(seconds);
                }
                title { (title) " · Raindrop" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    nav {
                        a href="/dashboard" { "Overview" }
                        a href="/dashboard/jobs" { "Jobs" }
                        a href="/dashboard/dead-letters" { "Dead letters" }
                        a href="/dashboard/workers" { "Workers" }
                        a href="/dashboard/schedules" { "Schedules" }
                        a href="/dashboard/alerts" { "Alerts" }
                    }
                }
                main { h1 { (title) } (body) }
                // Times are rendered in UTC; this shows each also in the viewer's zone.
                script { (PreEscaped(LOCAL_TIMES)) }
            }
        }
    }
}

/// Adds the viewer's local time after every `<time class="local">`.
const LOCAL_TIMES: &str = "for(const t of document.querySelectorAll('time.local')){\
const d=new Date(t.getAttribute('datetime'));if(!isNaN(d)){const s=document.createElement('span');\
s.className='muted';s.textContent=' ('+d.toLocaleString()+' local)';t.after(s);}}";

fn utc(at: Timestamp) -> Markup {
    html! {
        time.local datetime=(at.to_rfc3339()) { (at.format("%Y-%m-%d %H:%M:%S UTC")) }
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#1b1f24;background:#f6f8fa}\
header{background:#1b1f24;padding:.6rem 1rem}nav a{color:#fff;margin-right:1.2rem;text-decoration:none}\
nav a:focus,button:focus,a:focus{outline:3px solid #0969da}main{padding:1rem;max-width:72rem}\
table{border-collapse:collapse;width:100%;background:#fff}th,td{text-align:left;padding:.35rem .5rem;\
border-bottom:1px solid #d0d7de;font-variant-numeric:tabular-nums}.cards{display:flex;flex-wrap:wrap;gap:1rem}\
.card{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:.8rem;flex:1 1 22rem}\
form{display:inline}button{cursor:pointer}pre{background:#fff;border:1px solid #d0d7de;padding:.6rem;\
overflow:auto}.muted{color:#57606a}.state{font-weight:600}\
.axis{display:flex;justify-content:space-between;color:#57606a;font-size:.8rem;margin:0}";

fn state_color(state: JobState) -> &'static str {
    match state {
        JobState::Queued => "#0969da",
        JobState::Scheduled => "#8250df",
        JobState::Running => "#bf8700",
        JobState::Succeeded => "#1a7f37",
        JobState::Retrying => "#d1242f",
        JobState::Dead => "#6e7781",
        JobState::Cancelled => "#afb8c1",
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

fn millis(d: chrono::Duration) -> f64 {
    d.num_microseconds().unwrap_or(0) as f64 / 1000.0
}

fn percentile(values: &mut [f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(values[((values.len() as f64 * p) as usize).min(values.len() - 1)])
}

fn duration(ms: Option<f64>) -> String {
    match ms {
        None => "–".into(),
        Some(ms) if ms < 1000.0 => format!("{ms:.0} ms"),
        Some(ms) => format!("{:.1} s", ms / 1000.0),
    }
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

fn action(path: &str, label: &str, csrf: &Csrf) -> Markup {
    html! {
        form method="post" action=(path) {
            input type="hidden" name="csrf" value=(csrf.0);
            button type="submit" { (label) }
        }
    }
}

async fn overview(
    Extract(state): Extract<State>,
    caller: Caller,
    csrf: Csrf,
) -> Result<Markup, ApiError> {
    caller.require(Scope::Read)?;
    let store = state.engine.store();
    let at = now();
    let counts = store.counts().await?;
    let paused = store.paused().await?;
    let mut cards = Vec::new();
    for name in &state.queues {
        let finished = JobFilter {
            queue: Some(name.clone()),
            states: vec![JobState::Succeeded, JobState::Dead],
            kind: None,
            tenant: caller.tenant_filter(),
        };
        let sample = store.list(&finished, None, SAMPLE).await?.items;
        let oldest = store.oldest_ready(name, at).await?;
        cards.push((
            name.clone(),
            counts.get(name).cloned().unwrap_or_default(),
            paused.contains(name),
            oldest.map(|t| millis(at - t)),
            recent(&sample, at),
        ));
    }
    let admin = caller.has(Scope::Admin);
    Ok(page(
        "Queues",
        Some(5),
        html! {
            p.muted { "Refreshes every 5 seconds. Charts and latencies: the latest "
                (SAMPLE) " finished jobs of each queue." }
            div.cards {
                @for (name, counts, is_paused, oldest, recent) in &cards {
                    section.card aria-label=(format!("queue {name}")) {
                        h2 {
                            a href=(format!("/dashboard/jobs?queue={name}")) { (name) }
                            @if *is_paused { " " span.muted { "(paused)" } }
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
                            tr { td { "oldest waiting" } td colspan="2" { (duration(*oldest)) } }
                        }
                        @if admin {
                            p {
                                @if *is_paused {
                                    (action(&format!("/dashboard/queues/{name}/resume"), "Resume", &csrf))
                                } @else {
                                    (action(&format!("/dashboard/queues/{name}/pause"), "Pause", &csrf))
                                }
                            }
                        }
                    }
                }
            }
        },
    ))
}

/// Which jobs to list.
#[derive(Debug, Deserialize)]
struct JobsQuery {
    queue: Option<String>,
    state: Option<String>,
    kind: Option<String>,
    /// A job id to go to.
    id: Option<String>,
    cursor: Option<String>,
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

async fn jobs(
    Extract(state): Extract<State>,
    caller: Caller,
    Query(query): Query<JobsQuery>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Read)?;
    if let Some(id) = query.id.as_deref().map(str::trim).filter(|i| !i.is_empty()) {
        let id = super::jobs::parse_id(id)?;
        return Ok(Redirect::to(&format!("/dashboard/jobs/{id}")).into_response());
    }
    let states = match query.state.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => vec![s.parse::<JobState>().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("`{s}` is not a job state"),
            )
        })?],
        None => Vec::new(),
    };
    let filter = JobFilter {
        queue: query.queue.clone().filter(|q| !q.is_empty()),
        states,
        kind: query.kind.clone().filter(|k| !k.is_empty()),
        tenant: caller.tenant_filter(),
    };
    let after = query
        .cursor
        .as_deref()
        .map(super::jobs::parse_id)
        .transpose()?;
    let listing = state.engine.store().list(&filter, after, PAGE).await?;
    let mut next = BTreeMap::new();
    for (key, value) in [
        ("queue", &filter.queue),
        ("state", &query.state),
        ("kind", &filter.kind),
    ] {
        if let Some(value) = value.as_ref().filter(|v| !v.is_empty()) {
            next.insert(key, value.clone());
        }
    }
    let next_url = listing.next.map(|cursor| {
        let mut params: Vec<String> = next.iter().map(|(k, v)| format!("{k}={v}")).collect();
        params.push(format!("cursor={cursor}"));
        format!("/dashboard/jobs?{}", params.join("&"))
    });
    Ok(page(
        "Jobs",
        None,
        html! {
            form method="get" action="/dashboard/jobs" {
                label { "queue " select name="queue" {
                    option value="" { "any" }
                    @for q in &state.queues {
                        option value=(q) selected[filter.queue.as_deref() == Some(q.as_str())] { (q) }
                    }
                } }
                " "
                label { "state " select name="state" {
                    option value="" { "any" }
                    @for s in JobState::ALL {
                        option value=(s) selected[query.state.as_deref() == Some(s.as_str())] { (s) }
                    }
                } }
                " "
                label { "kind " input type="text" name="kind" value=[filter.kind.as_deref()]; }
                " "
                button type="submit" { "Filter" }
            }
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

async fn job(
    Extract(state): Extract<State>,
    caller: Caller,
    csrf: Csrf,
    Path(id): Path<String>,
) -> Result<Markup, ApiError> {
    caller.require(Scope::Read)?;
    let id = super::jobs::parse_id(&id)?;
    let job = visible(&state, &caller, id).await?;
    let payload = serde_json::from_str::<serde_json::Value>(job.payload.as_str())
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| job.payload.as_str().to_owned());
    let result = job.result.as_ref().map(|r| {
        serde_json::from_str::<serde_json::Value>(r.as_str())
            .and_then(|v| serde_json::to_string_pretty(&v))
            .unwrap_or_else(|_| r.as_str().to_owned())
    });
    let may_submit = caller.has(Scope::Submit);
    Ok(page(
        &format!("Job {id}"),
        None,
        html! {
            table {
                tr { th { "queue" } td { (job.queue) } }
                tr { th { "kind" } td { (job.kind) } }
                tr { th { "state" } td.state style=(format!("color:{}", state_color(job.state))) { (job.state) } }
                @if let Some(tenant) = &job.tenant { tr { th { "tenant" } td { (tenant) } } }
                tr { th { "priority" } td { (job.priority) } }
                tr { th { "attempt" } td { (job.attempt) " of " (job.max_attempts) } }
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
            @if may_submit {
                p {
                    @if !job.state.is_finished() {
                        (action(&format!("/dashboard/jobs/{id}/cancel"), "Cancel", &csrf))
                    }
                    @if job.state == JobState::Dead {
                        (action(&format!("/dashboard/jobs/{id}/retry"), "Retry now", &csrf))
                    }
                }
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
            pre { code { (payload) } }
            @if !job.headers.is_empty() {
                h2 { "Headers" }
                table { @for (k, v) in &job.headers { tr { th { (k) } td { (v) } } } }
            }
            @if let Some(result) = result {
                h2 { "Result" }
                pre { code { (result) } }
            }
        },
    ))
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

/// The job, if the caller may see it (another tenant's job is not found).
async fn visible(state: &State, caller: &Caller, id: JobId) -> Result<Job, ApiError> {
    state
        .engine
        .store()
        .get(id)
        .await?
        .filter(|job| caller.sees(job.tenant.as_deref()))
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))
}

/// What a button on a job's page does.
#[derive(Debug, Clone, Copy)]
enum JobAction {
    Cancel,
    Retry,
}

/// Checks the form and the caller's right to the job, does `what`, and shows the job again.
async fn on_job(
    state: &State,
    caller: &Caller,
    csrf: &Csrf,
    form: &ActionForm,
    id: &str,
    what: JobAction,
) -> Result<Response, ApiError> {
    check(form, csrf)?;
    caller.require(Scope::Submit)?;
    let id = super::jobs::parse_id(id)?;
    visible(state, caller, id).await?;
    let store = state.engine.store();
    match what {
        // A job that finished meanwhile stays as it ended; its page shows how.
        JobAction::Cancel => drop(store.cancel(id, now()).await?),
        JobAction::Retry => store.retry_dead(id, now()).await?,
    }
    Ok(Redirect::to(&format!("/dashboard/jobs/{id}")).into_response())
}

async fn cancel(
    Extract(state): Extract<State>,
    caller: Caller,
    csrf: Csrf,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Result<Response, ApiError> {
    on_job(&state, &caller, &csrf, &form, &id, JobAction::Cancel).await
}

async fn retry(
    Extract(state): Extract<State>,
    caller: Caller,
    csrf: Csrf,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Result<Response, ApiError> {
    on_job(&state, &caller, &csrf, &form, &id, JobAction::Retry).await
}

async fn dead_letters(
    Extract(state): Extract<State>,
    caller: Caller,
    csrf: Csrf,
    Query(query): Query<JobsQuery>,
) -> Result<Markup, ApiError> {
    caller.require(Scope::Read)?;
    let filter = JobFilter {
        queue: query.queue.clone().filter(|q| !q.is_empty()),
        states: vec![JobState::Dead],
        kind: None,
        tenant: caller.tenant_filter(),
    };
    let after = query
        .cursor
        .as_deref()
        .map(super::jobs::parse_id)
        .transpose()?;
    let listing = state.engine.store().list(&filter, after, PAGE).await?;
    let may_submit = caller.has(Scope::Submit);
    let admin = caller.has(Scope::Admin);
    Ok(page(
        "Dead letters",
        None,
        html! {
            table {
                tr { th { "id" } th { "queue" } th { "kind" } th { "last error" } th { "finished" } th { "" } }
                @for job in &listing.items {
                    tr {
                        td { a href=(format!("/dashboard/jobs/{}", job.id)) { code { (job.id) } } }
                        td { (job.queue) }
                        td { (job.kind) }
                        td { @if let Some(e) = &job.error { (e.message) } }
                        td { @if let Some(t) = job.finished_at { (t.format("%Y-%m-%d %H:%M:%S UTC")) } }
                        td { @if may_submit { (action(&format!("/dashboard/jobs/{}/retry", job.id), "Retry", &csrf)) } }
                    }
                }
            }
            @if listing.items.is_empty() { p.muted { "No dead letters." } }
            @if let Some(cursor) = listing.next {
                p { a href=(format!("/dashboard/dead-letters?cursor={cursor}")) { "Next page →" } }
            }
            @if may_submit && !listing.items.is_empty() {
                p { (action("/dashboard/dead-letters/retry-all", "Retry all", &csrf)) }
            }
            @if admin && !listing.items.is_empty() {
                h2 { "Purge" }
                form method="post" action="/dashboard/dead-letters/purge" {
                    input type="hidden" name="csrf" value=(csrf.0);
                    label { input type="checkbox" name="confirm" value="yes"; " remove every dead letter for good" }
                    " "
                    button type="submit" { "Purge" }
                }
            }
        },
    ))
}

/// Dead letters retried in one click, at most.
const RETRY_ALL: usize = 10_000;

async fn retry_all(
    Extract(state): Extract<State>,
    caller: Caller,
    csrf: Csrf,
    Form(form): Form<ActionForm>,
) -> Result<Response, ApiError> {
    check(&form, &csrf)?;
    caller.require(Scope::Submit)?;
    let store = state.engine.store();
    let filter = JobFilter {
        queue: None,
        states: vec![JobState::Dead],
        kind: None,
        tenant: caller.tenant_filter(),
    };
    let mut retried = 0;
    while retried < RETRY_ALL {
        // Retried jobs leave the listing, so each page starts over.
        let page = store.list(&filter, None, 500).await?;
        if page.items.is_empty() {
            break;
        }
        let at = now();
        for job in page.items {
            store.retry_dead(job.id, at).await?;
            retried += 1;
        }
    }
    Ok(Redirect::to("/dashboard/dead-letters").into_response())
}

async fn purge(
    Extract(state): Extract<State>,
    caller: Caller,
    csrf: Csrf,
    Form(form): Form<ActionForm>,
) -> Result<Response, ApiError> {
    check(&form, &csrf)?;
    caller.require(Scope::Admin)?;
    if form.confirm.as_deref() != Some("yes") {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "not_confirmed",
            "tick the box to confirm the purge",
        ));
    }
    state.engine.store().purge_dead(None).await?;
    Ok(Redirect::to("/dashboard/dead-letters").into_response())
}

async fn set_paused(
    state: &State,
    caller: &Caller,
    csrf: &Csrf,
    form: &ActionForm,
    name: &str,
    paused: bool,
) -> Result<Response, ApiError> {
    check(form, csrf)?;
    caller.require(Scope::Admin)?;
    if !state.queues.iter().any(|q| q == name) {
        return Err(ApiError::not_found(format!("no queue named `{name}`")));
    }
    let store = state.engine.store();
    if paused {
        store.pause(name).await?;
    } else {
        store.resume(name).await?;
    }
    Ok(Redirect::to("/dashboard").into_response())
}

async fn pause(
    Extract(state): Extract<State>,
    caller: Caller,
    csrf: Csrf,
    Path(name): Path<String>,
    Form(form): Form<ActionForm>,
) -> Result<Response, ApiError> {
    set_paused(&state, &caller, &csrf, &form, &name, true).await
}

async fn resume(
    Extract(state): Extract<State>,
    caller: Caller,
    csrf: Csrf,
    Path(name): Path<String>,
    Form(form): Form<ActionForm>,
) -> Result<Response, ApiError> {
    set_paused(&state, &caller, &csrf, &form, &name, false).await
}

async fn login_form() -> Markup {
    page(
        "Log in",
        None,
        html! {
            form method="post" action="/dashboard/login" {
                label { "API key " input type="password" name="key" autocomplete="current-password" required; }
                " "
                button type="submit" { "Log in" }
            }
            p.muted { "The key is kept in a cookie only this dashboard reads." }
        },
    )
}

#[derive(Deserialize)]
struct LoginForm {
    key: String,
}

async fn login(Extract(state): Extract<State>, Form(form): Form<LoginForm>) -> Response {
    let key = form.key.trim();
    let valid = state
        .guard
        .keys
        .as_ref()
        .is_none_or(|keys| keys.find_tenant(key).is_some());
    if !valid || key.contains([';', ',', ' ']) {
        let body = page(
            "Log in",
            None,
            html! { p { "That key is not valid." } p { a href="/dashboard/login" { "Try again" } } },
        );
        return (StatusCode::UNAUTHORIZED, body).into_response();
    }
    let mut response = Redirect::to("/dashboard").into_response();
    if let Ok(cookie) = HeaderValue::from_str(&format!(
        "{KEY_COOKIE}={key}; Path=/dashboard; HttpOnly; SameSite=Strict"
    )) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

async fn logout() -> Response {
    let mut response = Redirect::to("/dashboard/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "raindrop_key=; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    response
}

async fn workers(Extract(state): Extract<State>, caller: Caller) -> Result<Markup, ApiError> {
    caller.require(Scope::Read)?;
    let at = now();
    let mut pools = crate::registry::workers(state.engine.store(), at).await?;
    pools.sort_by(|a, b| (&a.queue, &a.worker).cmp(&(&b.queue, &b.worker)));
    let mut processes = crate::registry::processes(state.engine.store(), at).await?;
    processes.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(page(
        "Workers",
        Some(5),
        html! {
            p.muted { "Processes and worker pools that announced themselves in the last few seconds, from every process sharing the store." }
            h2 { "Processes" }
            table {
                tr { th { "process" } th { "roles" } th { "up since" } th { "last heartbeat" } }
                @for process in &processes {
                    tr {
                        td { code { (process.id) } }
                        td { (process.roles.join(", ")) }
                        td { (utc(process.started_at)) }
                        td { (duration(Some(millis(at - process.seen_at)))) " ago" }
                    }
                }
            }
            @if processes.is_empty() { p.muted { "No process runs workers, schedulers or monitors." } }
            h2 { "Worker pools" }
            table {
                tr { th { "worker" } th { "task" } th { "queue" } th { "running" } th { "up since" } th { "last heartbeat" } }
                @for pool in &pools {
                    tr {
                        td { code { (pool.worker) } }
                        td { (pool.task) }
                        td { (pool.queue) }
                        td {
                            meter min="0" max=(pool.concurrency) value=(pool.busy) { (pool.busy) }
                            " " (pool.busy) " / " (pool.concurrency)
                        }
                        td { (utc(pool.started_at)) }
                        td { (duration(Some(millis(at - pool.seen_at)))) " ago" }
                    }
                }
            }
            @if pools.is_empty() { p.muted { "No worker is running." } }
        },
    ))
}

async fn schedules(Extract(state): Extract<State>, caller: Caller) -> Result<Markup, ApiError> {
    caller.require(Scope::Read)?;
    let at = now();
    let store = state.engine.store();
    let mut rows = Vec::new();
    for task in &state.engine.app().tasks {
        let raindrop_codegen::model::TaskRole::Cron { schedule, .. } = &task.role else {
            continue;
        };
        let parsed = crate::cron::Schedule::parse(schedule.as_str())?;
        let mut next = Vec::new();
        let mut from = at;
        while next.len() < 3 {
            let Some(tick) = parsed.next_after(from) else {
                break;
            };
            next.push(tick);
            from = tick;
        }
        let last = store
            .kv_get(crate::cron::CRON_RUNS_NAMESPACE, task.name.as_str(), at)
            .await?
            .and_then(|e| serde_json::from_slice::<crate::cron::CronRun>(&e.value).ok());
        rows.push((
            task.name.to_string(),
            schedule.as_str().to_owned(),
            next,
            last,
        ));
    }
    Ok(page(
        "Schedules",
        None,
        html! {
            table {
                tr { th { "task" } th { "schedule" } th { "next runs" } th { "last run" } }
                @for (name, cron, next, last) in &rows {
                    tr {
                        td { (name) }
                        td { code { (cron) } }
                        td { @for tick in next { (utc(*tick)) br; } }
                        td {
                            @if let Some(run) = last {
                                (utc(run.scheduled_time)) ": " strong { (run.outcome) }
                                " after " (run.attempts) " attempt(s)"
                                @if let Some(e) = &run.error { br; span.muted { (e.message) } }
                            } @else { span.muted { "not run yet" } }
                        }
                    }
                }
            }
            @if rows.is_empty() { p.muted { "The manifest declares no scheduled task." } }
        },
    ))
}

async fn alerts(Extract(state): Extract<State>, caller: Caller) -> Result<Markup, ApiError> {
    caller.require(Scope::Read)?;
    let mut alerts = crate::registry::alerts(state.engine.store(), now()).await?;
    alerts.sort_by(|a, b| (!a.firing, &a.name).cmp(&(!b.firing, &b.name)));
    Ok(page(
        "Alerts",
        Some(10),
        html! {
            table {
                tr { th { "" } th { "alert" } th { "observer" } th { "queue" } th { "value" } th { "threshold" } th { "since" } }
                @for alert in &alerts {
                    tr {
                        td.state style=(if alert.firing { "color:#d1242f" } else { "color:#1a7f37" }) {
                            @if alert.firing { "firing" } @else { "resolved" }
                        }
                        td { (alert.name) }
                        td { (alert.observer) }
                        td { (alert.queue) }
                        td { (format!("{:.2}", alert.value)) }
                        td { (format!("{:.2}", alert.threshold)) }
                        td { (utc(alert.since)) }
                    }
                }
            }
            @if alerts.is_empty() { p.muted { "No alert has fired." } }
        },
    ))
}
