//! What every dashboard page shares: the frame (navigation, style, local times), the small
//! pieces pages are built of, and the page a failure is shown as.

use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::session::{FormToken, action};
use crate::control;
use crate::job::{JobState, Timestamp};
use crate::service::{ApiError, ErrorCode};

const STYLE: &str = include_str!("assets/dashboard.css");
/// Adds the viewer's local time after every `<time class="local">`.
const LOCAL_TIMES: &str = include_str!("assets/local-times.js");

/// A page titled `title` with `body`, reloading itself every `refresh` seconds, with a logout
/// button posting `logout` (the visitor's form token) when the visitor logged in.
pub(super) fn page(
    title: &str,
    refresh: Option<u32>,
    logout: Option<&FormToken>,
    body: Markup,
) -> Markup {
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
                    @if let Some(token) = logout {
                        (action("/dashboard/logout", "Log out", token))
                    }
                }
                main { h1 { (title) } (body) }
                // Times are rendered in UTC; this shows each also in the viewer's zone.
                script { (PreEscaped(LOCAL_TIMES)) }
            }
        }
    }
}

/// A failure, shown as a page people can read with the status and code the job API would
/// answer with.
#[derive(Debug)]
pub(super) struct PageError(ApiError);

impl PageError {
    pub(super) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self(ApiError::new(code, message))
    }
}

impl From<ApiError> for PageError {
    fn from(err: ApiError) -> Self {
        Self(err)
    }
}

impl From<control::Error> for PageError {
    fn from(err: control::Error) -> Self {
        Self(err.into())
    }
}

impl From<crate::Error> for PageError {
    fn from(err: crate::Error) -> Self {
        Self(err.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let body = page(
            status.canonical_reason().unwrap_or("Error"),
            None,
            None,
            html! {
                p { (self.0.message()) }
                p.muted { "code: " code { (self.0.code()) } }
                p { a href="/dashboard" { "Back to the overview" } }
            },
        );
        (status, body).into_response()
    }
}

/// `Result` of a page.
pub(super) type Result<T, E = PageError> = std::result::Result<T, E>;

/// A time in UTC, which the page's script follows with the viewer's local time.
pub(super) fn utc(at: Timestamp) -> Markup {
    html! {
        time.local datetime=(at.to_rfc3339()) { (at.format("%Y-%m-%d %H:%M:%S UTC")) }
    }
}

pub(super) fn state_color(state: JobState) -> &'static str {
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

pub(super) fn millis(d: chrono::Duration) -> f64 {
    d.num_microseconds().unwrap_or(0) as f64 / 1000.0
}

/// Milliseconds for people: `12 ms`, `3.4 s`, `–` for none.
pub(super) fn duration(ms: Option<f64>) -> String {
    match ms {
        None => "–".into(),
        Some(ms) if ms < 1000.0 => format!("{ms:.0} ms"),
        Some(ms) => format!("{:.1} s", ms / 1000.0),
    }
}
