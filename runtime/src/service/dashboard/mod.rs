//! The web dashboard at `/dashboard`: queues, jobs and dead letters in a browser, rendered on
//! the server (maud) with charts drawn as SVG, so it reads without JavaScript and needs no Node
//! toolchain. The overview refreshes itself every few seconds.
//!
//! Actions (cancel, retry, pause, resume, purge) are HTML forms posting to the dashboard, which
//! calls the same operations as the job API ([`crate::control`]) under the same scopes. Every
//! form carries a token bound to the browser's session (an HMAC of its id under a per-process
//! secret), so another site cannot post them. When the service authenticates,
//! `/dashboard/login` takes an API key and opens a session on the server; the browser's
//! cookie holds only the session's random id, never the key.
//!
//! Here: the routes and the guard in front of them. [`session`] holds the sessions, cookies,
//! login, logout and form tokens; [`layout`] the frame every page shares and error pages; the
//! other modules one page (or the actions) each.

use axum::Router;
use axum::extract::{FromRequestParts, Request, State as Extract};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;

use super::{Caller, ErrorCode, State};
use layout::PageError;
pub use session::SessionLifetime;
pub(crate) use session::Sessions;
use session::{FormToken, SessionId};

mod actions;
mod dead_letters;
mod jobs;
mod layout;
mod overview;
mod session;
mod system;

/// Rows per page of a listing.
const PAGE: usize = 50;

/// The dashboard's routes, under `/dashboard`.
pub(crate) fn routes(state: State) -> Router<State> {
    Router::new()
        .route("/dashboard", get(overview::overview))
        .route("/dashboard/jobs", get(jobs::jobs))
        .route("/dashboard/jobs/{id}", get(jobs::job))
        .route("/dashboard/jobs/{id}/cancel", post(actions::cancel))
        .route("/dashboard/jobs/{id}/retry", post(actions::retry))
        .route("/dashboard/dead-letters", get(dead_letters::dead_letters))
        .route("/dashboard/workers", get(system::workers))
        .route("/dashboard/schedules", get(system::schedules))
        .route("/dashboard/alerts", get(system::alerts))
        .route("/dashboard/dead-letters/purge", post(actions::purge))
        .route(
            "/dashboard/dead-letters/retry-all",
            post(actions::retry_all),
        )
        .route("/dashboard/queues/{name}/pause", post(actions::pause))
        .route("/dashboard/queues/{name}/resume", post(actions::resume))
        .route("/dashboard/logout", post(session::logout))
        .route_layer(axum::middleware::from_fn_with_state(state, guard))
        .route(
            "/dashboard/login",
            get(session::login_form).post(session::login),
        )
}

/// Who looks at a page: the caller its session names, and the token its forms carry.
#[derive(Debug, Clone)]
struct Visitor {
    caller: Caller,
    token: FormToken,
    /// The session it logged in with; `None` when the service does not authenticate.
    session: Option<SessionId>,
}

impl Visitor {
    /// The token of the page's logout button, for a visitor who logged in.
    fn logout(&self) -> Option<FormToken> {
        self.session.is_some().then(|| self.token.clone())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Visitor {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, PageError> {
        parts.extensions.get::<Visitor>().cloned().ok_or_else(|| {
            PageError::new(
                ErrorCode::Internal,
                "the page is not behind the dashboard's guard",
            )
        })
    }
}

/// Finds the browser's session (the login page when it has none), applies the key's rate
/// limit, and hands the page the session's form token (each action checks it).
async fn guard(Extract(state): Extract<State>, mut request: Request, next: Next) -> Response {
    let (visitor, cookie) = match session::visitor(&state, request.headers()) {
        Ok(Some(found)) => found,
        Ok(None) => return Redirect::to("/dashboard/login").into_response(),
        Err(err) => return err.into_response(),
    };
    if let Err(refusal) = super::auth::limit(&state, &visitor.caller).await {
        return refusal;
    }
    request.extensions_mut().insert(visitor);
    let mut response = next.run(request).await;
    if let Some(cookie) = cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// Query parameters, with a malformed query answered as a page (400 `invalid_query`).
struct Query<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, PageError> {
        let super::error::Query(value) =
            super::error::Query::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}
