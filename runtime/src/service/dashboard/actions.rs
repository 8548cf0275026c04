//! What the dashboard's buttons do: each checks the form's token and the caller's scope, calls
//! the operation the job API calls too ([`crate::control`]), and sends the browser back to the
//! page it acted on.

use axum::Form;
use axum::extract::{Path, State as Extract};
use axum::response::{IntoResponse, Redirect, Response};

use super::Visitor;
use super::layout::{PageError, Result};
use super::session::ActionForm;
use crate::control;
use crate::service::jobs::parse_id;
use crate::service::{ErrorCode, Scope, State};

/// Dead letters retried in one click, at most.
const RETRY_ALL: usize = 10_000;

/// What a button on a job's page does.
#[derive(Debug, Clone, Copy)]
enum JobAction {
    Cancel,
    Retry,
}

/// Checks the form and the caller's right to the job, does `what`, and shows the job again.
async fn on_job(
    state: &State,
    visitor: &Visitor,
    form: &ActionForm,
    id: &str,
    what: JobAction,
) -> Result<Response> {
    visitor.token.check(form)?;
    visitor.caller.require(Scope::Submit)?;
    let id = parse_id(id)?;
    let view = visitor.caller.view();
    match what {
        JobAction::Cancel => match state.control.cancel(&view, id).await {
            // A job that finished meanwhile stays as it ended; its page shows how.
            Ok(_) | Err(control::Error::AlreadyFinished { .. }) => {}
            Err(err) => return Err(err.into()),
        },
        JobAction::Retry => state.control.retry_dead(&view, id).await?,
    }
    Ok(Redirect::to(&format!("/dashboard/jobs/{id}")).into_response())
}

pub(super) async fn cancel(
    Extract(state): Extract<State>,
    visitor: Visitor,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Result<Response> {
    on_job(&state, &visitor, &form, &id, JobAction::Cancel).await
}

pub(super) async fn retry(
    Extract(state): Extract<State>,
    visitor: Visitor,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Result<Response> {
    on_job(&state, &visitor, &form, &id, JobAction::Retry).await
}

pub(super) async fn retry_all(
    Extract(state): Extract<State>,
    visitor: Visitor,
    Form(form): Form<ActionForm>,
) -> Result<Response> {
    visitor.token.check(&form)?;
    visitor.caller.require(Scope::Submit)?;
    state
        .control
        .retry_all_dead(&visitor.caller.view(), RETRY_ALL)
        .await?;
    Ok(Redirect::to("/dashboard/dead-letters").into_response())
}

pub(super) async fn purge(
    Extract(state): Extract<State>,
    visitor: Visitor,
    Form(form): Form<ActionForm>,
) -> Result<Response> {
    visitor.token.check(&form)?;
    visitor.caller.require(Scope::Admin)?;
    if form.confirm.as_deref() != Some("yes") {
        return Err(PageError::new(
            ErrorCode::NotConfirmed,
            "tick the box to confirm the purge",
        ));
    }
    state.control.purge_dead(None).await?;
    Ok(Redirect::to("/dashboard/dead-letters").into_response())
}

/// Checks the form and the caller's right, pauses or resumes queue `name`, shows the overview.
async fn set_paused(
    state: &State,
    visitor: &Visitor,
    form: &ActionForm,
    name: &str,
    paused: bool,
) -> Result<Response> {
    visitor.token.check(form)?;
    visitor.caller.require(Scope::Admin)?;
    if paused {
        state.control.pause(name).await?;
    } else {
        state.control.resume(name).await?;
    }
    Ok(Redirect::to("/dashboard").into_response())
}

pub(super) async fn pause(
    Extract(state): Extract<State>,
    visitor: Visitor,
    Path(name): Path<String>,
    Form(form): Form<ActionForm>,
) -> Result<Response> {
    set_paused(&state, &visitor, &form, &name, true).await
}

pub(super) async fn resume(
    Extract(state): Extract<State>,
    visitor: Visitor,
    Path(name): Path<String>,
    Form(form): Form<ActionForm>,
) -> Result<Response> {
    set_paused(&state, &visitor, &form, &name, false).await
}
